"""`plan` and `fetch` never wait on another request's store I/O: writes, evictions, a full-store wait.

Each test parks a tier call on an event (a write, a removal) or fills the
store with pinned entries, starts an insert that runs into it on another
thread, and checks that look-ups and hits of other entries finish while the
insert is still stuck: the parked call is released only after the look-up
returned, so a look-up that completes at all did not wait on it. The
deadlines below only turn a hang into a failure with a message; no
assertion depends on how fast this machine is.
"""

from __future__ import annotations

import threading

import pytest
import torch

from flexcache import CacheConfig, FlexCache, GenerationSignature
from flexcache.store.memory import MemoryTier

SIG = GenerationSignature("tiny", "Euler", num_steps=10, height=64, width=64, num_frames=9, latent_shape=(4, 3, 8, 8))
LATENT = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
PROMPTS = ["a red fox running through snow", "a blue whale diving in the ocean", "an owl asleep in an old barn"]
HANG_GUARD_S = 60  # a look-up that waits on the parked call never returns; this turns that into a failure


class GatedTier(MemoryTier):
    """A memory tier whose put or remove of one key parks until released."""

    def __init__(self, capacity: int) -> None:
        super().__init__(capacity)
        self.gate_put: str | None = None
        self.gate_remove = False
        self.parked, self.release = threading.Event(), threading.Event()

    def put(self, key, blob, meta=b""):
        if key == self.gate_put:
            self.parked.set()
            assert self.release.wait(2 * HANG_GUARD_S), "the test never released a parked put"
        super().put(key, blob, meta)

    def remove(self, key):
        if self.gate_remove:
            self.parked.set()
            assert self.release.wait(2 * HANG_GUARD_S), "the test never released a parked remove"
        return super().remove(key)


def cache_over(tier, embedder) -> FlexCache:
    config = CacheConfig.from_dict({"embedder": {"device": "cpu"}, "index": {"device": "cpu"},
                                    "codec": {"name": "lossless"}, "policy": "lru"})
    return FlexCache(config, embedder=embedder, tiers=[tier])


def insert(cache: FlexCache, prompt: str, seed: int) -> list[str]:
    plan = cache.plan(prompt, SIG, seed=seed).as_miss()
    return cache.insert(plan, {step: LATENT for step in plan.checkpoint_steps})


def in_background(fn) -> threading.Thread:
    thread = threading.Thread(target=fn, daemon=True)
    thread.start()
    return thread


def look_ups_finish(cache: FlexCache) -> None:
    """A plan, a hit's fetch and a pin all complete while the insert is parked."""
    done = threading.Event()
    results = {}

    def look_up() -> None:
        plan = cache.plan(PROMPTS[0], SIG)
        results["hit"] = plan.hit
        results["latent"] = cache.fetch(plan) if plan.hit else None
        results["stats"] = cache.stats()
        done.set()

    in_background(look_up)
    assert done.wait(HANG_GUARD_S), "a look-up waited on another request's store I/O"
    assert results["hit"] and results["latent"] is not None


def blob_nbytes(cache: FlexCache) -> int:
    return len(cache.codec.encode(LATENT))


def test_a_write_in_flight_holds_up_no_look_up(embedder):
    from flexcache.engine.records import entry_store_key, stable_record_id

    tier = GatedTier(1 << 20)
    cache = cache_over(tier, embedder)
    insert(cache, PROMPTS[0], seed=1)
    plan = cache.plan(PROMPTS[1], SIG, seed=2).as_miss()
    record = stable_record_id("default", SIG.key(), plan.prompt)
    tier.gate_put = entry_store_key("default", record, plan.checkpoint_steps[0])
    writer = in_background(lambda: cache.insert(plan, {step: LATENT for step in plan.checkpoint_steps}))
    assert tier.parked.wait(HANG_GUARD_S), "the insert never reached the gated put"
    look_ups_finish(cache)
    assert not cache.plan(PROMPTS[1], SIG).hit  # nothing of the parked insert is served before it lands
    tier.release.set()
    writer.join(HANG_GUARD_S)
    assert not writer.is_alive(), "the insert did not finish after its put was released"
    assert cache.plan(PROMPTS[1], SIG).hit
    cache.close()


