"""The tiered store: placement, write-behind, promotion, demotion, eviction, back-pressure."""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass

import pytest

from flexcache import CapacityError
from flexcache.engine.records import entry_store_key
from flexcache.errors import FlexCacheError
from flexcache.store.integrity import ChecksummedTier
from flexcache.store.memory import MemoryTier
from flexcache.store.tiered import TieredStore


class PersistentMemoryTier(MemoryTier):
    """A memory tier that claims persistence, to exercise write-behind without a disk."""

    name = "persistent-memory"
    persistent = True


@dataclass(frozen=True)
class Entry:
    record_id: int
    step: int
    size: int
    key: str


def entry(n: int, step: int = 5, size: int = 100) -> Entry:
    return Entry(n, step, size, entry_store_key("t", n, step))


def put(store: TieredStore, e: Entry, blob: bytes, meta: bytes = b"") -> None:
    store.put(e.key, blob, meta, step=e.step)


def blob_of(n: int, size: int = 100) -> bytes:
    return bytes([n % 251]) * size


def make(capacities=(300, 1000), persistent_last=False, background=False, **kwargs):
    tiers = [MemoryTier(c) for c in capacities[:-1]]
    last = PersistentMemoryTier(capacities[-1]) if persistent_last else MemoryTier(capacities[-1])
    tiers.append(last)
    for i, tier in enumerate(tiers):
        tier.name = f"t{i}"
    evicted: list[str] = []
    store = TieredStore(tiers, policy="lru", on_evicted=lambda key, token: evicted.append(key), background=background,
                        **kwargs)
    return store, tiers, evicted


def test_new_entries_go_to_the_fastest_tier_and_round_trip():
    store, tiers, _ = make()
    e = entry(1)
    put(store, e, blob_of(1), b"meta-1")
    assert store.tiers_of(e.key) == ["t0"] and store.residency() == {e.key: (0,)}
    assert store.get(e.key) == blob_of(1)
    assert tiers[0].get_meta(e.key) == b"meta-1"


def test_write_behind_copies_to_persistent_tiers():
    store, tiers, _ = make(persistent_last=True)
    e = entry(1)
    put(store, e, blob_of(1), b"m")
    assert store.tiers_of(e.key) == ["t0"]  # the copy is background work
    store.drain()
    assert store.tiers_of(e.key) == ["t0", "t1"]
    assert tiers[1].get(e.key) == blob_of(1) and tiers[1].get_meta(e.key) == b"m"
    assert store.counters["write_behind"] == 1


def test_pressure_demotes_before_it_evicts():
    store, tiers, evicted = make(capacities=(300, 300))
    entries = [entry(i) for i in range(7)]
    for e in entries:
        put(store, e, blob_of(e.record_id), b"")
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
        put(store, e, blob_of(e.record_id), b"")
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
        put(store, entry(1, size=300), b"x" * 300, b"")
    assert not store.contains(entry(1).key)


def test_a_blob_too_big_for_the_first_tier_lands_in_a_larger_one():
    store, _, _ = make(capacities=(100, 1000))
    e = entry(1, size=500)
    put(store, e, b"x" * 500, b"")
    assert store.tiers_of(e.key) == ["t1"]


def test_corrupt_copy_is_skipped_and_the_next_copy_serves():
    tiers = [ChecksummedTier(MemoryTier(1000)), PersistentMemoryTier(1000)]
    store = TieredStore(tiers, policy="lru", background=False)
    e = entry(1)
    put(store, e, blob_of(1), b"")
    store.drain()
    damaged = bytearray(tiers[0].inner.get(e.key))
    damaged[-1] ^= 1
    tiers[0].inner.put(e.key, bytes(damaged))
    assert store.get(e.key) == blob_of(1)
    assert tiers[0].stats().corrupt == 1
    assert store.tiers_of(e.key) == ["persistent-memory"]  # the damaged copy is out of service...
    store.drain()
    assert store.tiers_of(e.key) == ["memory", "persistent-memory"]  # ...and the hit promoted a good one
    assert bytes(tiers[0].get(e.key)) == blob_of(1)


def test_remove_takes_every_copy():
    store, tiers, _ = make(persistent_last=True)
    e = entry(1)
    put(store, e, blob_of(1), b"")
    store.drain()
    assert store.remove(e.key)
    assert not tiers[0].contains(e.key) and not tiers[1].contains(e.key)
    assert store.get(e.key) is None and not store.remove(e.key)


