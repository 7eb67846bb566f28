"""Tests for flexcache.store.policy: LRU, NIRVANA's LCBFU and the flexcache policy.

Shared behaviour is parametrised over `POLICY_REGISTRY`, so a new policy is
tested the moment it is registered; the property tests drive each policy
through a real `TieredStore`.
"""

from __future__ import annotations

import math
import random

import pytest

from flexcache import CapacityError
from flexcache.cli import build_parser
from flexcache.config import CacheConfig
from flexcache.core.names import POLICIES as CONFIG_POLICIES
from flexcache.engine.records import entry_store_key
from flexcache.errors import ConfigError, FlexCacheError
from flexcache.store.memory import MemoryTier
from flexcache.store.policy import (
    POLICY_REGISTRY,
    FlexCachePolicy,
    LCBFUPolicy,
    LRUPolicy,
    RankedEntry,
    ReplacementPolicy,
    build_policy,
)
from flexcache.store.tiered import TieredStore

POLICIES = list(POLICY_REGISTRY)


def entry(record_id: int, step: int = 5, hits: int = 0) -> RankedEntry:
    return RankedEntry(f"t.{record_id:08x}{step:04x}", step=step, nbytes=1024, hits=hits)  # one key per (record, step)


def drain(policy: ReplacementPolicy) -> list[str]:
    """Evict everything in victim order."""
    order = []
    while (key := policy.victim()) is not None:
        order.append(key)
        policy.on_remove(key)
        assert len(order) <= 1000
    return order


# -- shared behaviour -------------------------------------------------------------


@pytest.mark.parametrize("name", POLICIES)
def test_build_policy_returns_fresh_named_policy(name):
    policy = build_policy(name)
    assert isinstance(policy, ReplacementPolicy)
    assert policy.name == name
    assert build_policy(name) is not policy


def test_build_policy_classes():
    assert type(build_policy("lru")) is LRUPolicy
    assert type(build_policy("lcbfu")) is LCBFUPolicy
    assert type(build_policy("flexcache")) is FlexCachePolicy


@pytest.mark.parametrize("name", POLICIES)
def test_empty_policy_has_no_victim(name):
    policy = build_policy(name)
    assert policy.victim() is None
    assert len(policy) == 0
    policy.on_remove("never-inserted")  # unknown keys are ignored
    policy.on_access(entry(1))  # access to an untracked entry does not track it
    assert policy.victim() is None
    assert len(policy) == 0


@pytest.mark.parametrize("name", POLICIES)
def test_len_tracks_inserts_and_removes(name):
    policy = build_policy(name)
    entries = [entry(i, step=5 * (i % 3 + 1)) for i in range(6)]
    for count, e in enumerate(entries, start=1):
        policy.on_insert(e)
        assert len(policy) == count
    policy.on_insert(entries[2])  # re-inserting a tracked key does not duplicate it
    assert len(policy) == 6
    policy.on_remove(entries[0].key)
    policy.on_remove(entries[0].key)
    assert len(policy) == 5
    policy.on_access(entries[3])
    assert len(policy) == 5


@pytest.mark.parametrize("name", POLICIES)
def test_removed_keys_are_never_victims(name):
    policy = build_policy(name)
    entries = [entry(i, step=(i % 4 + 1) * 5, hits=i % 3) for i in range(12)]
    for e in entries:
        policy.on_insert(e)
    removed = {entries[i].key for i in (0, 3, 4, 7, 11)}
    for key in removed:
        policy.on_remove(key)
    for e in entries[1::2]:
        policy.on_access(e)  # accessing removed ones must not resurrect them
    order = drain(policy)
    assert not removed & set(order)
    assert sorted(order) == sorted({e.key for e in entries} - removed)
    assert len(policy) == 0
    assert policy.victim() is None


@pytest.mark.parametrize("name", POLICIES)
def test_victim_is_stable_without_changes(name):
    policy = build_policy(name)
    for i in range(5):
        policy.on_insert(entry(i, step=10))
    first = policy.victim()
    assert first is not None
    assert policy.victim() == first
    assert len(policy) == 5  # asking for a victim does not remove it


