"""Typed tier configs: one class per kind, chosen by `kind`, each field validated, dicts and YAML round trips."""

from __future__ import annotations

import pytest

from flexcache.config import (
    TIER_CONFIGS,
    CacheConfig,
    DiskTierConfig,
    HBMTierConfig,
    HostTierConfig,
    MemoryTierConfig,
    RedisTierConfig,
    StoreConfig,
    TierConfig,
)
from flexcache.core.names import TIER_KINDS
from flexcache.errors import ConfigError

STACK = [
    {"kind": "hbm", "capacity_bytes": "8GiB", "device": "cuda:1"},
    {"kind": "host", "capacity_bytes": "64GiB", "slab_bytes": "4MiB", "pinned": "never"},
    {"kind": "disk", "capacity_bytes": "2TB", "path": "/nvme/flexcache"},
    {"kind": "redis", "capacity_bytes": "256GiB", "url": "redis://cache:6379/0", "prefix": "prod",
     "socket_timeout_s": 1.0, "breaker_failures": 5, "breaker_cooldown_s": 2.5, "cluster": True,
     "events_maxlen": 1000},
]


def test_each_kind_gets_its_own_class_with_its_own_fields():
    store = StoreConfig(tiers=STACK)
    hbm, host, disk, redis = store.tiers
    assert isinstance(hbm, HBMTierConfig) and hbm.device == "cuda:1" and hbm.capacity_bytes == 8 << 30
    assert isinstance(host, HostTierConfig) and (host.slab_bytes, host.pinned) == (4 << 20, "never")
    assert isinstance(disk, DiskTierConfig) and disk.path == "/nvme/flexcache"
    assert isinstance(redis, RedisTierConfig) and (redis.prefix, redis.socket_timeout_s, redis.breaker_failures,
                                                   redis.breaker_cooldown_s, redis.cluster, redis.events_maxlen) == \
        ("prod", 1.0, 5, 2.5, True, 1000)
    assert set(TIER_CONFIGS) == set(TIER_KINDS)


def test_tier_configs_round_trip_through_dicts_yaml_and_the_environment():
    config = CacheConfig.from_dict({"store": {"tiers": STACK}})
    assert CacheConfig.from_dict(config.to_dict()) == config
    assert CacheConfig.from_yaml(config.to_yaml()) == config
    assert [tier["kind"] for tier in config.to_dict()["store"]["tiers"]] == ["hbm", "host", "disk", "redis"]
    environ = {"FLEXCACHE_STORE__TIERS": "[{kind: memory, capacity_bytes: 1GiB}, {kind: disk, "
                                         "capacity_bytes: 10GB, path: /tmp/fc}]"}
    overridden = CacheConfig().with_env_overrides(environ)
    assert overridden.store.tiers == (MemoryTierConfig(1 << 30), DiskTierConfig(10 ** 10, path="/tmp/fc"))


def test_a_flat_tier_config_of_flexcache_0_1_is_read():
    # 0.1 wrote every tier with path and url fields, empty where the kind has none.
    old = {"store": {"tiers": [{"kind": "memory", "capacity_bytes": 1024, "path": "", "url": ""},
                               {"kind": "disk", "capacity_bytes": 4096, "path": "/d", "url": ""}]}}
    assert CacheConfig.from_dict(old).store.tiers == (MemoryTierConfig(1024), DiskTierConfig(4096, path="/d"))


@pytest.mark.parametrize("tier, message", [
    ({"capacity_bytes": 1}, "kind must be one of"),
    ({"kind": "tape", "capacity_bytes": 1}, "kind must be one of"),
    ({"kind": "memory", "capacity_bytes": 1, "path": "/x"}, "unknown config key"),
    ({"kind": "memory", "capacity_bytes": 1, "slab_bytes": 4096}, "unknown config key"),
    ({"kind": "memory", "capacity_bytes": 0}, "capacity_bytes must be > 0"),
    ({"kind": "host", "capacity_bytes": 1, "pinned": "yes"}, "pinned must be one of"),
    ({"kind": "host", "capacity_bytes": 1, "slab_bytes": "lots"}, "slab_bytes"),
    ({"kind": "hbm", "capacity_bytes": 1, "device": "cpu"}, "cuda"),
    ({"kind": "disk", "capacity_bytes": 1}, "path"),
    ({"kind": "disk", "capacity_bytes": 1, "path": ""}, "a disk tier needs path"),
    ({"kind": "redis", "capacity_bytes": 1, "url": "http://x"}, "redis://"),
    ({"kind": "redis", "capacity_bytes": 1, "url": "redis://x", "socket_timeout_s": 0}, "socket_timeout_s"),
    ({"kind": "redis", "capacity_bytes": 1, "url": "redis://x", "prefix": "a b"}, "prefix"),
    ({"kind": "redis", "capacity_bytes": 1, "url": "redis://x", "breaker_failures": 0}, "breaker_failures"),
])
def test_bad_tier_configs_say_what_is_wrong(tier, message):
    with pytest.raises(ConfigError, match=message):
        CacheConfig.from_dict({"store": {"tiers": [tier]}})


def test_the_base_class_is_not_a_tier_and_one_kind_is_listed_once():
    with pytest.raises(ConfigError, match="base class"):
        TierConfig(capacity_bytes=1)
    with pytest.raises(ConfigError, match="names a kind twice"):
        StoreConfig(tiers=[MemoryTierConfig(1), MemoryTierConfig(2)])


def test_the_shorthand_makes_one_typed_tier():
    assert StoreConfig(tier="host", capacity_bytes="1GiB").effective_tiers() == (HostTierConfig(1 << 30),)
