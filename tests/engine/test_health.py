"""`FlexCache.health()`: degraded, with a reason, while a part the cache relies on keeps failing."""

from __future__ import annotations

import pytest
import torch

from flexcache.core.types import make_key
from flexcache.engine import setting_classifier as sc


@pytest.fixture
def cache(make_cache):
    with make_cache(store={"capacity_bytes": 3000}) as cache:
        yield cache


def test_a_working_cache_is_ok_and_says_so_in_stats(cache):
    health = cache.health()
    assert health["status"] == "ok" and health["reasons"] == [] and health["tiers"] == {"memory": True}
    assert health["follower"] is None  # no shared tier
    assert cache.stats()["health"]["status"] == "ok"


def test_a_failing_eviction_callback_is_counted_and_degrades_health_until_it_works(cache):
    def broken(key, token):
        raise RuntimeError("index is gone")

    working = cache.store.on_evicted
    cache.store.on_evicted = broken
    for index in range(3):  # 1,200 bytes each in 3,000: the third evicts the first
        cache.store.put(make_key("acme", f"{index:08x}"), bytes(1200))
    stats = cache.stats()
    assert stats["store"]["callback_errors"] == 1 and stats["store"]["evictions"] == 1
    health = cache.health()
    assert health["status"] == "degraded" and health["store_callbacks"]["errors"] == 1
    assert any("on_evicted" in reason and "index is gone" in reason for reason in health["reasons"])

    cache.store.on_evicted = working
    cache.store.put(make_key("acme", "0000000a"), bytes(1200))  # evicts the second, and the callback works
    assert cache.health()["status"] == "ok" and cache.stats()["store"]["callback_errors"] == 1


class BrokenEmbedder:
    dim = 3

    def embed(self, texts):
        raise RuntimeError("CUDA error: device lost")


def test_a_failing_setting_classifier_degrades_health(cache):
    weights = {"classes": list(sc.CLASSES), "dim": 3, "weights": [[1.0, 0.0, 0.0]] * 4, "bias": [0.0] * 4}
    broken = sc.SettingClassifier(embedder=BrokenEmbedder(), weights=weights, memory={})
    previous = sc.set_classifier(broken)
    try:
        assert cache.health()["status"] == "ok"  # not failing before it is used
        with pytest.warns(RuntimeWarning, match="device lost"):
            assert broken.verdict("zorp") is None
        health = cache.health()
        assert health["status"] == "degraded" and health["classifier"]["failures"] == 1
        assert any("setting classifier" in reason and "device lost" in reason for reason in health["reasons"])
    finally:
        sc.set_classifier(previous)


def test_a_cache_with_the_classifier_turned_off_is_ok(cache, signature):
    previous = sc.set_classifier(None)
    try:
        plan = cache.plan("a red fox running through snow", signature)
        cache.insert(plan.as_miss(), {step: torch.randn(signature.latent_shape) for step in plan.checkpoint_steps})
        health = cache.health()
        assert health["status"] == "ok" and health["classifier"] is None
    finally:
        sc.set_classifier(previous)