@pytest.mark.parametrize("name", POLICIES)
def test_single_entry_is_the_victim(name):
    policy = build_policy(name)
    e = entry(99, step=25, hits=10)
    policy.on_insert(e)
    assert policy.victim() == e.key


@pytest.mark.parametrize("name", POLICIES)
def test_same_record_different_steps_are_separate_keys(name):
    policy = build_policy(name)
    a, b = entry(1, step=5), entry(1, step=10)
    assert a.key != b.key
    policy.on_insert(a)
    policy.on_insert(b)
    assert len(policy) == 2
    policy.on_remove(a.key)
    assert policy.victim() == b.key


def test_build_policy_unknown_name_raises():
    with pytest.raises(ConfigError) as info:
        build_policy("nope")
    assert isinstance(info.value, FlexCacheError)
    assert "nope" in str(info.value)
    assert "lru" in str(info.value) and "lcbfu" in str(info.value)


# -- LRU ----------------------------------------------------------------------------


def test_lru_evicts_in_insertion_order_without_access():
    policy = build_policy("lru")
    entries = [entry(i, step=50 - i, hits=100 - i) for i in range(5)]  # depth and hits are ignored
    for e in entries:
        policy.on_insert(e)
    assert drain(policy) == [e.key for e in entries]


def test_lru_access_moves_to_end():
    policy = build_policy("lru")
    a, b, c = entry(1), entry(2), entry(3)
    for e in (a, b, c):
        policy.on_insert(e)
    assert policy.victim() == a.key
    policy.on_access(a)
    assert policy.victim() == b.key
    policy.on_access(b)
    assert policy.victim() == c.key
    policy.on_access(a)
    assert drain(policy) == [c.key, b.key, a.key]


def test_lru_reinsert_counts_as_recent():
    policy = build_policy("lru")
    a, b = entry(1), entry(2)
    policy.on_insert(a)
    policy.on_insert(b)
    policy.on_insert(a)
    assert policy.victim() == b.key


# -- LCBFU --------------------------------------------------------------------------


def test_lcbfu_score_is_step_times_hits_plus_one():
    assert LCBFUPolicy.score(entry(1, step=5, hits=0)) == 5
    assert LCBFUPolicy.score(entry(1, step=5, hits=3)) == 20
    assert LCBFUPolicy.score(entry(1, step=25, hits=1)) == 50


def test_lcbfu_evicts_lowest_score_first():
    policy = build_policy("lcbfu")
    # scores: 40, 10, 30, 25, 60
    entries = [
        entry(1, step=20, hits=1),
        entry(2, step=10, hits=0),
        entry(3, step=15, hits=1),
        entry(4, step=25, hits=0),
        entry(5, step=5, hits=11),
    ]
    for e in entries:
        policy.on_insert(e)
    assert drain(policy) == [entries[i].key for i in (1, 3, 2, 0, 4)]


def test_lcbfu_ties_go_to_least_recently_used():
    policy = build_policy("lcbfu")
    # all score 10
    a, b, c = entry(1, step=10), entry(2, step=5, hits=1), entry(3, step=10)
    for e in (a, b, c):
        policy.on_insert(e)
    assert policy.victim() == a.key
    policy.on_access(a)
    assert policy.victim() == b.key
    policy.on_access(b)
    assert policy.victim() == c.key
    assert drain(policy) == [c.key, a.key, b.key]


def test_lcbfu_recency_never_beats_a_lower_score():
    policy = build_policy("lcbfu")
    low, high = entry(1, step=5), entry(2, step=10)
    policy.on_insert(low)
    policy.on_insert(high)
    for _ in range(5):
        policy.on_access(low)  # recent, but still the cheapest to lose
    assert policy.victim() == low.key


