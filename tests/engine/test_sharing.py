"""Processes that share one Redis see each other's entries (real redis-server, `make test`), and a
follower that cannot reach the stream says so."""

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
from flexcache.core.errors import TierUnavailableError
from flexcache.engine.sharing import EventFollower
from flexcache.store.integrity import ChecksummedTier
from flexcache.store.memory import MemoryTier

PROMPT = "a street musician playing violin under neon lights at night"


def shared_cache(url, prefix, embedder, memory_bytes=1 << 20):
    from flexcache.store.redis import RedisTier

    config = CacheConfig.from_dict({"embedder": {"device": "cpu"}, "index": {"device": "cpu"}})
    tiers = [MemoryTier(memory_bytes),
             ChecksummedTier(RedisTier(url, 64 << 20, prefix=prefix, cache_name="shared", socket_timeout=1.0))]
    return FlexCache(config, embedder=embedder, tiers=tiers)


def wait_for(condition, timeout=30.0):
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


@pytest.mark.redis
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


@pytest.mark.redis
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
        # The breaker is open already; the follower notices at its next poll (every 200 ms).
        assert wait_for(lambda: any("event follower" in reason for reason in cache.health()["reasons"]))
        health = cache.health()
        assert health["status"] == "degraded" and health["tiers"] == {"memory": True, "redis": False}
        assert any("redis tier at redis://127.0.0.1:1/0 is unavailable" in reason for reason in health["reasons"])
        assert cache.stats()["health"]["follower"]["errors"] >= 1


class FakeStream:
    """A shared tier's event stream that can go down (`up`) or fail outright (`broken`)."""

    name, where = "redis", "redis://fake:6379/0"

    def __init__(self) -> None:
        self.up, self.broken, self.published = True, False, []

    @property
    def available(self) -> bool:
        return self.up

    def last_event_id(self) -> str:
        return "0-0"

    def read_events(self, after_id, count=1000, block_ms=None):
        if self.broken:
            raise RuntimeError("protocol error")
        return []

    def publish(self, event) -> str:
        if not self.up:
            raise TierUnavailableError("redis tier redis://fake:6379/0 is unavailable")
        self.published.append(event)
        return "1-0"


def test_a_follower_that_cannot_read_the_stream_counts_it_and_recovers():
    stream = FakeStream()
    follower = EventFollower(lambda *a: None, lambda *a: None, [(1, stream)])
    follower.poll_once()
    assert follower.healthy and follower.stats()["errors"] == 0
    stream.up = False
    follower.poll_once()
    follower.poll_once()
    stats = follower.stats()
    assert not follower.healthy and stats["errors"] == stats["consecutive_errors"] == 2
    assert "redis://fake:6379/0" in stats["last_error"] and stats["last_error_at"] is not None
    stream.up = True
    follower.poll_once()
    assert follower.healthy and follower.stats()["errors"] == 2  # counted for good; healthy again


def test_a_failed_publish_is_counted_and_unhealthy_until_one_works():
    stream = FakeStream()
    follower = EventFollower(lambda *a: None, lambda *a: None, [(1, stream)])
    stream.up = False
    follower.published_insert("acme.0123abcd", 1, b"meta")
    assert not follower.healthy and "could not publish an insert" in follower.stats()["last_error"]
    stream.up = True
    follower.published_evict("acme.0123abcd", 1)
    assert follower.healthy and [e["type"] for e in stream.published] == ["evict"]


def test_the_follower_thread_counts_errors_and_keeps_going():
    stream = FakeStream()
    stream.broken = True
    follower = EventFollower(lambda *a: None, lambda *a: None, [(1, stream), (2, FakeStream())], poll_ms=10)
    follower.start()
    try:
        assert wait_for(lambda: follower.stats()["errors"] >= 2)  # one error, a 1 s pause, the next
        assert not follower.healthy and "RuntimeError: protocol error" in follower.stats()["last_error"]
        stream.broken = False
        assert wait_for(lambda: follower.healthy)
    finally:
        follower.stop()


@pytest.mark.redis
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
        assert wait_for(lambda: here.plan(PROMPT, signature).hit), "the other process's insert never reached here"
        assert here.fetch(here.plan(PROMPT, signature)) is not None
