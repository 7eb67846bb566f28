"""The tiered store: placement, write-behind, promotion, demotion, eviction, back-pressure."""

from __future__ import annotations

import random
import threading
import time

import pytest

from flexcache import CapacityError
from flexcache.engine.entry import CacheEntry, entry_store_key
from flexcache.engine.store.base import ChecksummedTier
from flexcache.engine.store.memory import MemoryTier
from flexcache.engine.store.tiered import TieredStore


class PersistentMemoryTier(MemoryTier):
    """A memory tier that claims persistence, to exercise write-behind without a disk."""

    name = "persistent-memory"
    persistent = True


def entry(n: int, step: int = 5, size: int = 100) -> CacheEntry:
    return CacheEntry(n, step, 50, size, "", store_key=entry_store_key("t", n, step))


def blob_of(n: int, size: int = 100) -> bytes:
    return bytes([n % 251]) * size


def make(capacities=(300, 1000), persistent_last=False, background=False, **kwargs):
    tiers = [MemoryTier(c) for c in capacities[:-1]]
    last = PersistentMemoryTier(capacities[-1]) if persistent_last else MemoryTier(capacities[-1])
    tiers.append(last)
    for i, tier in enumerate(tiers):
        tier.name = f"t{i}"
    evicted: list[str] = []
    store = TieredStore(tiers, policy="lru", on_evicted=evicted.append, background=background, **kwargs)
    return store, tiers, evicted


def test_new_entries_go_to_the_fastest_tier_and_round_trip():
    store, tiers, _ = make()
    e = entry(1)
    store.put(e, blob_of(1), b"meta-1")
    assert store.tiers_of(e.key) == ["t0"] and e.tier == "t0"
    assert store.get(e.key) == blob_of(1)
    assert tiers[0].get_meta(e.key) == b"meta-1"


def test_write_behind_copies_to_persistent_tiers():
    store, tiers, _ = make(persistent_last=True)
    e = entry(1)
    store.put(e, blob_of(1), b"m")
    assert store.tiers_of(e.key) == ["t0"]  # the copy is background work
    store.drain()
    assert store.tiers_of(e.key) == ["t0", "t1"]
    assert tiers[1].get(e.key) == blob_of(1) and tiers[1].get_meta(e.key) == b"m"
    assert store.counters["write_behind"] == 1


def test_pressure_demotes_before_it_evicts():
    store, tiers, evicted = make(capacities=(300, 300))
    entries = [entry(i) for i in range(7)]
    for e in entries:
        store.put(e, blob_of(e.record_id), b"")
        store.drain()
    # t0 holds the 3 newest; t1 the 3 before them; the oldest left both tiers.
    assert {k for k in tiers[0].keys()} == {e.key for e in entries[4:]}
    assert {k for k in tiers[1].keys()} == {e.key for e in entries[1:4]}
    assert evicted == [entries[0].key]
    assert store.counters["demotions"] >= 4 and store.counters["evictions"] == 1
    for e in entries[1:]:
        assert store.get(e.key) == blob_of(e.record_id)


def test_a_hit_in_a_slower_tier_is_served_and_promoted():
    store, tiers, _ = make(capacities=(200, 1000))
    a, b, c = entry(1), entry(2), entry(3)
    for e in (a, b, c):
        store.put(e, blob_of(e.record_id), b"")
        store.drain()
    assert store.tiers_of(a.key) == ["t1"]
    assert store.get(a.key) == blob_of(1)  # served from t1 right away
    store.drain()
    assert "t0" in store.tiers_of(a.key)
    assert store.counters["promotions"] == 1
    assert tiers[0].bytes_used <= 200


def test_blob_larger_than_every_tier_is_refused():
    store, _, _ = make(capacities=(100, 200))
    with pytest.raises(CapacityError):
        store.put(entry(1, size=300), b"x" * 300, b"")
    assert not store.contains(entry(1).key)


def test_a_blob_too_big_for_the_first_tier_lands_in_a_larger_one():
    store, _, _ = make(capacities=(100, 1000))
    e = entry(1, size=500)
    store.put(e, b"x" * 500, b"")
    assert store.tiers_of(e.key) == ["t1"]


def test_corrupt_copy_is_skipped_and_the_next_copy_serves():
    tiers = [ChecksummedTier(MemoryTier(1000)), PersistentMemoryTier(1000)]
    store = TieredStore(tiers, policy="lru", background=False)
    e = entry(1)
    store.put(e, blob_of(1), b"")
    store.drain()
    damaged = bytearray(tiers[0].inner.get(e.key))
    damaged[-1] ^= 1
    tiers[0].inner.put(e.key, bytes(damaged))
    assert store.get(e.key) == blob_of(1)
    assert tiers[0].stats().corrupt == 1
    assert store.tiers_of(e.key) == ["t1"] or store.tiers_of(e.key) == ["persistent-memory"]


def test_remove_takes_every_copy():
    store, tiers, _ = make(persistent_last=True)
    e = entry(1)
    store.put(e, blob_of(1), b"")
    store.drain()
    assert store.remove(e.key)
    assert not tiers[0].contains(e.key) and not tiers[1].contains(e.key)
    assert store.get(e.key) is None and not store.remove(e.key)


def test_full_queue_drops_moves_and_never_blocks():
    gate = threading.Event()

    class SlowTier(PersistentMemoryTier):
        def put(self, key, blob, meta=b""):
            gate.wait(5)
            super().put(key, blob, meta)

    tiers = [MemoryTier(10_000), SlowTier(10_000)]
    store = TieredStore(tiers, policy="lru", queue_size=2, background=True)
    try:
        started = time.monotonic()
        for i in range(10):  # every put queues a write-behind copy to the slow tier
            store.put(entry(i), blob_of(i), b"")
        # The slow tier blocks its writer for 5 s; puts that waited for it would take that long.
        assert time.monotonic() - started < 2.5
        assert store.counters["dropped_moves"] >= 6  # 1 in progress + 2 queued, the rest dropped
        for i in range(10):
            assert store.get(entry(i).key) == blob_of(i)  # nothing lost: t0 still has every entry
    finally:
        gate.set()
        store.close()


def test_concurrent_stress_keeps_capacity_accounting_exact():
    tiers = [MemoryTier(2_000), MemoryTier(4_000), PersistentMemoryTier(8_000)]
    evicted: list[str] = []
    store = TieredStore(tiers, policy="lcbfu", queue_size=64, on_evicted=evicted.append, background=True)
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(300):
                n = rng.randrange(60)
                size = rng.choice([50, 100, 200])
                op = rng.random()
                e = entry(n, size=size)
                if op < 0.5:
                    store.put(e, bytes([n]) * size, b"")
                elif op < 0.9:
                    got = store.get(e.key)
                    assert got is None or (len(set(got)) == 1 and got[0] == n)
                else:
                    store.remove(e.key)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    store.drain(timeout=10)
    assert not errors, errors
    for tier in tiers:
        held = sum(len(tier.get(k)) for k in tier.keys())
        assert tier.bytes_used == held <= tier.capacity_bytes
    store.close()


def test_replacing_a_key_leaves_no_untracked_copies():
    store, tiers, _ = make(capacities=(300, 1000), persistent_last=True)
    e = entry(1)
    store.put(e, blob_of(1), b"")
    store.drain()
    store.put(entry(1, size=50), b"y" * 50, b"")
    store.drain()
    assert store.get(e.key) == b"y" * 50
    assert tiers[0].bytes_used == 50 and tiers[1].bytes_used == 50