def test_lcbfu_deep_frequent_entry_outlives_shallow_unused():
    policy = build_policy("lcbfu")
    deep = entry(1, step=25)
    shallow = entry(2, step=5)
    policy.on_insert(deep)
    policy.on_insert(shallow)  # deep is older...
    for _ in range(3):
        deep.hits += 1  # ...but hit often: the store counts the read, then reports the access
        policy.on_access(deep)
    assert policy.victim() == shallow.key
    policy.on_remove(shallow.key)
    assert policy.victim() == deep.key


def test_lcbfu_sees_hit_counts_updated_on_tracked_entry():
    policy = build_policy("lcbfu")
    a, b = entry(1, step=10), entry(2, step=10)
    policy.on_insert(a)
    policy.on_insert(b)
    assert policy.victim() == a.key  # tie -> least recently used
    a.hits = 1  # a is now worth 20, b 10
    assert policy.victim() == b.key


def test_lcbfu_differs_from_lru():
    lru, lcbfu = build_policy("lru"), build_policy("lcbfu")
    deep, shallow = entry(1, step=25), entry(2, step=5)
    for policy in (lru, lcbfu):
        policy.on_insert(deep)
        policy.on_insert(shallow)
    assert lru.victim() == deep.key
    assert lcbfu.victim() == shallow.key


# -- every registered policy: names, exclusion, determinism -------------------------


def test_config_and_cli_accept_every_registered_policy():
    assert set(CONFIG_POLICIES) == set(POLICY_REGISTRY)
    for name in POLICY_REGISTRY:
        assert CacheConfig(policy=name).policy == name
        assert CacheConfig.from_dict({"policy": name}).policy == name
        assert build_parser().parse_args(["demo", "--policy", name]).policy == name


def test_build_policy_passes_options_and_rejects_unknown_ones():
    assert build_policy("flexcache", half_life=16).half_life == 16.0
    with pytest.raises(ConfigError, match="lru"):
        build_policy("lru", half_life=16)


def build_with(name: str, entries: list[RankedEntry]) -> ReplacementPolicy:
    policy = build_policy(name)
    for e in entries:
        policy.on_insert(e)
    return policy


@pytest.mark.parametrize("name", POLICIES)
def test_excluded_keys_are_skipped_and_keep_their_place(name):
    entries = [entry(i, step=5 * (i % 3 + 1), hits=i % 2) for i in range(6)]
    order = drain(build_with(name, entries))
    policy = build_with(name, entries)
    assert policy.victim() == order[0]
    assert policy.victim(exclude={order[0]}) == order[1]
    assert policy.victim(exclude=set(order[:-1])) == order[-1]
    assert policy.victim(exclude=set(order)) is None
    assert len(policy) == 6  # exclusion removes nothing...
    assert drain(policy) == order  # ...and changes no entry's standing


@pytest.mark.parametrize("name", POLICIES)
def test_same_trace_gives_same_victims(name):
    """Eviction order depends on the event sequence only (no wall clock, no salted hash)."""
    rng = random.Random(7)
    entries = [RankedEntry(f"t.{i:08x}", rng.choice([5, 10, 20]), rng.choice([100, 300, 900])) for i in range(30)]
    trace = [(rng.random() < 0.3, rng.randrange(30)) for _ in range(300)]

    def run() -> list[str]:
        policy = build_policy(name)
        for is_insert, i in trace:
            (policy.on_insert if is_insert else policy.on_access)(entries[i])
        return drain(policy)

    assert run() == run()


# -- flexcache ------------------------------------------------------------------------

D = 2.0 ** (-1 / 64)  # the default per-event decay


def sized(record_id: int, step: int, nbytes: int) -> RankedEntry:
    return RankedEntry(f"t.{record_id:08x}", step=step, nbytes=nbytes)