def test_full_queue_drops_moves_and_never_blocks():
    # The slow tier's write parks until the puts below have returned: a put that waited
    # for it (or for room in the queue) would never return, so returning at all proves it.
    gate, writing = threading.Event(), threading.Event()

    class SlowTier(PersistentMemoryTier):
        def put(self, key, blob, meta=b""):
            writing.set()
            assert gate.wait(120), "the test never released the slow tier"
            super().put(key, blob, meta)

    tiers = [MemoryTier(10_000), SlowTier(10_000)]
    store = TieredStore(tiers, policy="lru", queue_size=2, background=True)
    puts_returned = threading.Event()

    def put_the_rest() -> None:
        for i in range(1, 10):  # every put queues a write-behind copy to the slow tier
            put(store, entry(i), blob_of(i), b"")
        puts_returned.set()

    try:
        put(store, entry(0), blob_of(0), b"")
        assert writing.wait(60), "the write-behind copy never started"  # the worker is now stuck on it
        threading.Thread(target=put_the_rest, daemon=True).start()
        assert puts_returned.wait(60), "a put waited for the slow tier's write-behind copy"
        assert not gate.is_set()
        assert store.counters["dropped_moves"] == 7  # 1 in progress + 2 queued, the rest dropped
        for i in range(10):
            assert store.get(entry(i).key) == blob_of(i)  # nothing lost: t0 still has every entry
    finally:
        gate.set()
        store.close()


def test_concurrent_stress_keeps_capacity_accounting_exact():
    tiers = [MemoryTier(2_000), MemoryTier(4_000), PersistentMemoryTier(8_000)]
    evicted: list[str] = []
    store = TieredStore(tiers, policy="lcbfu", queue_size=64, on_evicted=lambda key, token: evicted.append(key),
                        background=True)
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
                    put(store, e, bytes([n]) * size, b"")
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
    assert store.drain(timeout=60), "background moves still pending after 60 s"
    assert not errors, errors
    assert store.counters["stale_victims"] == 0
    residency = store.residency()
    for index, tier in enumerate(tiers):
        held = sum(len(tier.get(k)) for k in tier.keys())
        assert tier.bytes_used == held <= tier.capacity_bytes
        assert set(tier.keys()) == {k for k, placed in residency.items() if index in placed}
    assert store.bytes_used == sum(tier.bytes_used for tier in tiers)  # the store's charge is the tiers' truth
    store.close()


def test_replacing_a_key_leaves_no_untracked_copies():
    store, tiers, _ = make(capacities=(300, 1000), persistent_last=True)
    e = entry(1)
    put(store, e, blob_of(1), b"")
    store.drain()
    put(store, entry(1, size=50), b"y" * 50, b"")
    store.drain()
    assert store.get(e.key) == b"y" * 50
    assert tiers[0].bytes_used == 50 and tiers[1].bytes_used == 50


# -- pinning ---------------------------------------------------------------------------


def test_pinned_entries_are_not_demoted_and_new_ones_go_below():
    store, tiers, evicted = make(capacities=(200, 1000))
    a, b, c = entry(1), entry(2), entry(3)
    for e in (a, b):
        put(store, e, blob_of(e.record_id), b"")
        assert store.pin(e.key)
    put(store, c, blob_of(3), b"")  # t0 holds only pinned entries: c lands in t1
    store.drain()
    assert store.tiers_of(a.key) == ["t0"] and store.tiers_of(b.key) == ["t0"]
    assert store.tiers_of(c.key) == ["t1"]
    store.unpin(a.key)
    put(store, entry(4), blob_of(4), b"")
    store.drain()
    assert store.tiers_of(a.key) == ["t1"]  # unpinned, the least recent is demoted as usual
    assert store.tiers_of(b.key) == ["t0"] and not evicted


def test_pins_are_counted_per_key():
    store = TieredStore([MemoryTier(100)], policy="lru", background=False)
    a, b = entry(1), entry(2)
    put(store, a, blob_of(1), b"")
    assert store.pin(a.key) and store.pin(a.key)  # two readers
    store.unpin(a.key)  # one is done; the other still reads
    with pytest.raises(CapacityError):
        put(store, b, blob_of(2), b"")
    assert store.get(a.key) == blob_of(1) and not store.contains(b.key)
    store.unpin(a.key)
    assert not store.is_pinned(a.key)
    put(store, b, blob_of(2), b"")
    assert not store.contains(a.key) and store.contains(b.key)
    with pytest.raises(FlexCacheError, match="without a matching pin"):
        store.unpin(a.key)


def test_pinned_context_releases_on_error_and_reports_presence():
    store, _, _ = make()
    a = entry(1)
    with store.pinned(a.key) as held:
        assert not held  # a key may be pinned before it is stored
        put(store, a, blob_of(1), b"")
    assert not store.is_pinned(a.key)
    with pytest.raises(RuntimeError):
        with store.pinned(a.key) as held:
            assert held and store.is_pinned(a.key)
            raise RuntimeError("decode failed")
    assert not store.is_pinned(a.key)