def test_eviction_io_holds_up_no_look_up(embedder):
    probe = cache_over(MemoryTier(1 << 20), embedder)
    tier = GatedTier(7 * blob_nbytes(probe))  # one insert's 5 checkpoints fit; a second must evict 3
    cache = cache_over(tier, embedder)
    insert(cache, PROMPTS[0], seed=1)
    insert(cache, PROMPTS[2], seed=3)  # evicts 3 of the first: room is tight from now on
    assert cache.stats()["evictions"] == 3
    tier.gate_remove = True
    writer = in_background(lambda: insert(cache, PROMPTS[1], seed=2))
    assert tier.parked.wait(HANG_GUARD_S), "the insert never removed a victim"  # its first victim's removal parks
    tier.gate_remove = False
    try:
        done = threading.Event()
        results = {}

        def look_up() -> None:
            plan = cache.plan(PROMPTS[2], SIG)
            results["latent"] = cache.fetch(plan) if plan.hit else None
            cache.stats()
            done.set()

        in_background(look_up)
        assert done.wait(HANG_GUARD_S), "a look-up waited on an eviction's removal"
        assert results["latent"] is not None
    finally:
        tier.release.set()
        writer.join(HANG_GUARD_S)
    assert not writer.is_alive(), "the insert did not finish after the removal was released"
    cache.close()


def test_a_full_store_wait_holds_up_no_look_up(embedder, monkeypatch):
    from flexcache.store import tiered

    # The wait ends when the room held in flight is given back (below, after the look-ups);
    # WRITE_WAIT_S is raised so that it can only end that way while the test runs.
    monkeypatch.setattr(tiered, "WRITE_WAIT_S", 2 * HANG_GUARD_S)
    tier = GatedTier(1 << 20)
    cache = cache_over(tier, embedder)
    insert(cache, PROMPTS[0], seed=1)
    stored = cache.stats()["bytes_stored"]
    tier.capacity_bytes = stored  # full
    keys = [entry.store_key for entry in cache.entries()]
    for key in keys:
        cache.store.pin(key)  # nothing can be evicted
    # A write in flight elsewhere makes a put that finds no room wait for it (up to WRITE_WAIT_S).
    cache.store._slots[0].reserved += 1  # (white-box: the one way to hold room "in flight" without a thread)
    found_no_room = threading.Event()
    real_write = cache.store._write

    def write(index, version, blob, notices):
        placed = real_write(index, version, blob, notices)
        if not placed:
            found_no_room.set()  # the put now waits for the room held in flight
        return placed

    monkeypatch.setattr(cache.store, "_write", write)
    attempt = {}
    writer = in_background(lambda: attempt.setdefault("stored", insert(cache, PROMPTS[1], seed=2)))
    try:
        assert found_no_room.wait(HANG_GUARD_S), "the insert never tried to write"
        look_ups_finish(cache)
        assert writer.is_alive() and "stored" not in attempt  # still waiting for room while the look-ups ran
    finally:
        cache.store._slots[0].reserved -= 1
        writer.join(HANG_GUARD_S)
        for key in keys:
            cache.store.unpin(key)
    assert not writer.is_alive(), "the insert kept waiting after the room in flight was given back"
    assert attempt["stored"] == []  # no room: nothing stored, and the request was served anyway
    cache.close()


@pytest.mark.parametrize("gate", ["put", "remove"])
def test_the_gates_do_park_a_call(gate):
    tier = GatedTier(100)
    tier.put("t.00000001", b"x")
    if gate == "put":
        tier.gate_put = "t.00000002"
        thread = in_background(lambda: tier.put("t.00000002", b"y"))
    else:
        tier.gate_remove = True
        thread = in_background(lambda: tier.remove("t.00000001"))
    assert tier.parked.wait(HANG_GUARD_S) and thread.is_alive()
    tier.release.set()
    thread.join(HANG_GUARD_S)
    assert not thread.is_alive()