def test_flexcache_value_is_steps_times_decayed_hits_per_byte():
    policy = FlexCachePolicy()
    a, b = sized(1, 20, 400), sized(2, 10, 100)
    policy.on_insert(a)  # t=1: r_a = 1/2
    assert policy.hit_rate(a.key) == pytest.approx(0.5)
    assert policy.value(a.key) == pytest.approx(20 * 0.5 / 400)
    policy.on_insert(b)  # t=2: a decays one event
    assert policy.hit_rate(a.key) == pytest.approx(0.5 * D)
    policy.on_access(a)  # t=3: r_a = 1/2 d^2 + 1
    policy.on_access(b)  # t=4: r_b = 1/2 d^2 + 1, r_a = (1/2 d^2 + 1) d
    assert policy.hit_rate(a.key) == pytest.approx((0.5 * D**2 + 1) * D)
    assert policy.value(a.key) == pytest.approx(20 * (0.5 * D**2 + 1) * D / 400)
    assert policy.value(b.key) == pytest.approx(10 * (0.5 * D**2 + 1) / 100)
    assert policy.victim() == a.key  # 0.05 vs 0.15 per byte
    assert policy.value("untracked") is None and policy.hit_rate("untracked") is None


def test_flexcache_hits_halve_every_half_life_events():
    policy = FlexCachePolicy(half_life=8)
    a, other = sized(1, 10, 100), sized(2, 10, 100)
    policy.on_insert(a)
    policy.on_insert(other)
    policy.on_access(a)
    before = policy.hit_rate(a.key)
    for _ in range(8):
        policy.on_access(other)
    assert policy.hit_rate(a.key) == pytest.approx(before / 2)
    policy.on_remove(other.key)
    policy.on_access(other)  # an untracked key is no event: the clock stands still
    assert policy.hit_rate(a.key) == pytest.approx(before / 2)


def test_flexcache_new_entry_outlives_entries_whose_hits_stopped():
    """Insertion counts as half a hit: a newcomer beats hits older than ~1 half-life, loses to fresh ones."""
    policy = FlexCachePolicy(half_life=4)
    stale, fresh = sized(1, 10, 100), sized(2, 10, 100)
    policy.on_insert(stale)
    policy.on_access(stale)  # r = 1 + d/2 at t=2
    policy.on_insert(fresh)
    for _ in range(8):
        policy.on_access(fresh)
    new = sized(3, 10, 100)
    policy.on_insert(new)  # r_stale ~ 1.4 x 2^-2.25 = 0.3 < 0.5
    assert policy.victim() == stale.key
    lcbfu = build_policy("lcbfu")
    for e in (stale, fresh, new):
        lcbfu.on_insert(e)
    stale.hits, fresh.hits = 1, 8
    assert lcbfu.victim() == new.key  # LCBFU drops the newcomer first


def test_flexcache_ties_go_to_least_recently_used():
    policy = FlexCachePolicy()
    a, b, c = sized(1, 10, 100), sized(2, 10, 100), sized(3, 10, 100)
    for e in (a, b, c):
        policy.on_insert(e)
    assert drain(build_with("flexcache", [a, b, c])) == [a.key, b.key, c.key]
    zero_a, zero_b = sized(4, 0, 100), sized(5, 0, 100)  # K = 0 saves nothing: value 0, a true tie
    policy.on_insert(zero_a)
    policy.on_insert(zero_b)
    policy.on_access(zero_a)
    assert drain(policy)[:2] == [zero_b.key, zero_a.key]


def test_flexcache_zero_byte_entry_does_not_divide_by_zero():
    policy = FlexCachePolicy()
    policy.on_insert(sized(1, 10, 0))
    assert math.isfinite(policy.value(sized(1, 10, 0).key))


@pytest.mark.parametrize("bad", [0, -1, math.inf, math.nan, "64"])
def test_flexcache_rejects_bad_settings(bad):
    with pytest.raises(ConfigError):
        FlexCachePolicy(half_life=bad)
    with pytest.raises(ConfigError):
        FlexCachePolicy(insert_prior=bad)