def test_a_pin_survives_replacement_and_removal_but_does_not_block_them():
    store, _, _ = make(capacities=(100, 100))
    a = entry(1)
    put(store, a, blob_of(1), b"")
    store.pin(a.key)
    put(store, entry(1, size=50), b"y" * 50, b"")  # explicit replacement is not eviction
    assert store.get(a.key) == b"y" * 50
    assert store.remove(a.key) and not store.contains(a.key)
    assert store.is_pinned(a.key)  # the pin waits for the key's next version
    put(store, a, blob_of(1), b"")
    for n in range(2, 6):
        put(store, entry(n), blob_of(n), b"")
    assert store.get(a.key) == blob_of(1)
    store.unpin(a.key)


@pytest.mark.parametrize("policy", ["lru", "lcbfu", "flexcache"])
def test_concurrent_readers_never_lose_a_pinned_entry(policy):
    tiers = [MemoryTier(600), MemoryTier(1_000)]
    store = TieredStore(tiers, policy=policy, queue_size=64, background=True)
    hot = [entry(n, step=5) for n in range(4)]
    for e in hot:
        put(store, e, blob_of(e.record_id), b"")
    errors: list[BaseException] = []
    reads = [0]
    stop = threading.Event()

    def reader(seed: int) -> None:
        rng = random.Random(seed)
        try:
            while not stop.is_set():
                e = rng.choice(hot)
                with store.pinned(e.key) as held:
                    for _ in range(3):
                        blob = store.get(e.key)
                        assert (blob is not None) if held else True, f"pinned {e.key} vanished"
                        assert blob is None or blob == blob_of(e.record_id)
                        reads[0] += blob is not None
        except BaseException as exc:
            errors.append(exc)
            stop.set()

    def writer(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(400):
                n = rng.randrange(10, 60)
                size = rng.choice([100, 200])
                put(store, entry(n, step=25, size=size), bytes([n]) * size, b"")
        except BaseException as exc:
            errors.append(exc)

    readers = [threading.Thread(target=reader, args=(s,)) for s in range(3)]
    writers = [threading.Thread(target=writer, args=(10 + s,)) for s in range(2)]
    for t in readers + writers:
        t.start()
    for t in writers:
        t.join()
    stop.set()
    for t in readers:
        t.join()
    assert store.drain(timeout=60), "background moves still pending after 60 s"
    assert not errors, errors
    assert reads[0] > 0
    assert not any(store.is_pinned(e.key) for e in hot)
    assert store.counters["stale_victims"] == 0  # every policy record still had its entry
    for index, tier in enumerate(tiers):
        held = sum(len(tier.get(k)) for k in tier.keys())
        assert tier.bytes_used == held <= tier.capacity_bytes
        # No orphaned copies: a tier holds exactly the keys the store places there.
        assert set(tier.keys()) == {k for k, placed in store.residency().items() if index in placed}
    store.close()


def test_a_tier_that_is_down_warns_once_per_outage(caplog):
    import logging

    class FlakyTier(PersistentMemoryTier):
        down = True

        def put(self, key, blob, meta=b""):
            if self.down:
                raise FlexCacheError("server unavailable")
            super().put(key, blob, meta)

    flaky = FlakyTier(10_000)
    store = TieredStore([MemoryTier(10_000), flaky], policy="lru", background=False)
    with caplog.at_level(logging.DEBUG, logger="flexcache.store.tiered"):
        for n in range(3):
            put(store, entry(n), blob_of(n), b"m")
            store.drain()
        flaky.down = False
        put(store, entry(9), blob_of(9), b"m")
        store.drain()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len([m for m in warnings if "refused" in m]) == 1
    assert len([r for r in caplog.records if r.levelno == logging.DEBUG and "refused" in r.getMessage()]) == 2
    assert warnings[-1].endswith("takes writes again")
    assert store.tiers_of(entry(9).key) == ["memory", "persistent-memory"]


def test_a_policy_naming_a_key_the_store_does_not_place_there_does_not_fail_the_write(caplog):
    # Policies and residency change together under the store lock, so this needs a forged policy
    # record; the store drops the name (and says so) rather than fail the write that needs room.
    from flexcache.store.policy import RankedEntry

    store, tiers, _ = make(capacities=(300, 1000))
    store.policies[0].on_insert(RankedEntry("t.0badc0de", step=1, nbytes=100))  # the LRU victim from now on
    for n in range(2, 6):
        put(store, entry(n), blob_of(n), b"m")  # the fourth needs room
    assert store.counters["stale_victims"] == 1
    assert "does not place there" in caplog.text
    assert tiers[0].bytes_used == 300 and "t.0badc0de" not in store.residency()
    store.drain()  # entry 2 made the room: demoted to t1
    assert all(store.get(entry(n).key) == blob_of(n) for n in range(2, 6))
