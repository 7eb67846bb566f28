"""Shared fixtures. Tests run on CPU; `gpu` tests are skipped without CUDA."""

from __future__ import annotations

import os
import uuid

import pytest
import redis
import torch



def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def embedder():
    """The real packaged MiniLM embedder, loaded once per test session.

    The engine's tests were written against MiniLM's cosines (and its calibrated tables, which
    `make_cache` configures with it); the default multilingual embedder has tests of its own.
    """
    from flexcache.config import EmbedderConfig
    from flexcache.engine.embedder import PACKAGED_MODEL, SentenceTransformerEmbedder

    return SentenceTransformerEmbedder(EmbedderConfig(model=PACKAGED_MODEL, device="cpu"))


@pytest.fixture
def make_cache(embedder):
    """Factory for a FlexCache on CPU sharing the session embedder."""
    from flexcache import CacheConfig, FlexCache

    def make(**overrides):
        # The engine's tests exercise the configured tables on any signature (`planner.uncalibrated`
        # has tests of its own in tests/engine/test_rules_book.py).
        data = {"embedder": {"model": "all-MiniLM-L6-v2", "device": "cpu"}, "index": {"device": "cpu"},
                "planner": {"uncalibrated": "tables"}}
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


@pytest.fixture
def redis_prefix() -> str:
    """A key prefix no other test uses, so tests can share one server."""
    return f"fxt{uuid.uuid4().hex[:16]}"


@pytest.fixture
def redis_url(redis_prefix):
    """URL of the test redis-server; the keys under `redis_prefix` are deleted before and after.

    Skips when TEST_REDIS_URL is unset (plain `pytest`); fails when it
    is set but the server does not answer, since then the set-up is broken.
    """
    url = os.environ.get("TEST_REDIS_URL")
    if not url:
        pytest.skip("TEST_REDIS_URL is not set: run `make test` (it starts a throwaway "
                    "redis-server) or `scripts/redis-test-server.sh run pytest ...`")
    client = redis.Redis.from_url(url, socket_timeout=5)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.fail(f"TEST_REDIS_URL={url} does not answer: {exc}")

    def flush() -> None:
        # Every key of a tier starts with its hash tag "{prefix:cache_name}".
        names = list(client.scan_iter(match=f"{{{redis_prefix}:*", count=1000))
        if names:
            client.delete(*names)

    flush()
    try:
        yield url
    finally:
        flush()
        client.close()