class _EagerFlexCache:
    """Oracle: the textbook definition, decaying every entry on every event (O(n) per event)."""

    def __init__(self, half_life: float = 64.0) -> None:
        self.decay = 2.0 ** (-1.0 / half_life)
        self.clock = 0
        self.state: dict[str, list] = {}  # key -> [K, nbytes, r, last event]

    def _tick(self) -> None:
        self.clock += 1
        for item in self.state.values():
            item[2] *= self.decay

    def insert(self, e: RankedEntry) -> None:
        self._tick()
        self.state[e.key] = [e.step, max(e.nbytes, 1), 0.5, self.clock]

    def access(self, e: RankedEntry) -> None:
        if e.key in self.state:
            self._tick()
            self.state[e.key][2] += 1.0
            self.state[e.key][3] = self.clock

    def value(self, key: str) -> float:
        k, nbytes, r, _ = self.state[key]
        return k * r / nbytes


@pytest.mark.parametrize("seed", range(5))
def test_flexcache_lazy_decay_matches_eager_decay(seed):
    rng = random.Random(seed)
    half_life = rng.choice([4, 16, 64])
    lazy, eager = FlexCachePolicy(half_life=half_life), _EagerFlexCache(half_life)
    entries = [sized(i, rng.choice([2, 5, 10, 25]), rng.choice([64, 100, 333, 1000])) for i in range(25)]
    for _ in range(600):
        e = rng.choice(entries)
        op = rng.random()
        if op < 0.2:
            lazy.on_insert(e)
            eager.insert(e)
        elif op < 0.9:
            lazy.on_access(e)
            eager.access(e)
        else:
            lazy.on_remove(e.key)
            eager.state.pop(e.key, None)
        assert len(lazy) == len(eager.state)
        for key in eager.state:
            assert lazy.value(key) == pytest.approx(eager.value(key), rel=1e-9)
        victim = lazy.victim()
        if eager.state:
            lowest = min(eager.value(k) for k in eager.state)
            assert eager.value(victim) == pytest.approx(lowest, rel=1e-9)
        else:
            assert victim is None


# -- hand-computable traces through a real store -------------------------------------


def engine_hit(store: TieredStore, e: RankedEntry) -> None:
    """What `FlexCache.fetch` does on a hit: read through the store (which counts the hit)."""
    assert store.get(e.key) is not None


def store_entry(n: int, step: int, nbytes: int) -> RankedEntry:
    return RankedEntry(entry_store_key("t", n, step), step=step, nbytes=nbytes)


def put(store: TieredStore, e: RankedEntry, blob: bytes) -> None:
    store.put(e.key, blob, step=e.step)


def kept_after(name: str, capacity: int, script) -> set[str]:
    store = TieredStore([MemoryTier(capacity)], policy=name, background=False)
    script(store)
    store.drain()
    kept = set(store.tiers[0].keys())
    assert store.tiers[0].bytes_used <= capacity
    return kept


SMALL = [store_entry(i, 20, 100) for i in range(1, 5)]
BIG = store_entry(5, 25, 600)
NEW_A = store_entry(6, 20, 400)


def _size_trace(store: TieredStore) -> None:
    for e in SMALL + [BIG]:
        put(store, e, b"s" * e.nbytes)
    for e in SMALL + [BIG]:
        engine_hit(store, e)
    put(store, NEW_A, b"n" * NEW_A.nbytes)


@pytest.mark.parametrize("name,expected", [
    ("lru", {BIG.key, NEW_A.key}),
    ("lcbfu", {BIG.key, NEW_A.key}),
    ("flexcache", {e.key for e in SMALL} | {NEW_A.key}),
])
def test_trace_big_poorly_compressed_entry_vs_small_ones(name, expected):
    """One tier of 1000 bytes; every entry is hit once; which 400 bytes make room for a new entry?

    Entries: s1..s4 with K=20 and 100 bytes each, B with K=25 and 600 bytes
    (a latent that compressed badly). Trace (t = policy clock):

        t=1..5   put s1, s2, s3, s4, B        (1000 / 1000 bytes)
        t=6..10  hit s1, s2, s3, s4, B        (one hit each)
                 put N (K=20, 400 bytes)      -> 400 bytes must go

    * lru: least recent first: s1, s2, s3, s4 go (400 bytes). Keeps {B, N}.
    * lcbfu: K x (hits + 1) is 40 for each s_i, 50 for B: the s_i go. Keeps {B, N}.
    * flexcache, at t=10 with d = 2^(-1/64) (so every d^k here is in [0.9, 1]):
      value(s_i) = 20 (d^(10-i)/2 + d^(5-i)) / 100 >= 20 x 1.35 / 100 = 0.27 per byte,
      value(B)   = 25 (d^5/2 + 1) / 600 <= 25 x 1.5 / 600 = 0.0625 per byte:
      B goes (600 bytes is enough). Keeps {s1, s2, s3, s4, N}.

    Right answer: if the next stretch of traffic looks like the last one, the
    kept s_i save 4 x 20 = 80 steps where B saves 25, in less space.
    """
    assert kept_after(name, 1000, _size_trace) == expected


