"""Tests for flexcache.engine.policy: LRU and NIRVANA's LCBFU."""

from __future__ import annotations

import pytest

from flexcache.engine.entry import CacheEntry
from flexcache.engine.policy import LCBFUPolicy, LRUPolicy, ReplacementPolicy, build_policy
from flexcache.errors import ConfigError, FlexCacheError

POLICIES = ["lru", "lcbfu"]


def entry(record_id: int, step: int = 5, hits: int = 0, num_steps: int = 50) -> CacheEntry:
    e = CacheEntry(record_id=record_id, step=step, num_steps=num_steps, nbytes=1024, tier="memory")
    e.hits = hits
    return e


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
        deep.hits += 1  # ...but hit often: the engine bumps hits, then reports the access
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
