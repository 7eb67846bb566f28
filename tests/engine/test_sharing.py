"""Processes that share one Redis see each other's entries (real redis-server, `make test`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from flexcache import CacheConfig, FlexCache
from flexcache.store.integrity import ChecksummedTier
from flexcache.store.memory import MemoryTier

pytestmark = pytest.mark.redis

PROMPT = "a street musician playing violin under neon lights at night"


def shared_cache(url, prefix, embedder, memory_bytes=1 << 20):
    from flexcache.store.redis import RedisTier

    config = CacheConfig.from_dict({"embedder": {"device": "cpu"}, "index": {"device": "cpu"}})
    tiers = [MemoryTier(memory_bytes),
             ChecksummedTier(RedisTier(url, 64 << 20, prefix=prefix, cache_name="shared", socket_timeout=1.0))]
    return FlexCache(config, embedder=embedder, tiers=tiers)


def wait_for(condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def insert(cache, signature, prompt=PROMPT):
    plan = cache.plan(prompt, signature).as_miss()
    latents = {step: torch.randn(signature.latent_shape) for step in plan.checkpoint_steps}
    cache.insert(plan, latents, {step: 0.9 for step in latents})
    cache.store.drain()
    return latents


def test_an_insert_in_one_cache_is_a_hit_in_another(redis_url, redis_prefix, embedder, signature):
    with shared_cache(redis_url, redis_prefix, embedder) as a, shared_cache(redis_url, redis_prefix, embedder) as b:
        latents = insert(a, signature)
        assert wait_for(lambda: b.stats()["entries"] == 5), "b never saw a's inserts"
        plan = b.plan(PROMPT, signature)
        assert plan.hit and plan.skip_steps == 10
        latent = b.fetch(plan)  # read from Redis, then promoted into b's memory tier
        assert float(torch.sqrt(torch.mean((latent - latents[10]) ** 2))) <= 0.02 * 0.9 + 1e-6
        b.store.drain()
        # An eviction (here: clear) in one is seen by the other: b drops its Redis copies;
        # only the entry it promoted into its own memory tier stays.
        a.clear()
        assert wait_for(lambda: b.stats()["entries"] == 1)
        (kept,) = b.entries()
        assert kept.step == 10 and b.store.tiers_of(kept.key) == ["memory"]


def test_a_late_joiner_catches_up_by_scanning(redis_url, redis_prefix, embedder, signature):
    with shared_cache(redis_url, redis_prefix, embedder) as a:
        insert(a, signature)
    with shared_cache(redis_url, redis_prefix, embedder) as late:
        plan = late.plan(PROMPT, signature)
        assert plan.hit and late.fetch(plan) is not None


def test_redis_down_keeps_serving_from_local_tiers(redis_prefix, embedder, signature):
    from flexcache.store.redis import RedisTier

    config = CacheConfig.from_dict({"embedder": {"device": "cpu"}, "index": {"device": "cpu"}})
    dead = RedisTier("redis://127.0.0.1:1/0", 64 << 20, prefix=redis_prefix, cache_name="down",
                     socket_timeout=0.2, breaker_failures=1, breaker_cooldown_s=60)
    with FlexCache(config, embedder=embedder, tiers=[MemoryTier(1 << 20), ChecksummedTier(dead)]) as cache:
        insert(cache, signature)
        plan = cache.plan(PROMPT, signature)
        assert plan.hit and cache.fetch(plan) is not None  # the memory tier serves
        assert cache.stats()["store"]["tier_errors"] >= 1


def test_two_processes_share_one_redis(redis_url, redis_prefix, embedder, signature):
    """A separate Python process inserts; this one sees the hit."""
    script = textwrap.dedent(f"""
        import json, sys, torch
        from flexcache import CacheConfig, FlexCache, GenerationSignature
        from flexcache.store.integrity import ChecksummedTier
        from flexcache.store.memory import MemoryTier
        from flexcache.store.redis import RedisTier
        signature = GenerationSignature.from_dict(json.loads(sys.argv[1]))
        config = CacheConfig.from_dict({{"embedder": {{"device": "cpu"}}, "index": {{"device": "cpu"}}}})
        tiers = [MemoryTier(1 << 20), ChecksummedTier(RedisTier({redis_url!r}, 64 << 20,
                 prefix={redis_prefix!r}, cache_name="shared"))]
        with FlexCache(config, tiers=tiers) as cache:
            plan = cache.plan({PROMPT!r}, signature).as_miss()
            cache.insert(plan, {{s: torch.randn(signature.latent_shape) for s in plan.checkpoint_steps}})
            cache.store.drain()
        print("inserted", flush=True)
    """)
    with shared_cache(redis_url, redis_prefix, embedder) as here:
        assert not here.plan(PROMPT, signature).hit
        result = subprocess.run([sys.executable, "-c", script, json.dumps(signature.to_dict())],
                                capture_output=True, text=True, timeout=180,
                                env={**os.environ, "HF_HUB_OFFLINE": "1"})
        assert result.returncode == 0 and "inserted" in result.stdout, result.stderr[-2000:]
        assert wait_for(lambda: here.plan(PROMPT, signature).hit, timeout=15)
        assert here.fetch(here.plan(PROMPT, signature)) is not None