OLD = store_entry(11, 40, 200)
CURRENT = store_entry(12, 10, 200)
NEW_B = store_entry(13, 10, 200)


def _stale_trace(store: TieredStore) -> None:
    put(store, OLD, b"o" * OLD.nbytes)
    for _ in range(60):
        engine_hit(store, OLD)
    put(store, CURRENT, b"c" * CURRENT.nbytes)
    for _ in range(192):
        engine_hit(store, CURRENT)
    put(store, NEW_B, b"n" * NEW_B.nbytes)


@pytest.mark.parametrize("name,expected", [
    ("lru", {CURRENT.key, NEW_B.key}),
    ("lcbfu", {OLD.key, NEW_B.key}),
    ("flexcache", {CURRENT.key, NEW_B.key}),
])
def test_trace_formerly_popular_deep_entry_vs_currently_popular(name, expected):
    """One tier of 400 bytes; a deep entry that was popular long ago vs. a shallow one popular now.

    Entries: O with K=40, C with K=10, 200 bytes each. Trace (t = policy clock):

        t=1        put O
        t=2..61    hit O 60 times               (then never again)
        t=62       put C
        t=63..254  hit C 192 times              (3 half-lives of 64 events)
                   put N (K=10, 200 bytes)      -> one of O, C must go

    * lru: O was used last at t=61, C at t=254: O goes. Keeps {C, N}.
    * lcbfu: O scores 40 x 61 = 2440, C 10 x 193 = 1930: C goes. Keeps {O, N}.
    * flexcache at t=254: O's 60.5 hits are all >= 193 events old, so
      r_O <= 60.5 x 2^(-3) < 7.6 and value(O) <= 40 x 7.6 / 200 = 1.52;
      C was hit on each of the last 192 events, so
      r_C >= sum_{k<192} d^k = (1 - 2^-3) / (1 - 2^(-1/64)) > 81 and value(C) >= 10 x 81 / 200 = 4.05:
      O goes. Keeps {C, N}.

    Right answer: C saves 10 steps on every current request; O has not been
    asked for in 193 events.
    """
    assert kept_after(name, 400, _stale_trace) == expected


# -- properties through a real TieredStore --------------------------------------------


