"""Tests for flexcache.store: the MemoryTier and the Tier defaults."""

from __future__ import annotations

import threading

import pytest

from flexcache.store import MemoryTier, Tier, TierStats


@pytest.fixture
def tier() -> MemoryTier:
    return MemoryTier(capacity_bytes=100)


def test_memory_tier_flags():
    t = MemoryTier(10)
    assert isinstance(t, Tier)
    assert t.name == "memory"
    assert t.persistent is False
    assert t.shared is False
    assert t.device_resident is False
    assert t.capacity_bytes == 10


def test_empty_tier(tier):
    assert tier.bytes_used == 0
    assert list(tier.keys()) == []
    assert tier.get("a") is None
    assert tier.contains("a") is False
    assert tier.remove("a") is False


def test_put_get_contains(tier):
    tier.put("a", b"hello")
    tier.put("b", b"xy")
    assert tier.get("a") == b"hello"
    assert tier.get("b") == b"xy"
    assert tier.contains("a") is True
    assert tier.contains("c") is False
    assert sorted(tier.keys()) == ["a", "b"]
    assert tier.bytes_used == 7


def test_put_accepts_bytes_like_and_stores_immutable_copy(tier):
    source = bytearray(b"abcd")
    tier.put("k", source)
    source[0] = ord("z")
    stored = tier.get("k")
    assert stored == b"abcd"
    assert type(stored) is bytes
    tier.put("m", memoryview(b"12345"))
    assert tier.get("m") == b"12345"
    assert tier.bytes_used == 9


def test_remove(tier):
    tier.put("a", b"12345")
    tier.put("b", b"678")
    assert tier.remove("a") is True
    assert tier.remove("a") is False
    assert tier.get("a") is None
    assert tier.contains("a") is False
    assert list(tier.keys()) == ["b"]
    assert tier.bytes_used == 3
    assert tier.remove("b") is True
    assert tier.bytes_used == 0


@pytest.mark.parametrize(("first", "second"), [(10, 4), (4, 10), (7, 7), (5, 0), (0, 6)])
def test_replacing_a_key_updates_bytes_used(tier, first, second):
    tier.put("other", b"o" * 3)
    tier.put("k", b"a" * first)
    assert tier.bytes_used == 3 + first
    tier.put("k", b"b" * second)
    assert tier.bytes_used == 3 + second
    assert tier.get("k") == b"b" * second
    assert sorted(tier.keys()) == ["k", "other"]
    tier.remove("k")
    assert tier.bytes_used == 3


def test_empty_blob_is_stored_not_missing(tier):
    tier.put("empty", b"")
    assert tier.contains("empty")
    assert tier.get("empty") == b""
    assert tier.remove("empty") is True
    assert tier.stats().removes == 1


def test_keys_is_a_snapshot(tier):
    tier.put("a", b"1")
    tier.put("b", b"2")
    keys = tier.keys()
    tier.remove("a")  # changing the tier while iterating must not break the iterator
    tier.put("c", b"3")
    assert sorted(keys) == ["a", "b"]


def test_stats_counts(tier):
    tier.put("a", b"1234")
    tier.put("b", b"56")
    tier.put("a", b"7")  # replacement counts as a put, not a new entry
    tier.get("a")
    tier.get("missing")
    tier.get("b")
    tier.remove("b")
    tier.remove("b")  # absent: not counted
    stats = tier.stats()
    assert isinstance(stats, TierStats)
    assert stats == TierStats(
        name="memory", entries=1, bytes_used=1, capacity_bytes=100, puts=3, gets=3, get_misses=1, removes=1,
    )


def test_stats_is_a_snapshot(tier):
    tier.put("a", b"1")
    stats = tier.stats()
    stats.puts = 999
    stats.entries = 999
    tier.put("b", b"2")
    fresh = tier.stats()
    assert fresh.puts == 2
    assert fresh.entries == 2
    assert stats.entries == 999  # the earlier snapshot did not move either


def test_fits(tier):
    assert tier.fits(0)
    assert tier.fits(100)
    assert not tier.fits(101)
    tier.put("a", b"x" * 60)
    assert tier.fits(40)
    assert not tier.fits(41)
    tier.put("a", b"x" * 10)
    assert tier.fits(90)
    assert not tier.fits(91)
    tier.remove("a")
    assert tier.fits(100)


def test_tier_does_not_enforce_capacity_itself(tier):
    # eviction belongs to the engine: the tier just reports it is over capacity
    tier.put("big", b"x" * 150)
    assert tier.get("big") == b"x" * 150
    assert tier.bytes_used == 150
    assert not tier.fits(0)


def test_put_many_get_many_remove_many(tier):
    tier.put_many([("a", b"1"), ("b", b"22"), ("c", b"333")])
    assert tier.bytes_used == 6
    assert tier.get_many(["c", "missing", "a"]) == [b"333", None, b"1"]
    assert tier.get_many([]) == []
    assert tier.remove_many(["a", "missing", "c", "a"]) == 2
    assert sorted(tier.keys()) == ["b"]
    assert tier.bytes_used == 2
    stats = tier.stats()
    assert stats.puts == 3
    assert stats.gets == 3
    assert stats.get_misses == 1
    assert stats.removes == 2


def test_put_many_accepts_generators_and_replacements(tier):
    tier.put_many((f"k{i % 2}", b"x" * (i + 1)) for i in range(4))
    assert tier.get_many(iter(["k0", "k1"])) == [b"xxx", b"xxxx"]
    assert tier.bytes_used == 7


def test_batched_defaults_delegate_to_per_key_methods():
    calls = []

    class Recording(MemoryTier):
        def put(self, key, blob):
            calls.append(("put", key))
            super().put(key, blob)

        def get(self, key):
            calls.append(("get", key))
            return super().get(key)

        def remove(self, key):
            calls.append(("remove", key))
            return super().remove(key)

    t = Recording(10)
    t.put_many([("a", b"1"), ("b", b"2")])
    t.get_many(["b", "a"])
    assert t.remove_many(["a"]) == 1
    assert calls == [("put", "a"), ("put", "b"), ("get", "b"), ("get", "a"), ("remove", "a")]


def test_concurrent_puts_keep_bytes_used_exact():
    t = MemoryTier(10**6)

    def worker(offset):
        for i in range(200):
            t.put(f"{offset}-{i % 50}", b"x" * (i % 7 + 1))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    expected = sum(len(t.get(k)) for k in t.keys())
    assert t.bytes_used == expected
    assert t.stats().entries == 200
    assert t.stats().puts == 800
