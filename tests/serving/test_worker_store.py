"""`flexcache serve` honours the config's store: each worker's tiers, the shared Redis, a disk tier per worker."""

from __future__ import annotations

import pytest

from flexcache import CacheConfig
from flexcache.core import ConfigError
from flexcache.serving import worker_cache_config, worker_store

REDIS = {"kind": "redis", "capacity_bytes": 1 << 30, "url": "redis://cache.internal:6379/2", "prefix": "prod",
         "breaker_failures": 7}


def configured(*tiers) -> dict:
    return CacheConfig.from_dict({"name": "served", "store": {"tiers": list(tiers)}}).to_dict()


def kinds(cache: dict) -> list[tuple[str, int]]:
    return [(tier["kind"], tier["capacity_bytes"]) for tier in cache["store"]["tiers"]]


def test_the_configs_redis_tier_is_the_shared_one_with_its_url_prefix_capacity_and_settings():
    def no_local_server():
        raise AssertionError("a local redis-server was started although the config names a Redis")

    cache = worker_cache_config(configured({"kind": "memory", "capacity_bytes": "64MiB"}, REDIS), no_local_server,
                                workers=3)
    assert kinds(cache) == [("memory", 64 << 20), ("redis", 1 << 30)]
    redis = cache["store"]["tiers"][1]
    assert (redis["url"], redis["prefix"], redis["breaker_failures"]) == (REDIS["url"], "prod", 7)
    assert cache["name"] == "served"
    CacheConfig.from_dict(cache)  # what every worker builds


def test_arguments_that_agree_with_the_config_are_accepted():
    cache = worker_cache_config(configured({"kind": "memory", "capacity_bytes": 4096}, REDIS), REDIS["url"],
                                memory_bytes=4096, redis_bytes=1 << 30, redis_prefix="prod")
    assert kinds(cache) == [("memory", 4096), ("redis", 1 << 30)]


@pytest.mark.parametrize("argument, message", [
    ({"redis_url": "redis://127.0.0.1:6379/0"}, "--redis-url 'redis://127.0.0.1:6379/0' disagrees with the "
                                                "config's redis tier ('redis://cache.internal:6379/2')"),
    ({"redis_bytes": 2 << 30}, "--redis-capacity"),
    ({"redis_prefix": "staging"}, "the redis prefix 'staging' disagrees"),
    ({"memory_bytes": 1 << 30}, "--memory 1073741824 bytes disagrees with the config's store.tiers"),
])
def test_an_argument_that_disagrees_with_the_config_is_refused_with_what_to_do(argument, message):
    base = configured({"kind": "memory", "capacity_bytes": 4096}, REDIS)
    with pytest.raises(ConfigError, match="drop") as refused:
        worker_cache_config(base, **{"redis_url": None, **argument})
    assert message in str(refused.value)


def test_without_a_redis_tier_one_is_added_last_and_the_local_server_starts_only_then():
    started = []

    def local_server():
        started.append(True)
        return "redis://127.0.0.1:7001/0"

    cache = worker_cache_config(configured({"kind": "host", "capacity_bytes": "1GiB"}), local_server,
                                redis_bytes=8 << 30)
    assert started == [True]
    assert kinds(cache) == [("host", 1 << 30), ("redis", 8 << 30)]
    assert cache["store"]["tiers"][1]["url"] == "redis://127.0.0.1:7001/0"
    with pytest.raises(ConfigError, match="needs a shared Redis"):
        worker_cache_config(configured({"kind": "memory", "capacity_bytes": 4096}), None)


def test_the_shorthand_is_the_local_tier_and_memory_sets_its_capacity():
    shorthand = CacheConfig.from_dict({"store": {"tier": "host", "capacity_bytes": "8GiB"}}).to_dict()
    assert kinds(worker_cache_config(shorthand, "redis://r:6379/0")) == [("host", 8 << 30), ("redis", 16 << 30)]
    assert kinds(worker_cache_config(shorthand, "redis://r:6379/0", memory_bytes=1 << 20))[0] == ("host", 1 << 20)


def test_a_disk_tier_is_shared_out_one_directory_per_worker_slot(tmp_path):
    base = configured({"kind": "memory", "capacity_bytes": 4096},
                      {"kind": "disk", "capacity_bytes": 3000, "path": str(tmp_path)}, REDIS)
    cache = worker_cache_config(base, None, workers=3)
    assert kinds(cache) == [("memory", 4096), ("disk", 1000), ("redis", 1 << 30)]  # the directory keeps to 3000
    paths = [worker_store(cache, slot)["store"]["tiers"][1]["path"] for slot in range(3)]
    assert paths == [str(tmp_path / f"worker-{slot}") for slot in range(3)]
    assert worker_store(cache, 0)["store"]["tiers"][0] == cache["store"]["tiers"][0]  # other tiers untouched
    with pytest.raises(ConfigError, match="cannot be shared by 4000 workers"):
        worker_cache_config(base, None, workers=4000)
