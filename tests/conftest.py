"""Shared fixtures. Tests run on CPU; `gpu` tests are skipped without CUDA."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
if not torch.cuda.is_available():
    # Triton kernels run through its interpreter on CPU; it is read when a kernel is defined.
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def embedder():
    """The real packaged MiniLM embedder, loaded once per test session."""
    from flexcache.config import EmbedderConfig
    from flexcache.engine.embedder import SentenceTransformerEmbedder

    return SentenceTransformerEmbedder(EmbedderConfig(device="cpu"))


@pytest.fixture
def make_cache(embedder):
    """Factory for a FlexCache on CPU sharing the session embedder."""
    from flexcache import CacheConfig, FlexCache

    def make(**overrides):
        data = {"embedder": {"device": "cpu"}, "index": {"device": "cpu"}}
        for key, value in overrides.items():
            if isinstance(value, dict):
                data.setdefault(key, {}).update(value)
            else:
                data[key] = value
        return FlexCache(CacheConfig.from_dict(data), embedder=embedder)

    return make


@pytest.fixture
def signature():
    from flexcache import GenerationSignature

    return GenerationSignature(
        model_id="test-model", scheduler="FlowMatchEulerDiscreteScheduler:abc", num_steps=20,
        height=64, width=64, num_frames=9, latent_shape=(4, 3, 8, 8),
    )