def check_store(store: TieredStore, blobs: dict[str, bytes], pinned: dict[str, set[int]]) -> None:
    """Capacity holds in every tier, bookkeeping matches the tiers, pinned copies are intact."""
    for index, tier in enumerate(store.tiers):
        keys = list(tier.keys())
        held = sum(len(tier.get(k)) for k in keys)
        assert tier.bytes_used == held <= tier.capacity_bytes
        assert len(store.policies[index]) == len(keys)  # the policy tracks exactly this tier's copies
        for key in keys:
            assert tier.name in store.tiers_of(key)
            assert tier.get(key) == blobs[key]
    assert store.counters["stale_victims"] == 0  # policies and residency never drift apart
    for key, tiers_at_pin in pinned.items():
        now = {i for i, tier in enumerate(store.tiers) if tier.name in store.tiers_of(key)}
        assert tiers_at_pin <= now, f"pinned {key} lost a copy"


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("name", POLICIES)
def test_random_traces_keep_capacity_and_pinned_entries(name, seed):
    rng = random.Random(1000 * seed + len(name))
    tiers = [MemoryTier(c) for c in (300, 500, 700)]
    for i, tier in enumerate(tiers):
        tier.name = f"t{i}"
    store = TieredStore(tiers, policy=name, background=False)
    entries = {n: store_entry(n, 5 * (n % 5 + 1), 0) for n in range(40)}
    blobs: dict[str, bytes] = {}
    pins: dict[str, int] = {}
    pinned: dict[str, set[int]] = {}  # key -> tiers that held it when pinned (must keep it)
    for step in range(400):
        n = rng.randrange(40)
        e = entries[n]
        op = rng.random()
        if op < 0.4 and e.key not in pins:
            size = rng.choice([50, 100, 150, 250])
            e.nbytes = size
            blob = bytes([n, step % 251]) * (size // 2)
            blobs[e.key] = blob
            try:
                put(store, e, blob)
            except CapacityError:
                assert not store.contains(e.key)  # every tier full of pinned entries: nothing half-stored
        elif op < 0.65:
            blob = store.get(e.key)
            if blob is not None:
                assert blob == blobs[e.key]
        elif op < 0.72 and e.key not in pins:
            store.remove(e.key)
        elif op < 0.82 and len(pins) < 10:
            stored = [x for x in entries.values() if store.tiers_of(x.key)]
            e = rng.choice(stored) if stored else e  # mostly pin what is stored, so pins bite
            if store.pin(e.key):
                pinned[e.key] = {i for i, t in enumerate(tiers) if t.name in store.tiers_of(e.key)}
            pins[e.key] = pins.get(e.key, 0) + 1
        elif op < 0.9 and pins:
            key = rng.choice(sorted(pins))
            store.unpin(key)
            pins[key] -= 1
            if not pins[key]:
                del pins[key]
                pinned.pop(key, None)
        else:
            store.drain()
        check_store(store, blobs, pinned)
    for key, count in pins.items():
        for _ in range(count):
            store.unpin(key)
    store.drain()
    check_store(store, blobs, {})
    big = store_entry(99, 5, 0)
    put(store, big, b"x" * 700)  # with nothing pinned, even a last-tier-sized entry fits
    store.drain()
    check_store(store, {**blobs, big.key: b"x" * 700}, {})


@pytest.mark.parametrize("name", POLICIES)
@pytest.mark.parametrize("pin", [True, False])
def test_an_entry_pinned_while_read_survives_pressure(name, pin):
    """The engine's pattern: pin, read and decode, unpin; a flood of inserts meanwhile evicts others.

    The flood's entries are deeper and newer than the read one, so every
    policy would evict it first (the run with ``pin=False`` shows it).
    """
    store = TieredStore([MemoryTier(300)], policy=name, background=False)
    hot = store_entry(1, 5, 100)
    put(store, hot, b"h" * 100)
    if pin:
        assert store.pin(hot.key)
    for n in range(2, 30):
        put(store, store_entry(n, 25, 100), bytes([n]) * 100)
        assert store.tiers[0].bytes_used <= 300
    assert store.contains(hot.key) is pin
    if pin:
        assert store.get(hot.key) == b"h" * 100
        store.unpin(hot.key)
        assert not store.is_pinned(hot.key)


@pytest.mark.parametrize("name", POLICIES)
def test_only_pinned_entries_left_refuses_the_put(name):
    store = TieredStore([MemoryTier(300)], policy=name, background=False)
    held = [store_entry(n, 10, 100) for n in range(3)]
    for e in held:
        put(store, e, b"p" * 100)
        store.pin(e.key)
    newcomer = store_entry(9, 10, 100)
    with pytest.raises(CapacityError):
        put(store, newcomer, b"n" * 100)
    assert not store.contains(newcomer.key)
    assert all(store.get(e.key) == b"p" * 100 for e in held)
    store.unpin(held[1].key)
    put(store, newcomer, b"n" * 100)
    assert not store.contains(held[1].key)
    assert {store.contains(e.key) for e in (held[0], held[2], newcomer)} == {True}
