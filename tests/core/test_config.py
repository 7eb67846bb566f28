"""Tests for flexcache.config: validation, round trips, env overrides, loading."""

from __future__ import annotations

import copy
import dataclasses

import pytest

from flexcache.config import (
    DEFAULT_CHECKPOINT_FRACTIONS,
    NIRVANA_SIMILARITY_TABLE,
    TOYWORLD_SIMILARITY_TABLE,
    USE_SIMILARITY_TABLE,
    CacheConfig,
    EmbedderConfig,
    IndexConfig,
    PlannerConfig,
    StoreConfig,
    parse_bytes,
)
from flexcache.errors import ConfigError, FlexCacheError


def _custom_config() -> CacheConfig:
    return CacheConfig.from_dict({
        "name": "tenant-a.cache_1",
        "policy": "lru",
        "embedder": {"device": "cpu", "batch_size": 7, "model": "/models/minilm"},
        "index": {"backend": "torch", "device": "cpu", "candidates": 9, "compact_fraction": 0.5},
        "planner": {
            "similarity_table": [[0.6, 0.15], [0.8, 0.35]],
            "checkpoint_fractions": [0.25, 0.5, 0.75],
        },
        "store": {"capacity_bytes": "3MiB"},
    })


# -- defaults ----------------------------------------------------------------


def test_defaults_are_valid_and_documented_values():
    cfg = CacheConfig()
    assert cfg.name == "flexcache"
    assert cfg.policy == "lcbfu"
    assert cfg.codec.name == "flexcache" and cfg.codec.sigma_budget == 0.02
    assert cfg.embedder == EmbedderConfig()
    assert cfg.index.backend == "auto"
    assert cfg.index.candidates == 4
    assert cfg.embedder.model == "multilingual"
    # The toy world's calibration for the default (multilingual) embedder.
    assert cfg.planner.similarity_table == USE_SIMILARITY_TABLE
    assert CacheConfig.from_dict({"planner": {"similarity_table": "nirvana"}}).planner.similarity_table == (
        NIRVANA_SIMILARITY_TABLE)
    assert cfg.planner.checkpoint_fractions == DEFAULT_CHECKPOINT_FRACTIONS
    assert cfg.store.tier == "memory"
    assert cfg.store.capacity_bytes == 2 * 2**30


def test_from_empty_dict_equals_defaults():
    assert CacheConfig.from_dict({}) == CacheConfig()
    assert CacheConfig.from_yaml("") == CacheConfig()


# -- round trips -------------------------------------------------------------


@pytest.mark.parametrize("cfg", [CacheConfig(), _custom_config()], ids=["default", "custom"])
def test_dict_round_trip(cfg):
    data = cfg.to_dict()
    assert CacheConfig.from_dict(data) == cfg
    # Plain data only: lists and scalars, no tuples or dataclasses.
    assert isinstance(data["planner"]["similarity_table"], list)
    assert all(isinstance(row, list) for row in data["planner"]["similarity_table"])
    assert isinstance(data["store"], dict)


@pytest.mark.parametrize("cfg", [CacheConfig(), _custom_config()], ids=["default", "custom"])
def test_yaml_round_trip(cfg):
    text = cfg.to_yaml()
    assert isinstance(text, str)
    assert CacheConfig.from_yaml(text) == cfg


def test_custom_values_survive_round_trip():
    cfg = _custom_config()
    back = CacheConfig.from_yaml(cfg.to_yaml())
    assert back.store.capacity_bytes == 3 * 2**20
    assert back.planner.similarity_table == ((0.6, 0.15), (0.8, 0.35))
    assert back.planner.checkpoint_fractions == (0.25, 0.5, 0.75)
    assert back.index.compact_fraction == 0.5
    assert back.embedder.batch_size == 7


def test_from_dict_coerces_lists_to_tuples_and_ints_to_floats():
    cfg = CacheConfig.from_dict({"planner": {"similarity_table": [[0, 1 / 4]]}, "index": {"compact_fraction": 1}})
    assert cfg.planner.similarity_table == ((0.0, 0.25),)
    assert isinstance(cfg.planner.similarity_table[0], tuple)
    assert isinstance(cfg.planner.similarity_table[0][0], float)
    assert isinstance(cfg.index.compact_fraction, float)


# -- validation --------------------------------------------------------------


def _config_error(data) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        CacheConfig.from_dict(data)
    assert isinstance(info.value, FlexCacheError)
    assert isinstance(info.value, ValueError)
    return info.value


@pytest.mark.parametrize(
    ("data", "field"),
    [
        # unknown keys
        ({"bogus": 1}, "bogus"),
        ({"store": {"capacity": 10}}, "store.capacity"),
        ({"planner": {"table": []}}, "planner.table"),
        # wrong types
        ({"policy": 3}, "policy"),
        ({"name": 12}, "name"),
        ({"embedder": {"batch_size": "8"}}, "embedder.batch_size"),
        ({"embedder": {"batch_size": True}}, "embedder.batch_size"),
        ({"index": {"candidates": 2.0}}, "index.candidates"),
        ({"index": {"compact_fraction": "0.5"}}, "index.compact_fraction"),
        ({"index": {"compact_fraction": False}}, "index.compact_fraction"),
        ({"store": 5}, "store"),
        ({"store": {"capacity_bytes": "lots"}}, "store.capacity_bytes"),
        ({"planner": {"similarity_table": 0.7}}, "planner.similarity_table"),
        ({"planner": {"similarity_table": [0.7, 0.1]}}, "planner.similarity_table"),
        ({"planner": {"similarity_table": [[0.7, 0.1, 0.2]]}}, "planner.similarity_table"),
        ({"planner": {"similarity_table": [[0.7, "x"]]}}, "planner.similarity_table"),
        ({"planner": {"checkpoint_fractions": "0.5"}}, "planner.checkpoint_fractions"),
        # out of range / unknown choices
        ({"policy": "fifo"}, "policy"),
        ({"codec": "zstd"}, "codec"),
        ({"codec": {"name": "zstd"}}, "codec.name"),
        ({"codec": {"bit_widths": [8, 4]}}, "codec.bit_widths"),
        ({"codec": {"block_size": 100}}, "codec.block_size"),
        ({"codec": {"lossless": "brotli"}}, "codec.lossless"),
        ({"codec": {"sigma_budget": 0}}, "codec.sigma_budget"),
        ({"name": "has space"}, "name"),
        ({"name": ""}, "name"),
        ({"store": {"capacity_bytes": -1}}, "store.capacity_bytes"),
        ({"store": {"capacity_bytes": 0}}, "store.capacity_bytes"),
        ({"store": {"tier": "disk"}}, "store.tier"),
        ({"embedder": {"device": "tpu"}}, "embedder.device"),
        ({"embedder": {"batch_size": 0}}, "embedder.batch_size"),
        ({"embedder": {"model": ""}}, "embedder.model"),
        ({"index": {"backend": "annoy"}}, "index.backend"),
        ({"index": {"device": "mps"}}, "index.device"),
        ({"index": {"candidates": 0}}, "index.candidates"),
        ({"index": {"compact_fraction": 0.0}}, "index.compact_fraction"),
        ({"index": {"compact_fraction": 1.5}}, "index.compact_fraction"),
        ({"planner": {"similarity_table": []}}, "planner.similarity_table"),
        ({"planner": {"similarity_table": [[0.9, 0.3], [0.7, 0.4]]}}, "planner.similarity_table"),
        ({"planner": {"similarity_table": [[0.7, 0.1], [0.7, 0.2]]}}, "planner.similarity_table"),
        ({"planner": {"similarity_table": [[0.7, 0.3], [0.9, 0.1]]}}, "planner.similarity_table"),
        ({"planner": {"similarity_table": [[1.5, 0.1]]}}, "planner.similarity_table"),
        ({"planner": {"similarity_table": [[0.7, 0.0]]}}, "planner.similarity_table"),
        ({"planner": {"similarity_table": [[0.7, 1.0]]}}, "planner.similarity_table"),
        ({"planner": {"checkpoint_fractions": []}}, "planner.checkpoint_fractions"),
        ({"planner": {"checkpoint_fractions": [0.0, 0.5]}}, "planner.checkpoint_fractions"),
        ({"planner": {"checkpoint_fractions": [0.5, 1.0]}}, "planner.checkpoint_fractions"),
        ({"planner": {"checkpoint_fractions": [-0.1]}}, "planner.checkpoint_fractions"),
        ({"planner": {"checkpoint_fractions": [0.5, 0.2]}}, "planner.checkpoint_fractions"),
        ({"planner": {"checkpoint_fractions": [0.2, 0.2]}}, "planner.checkpoint_fractions"),
    ],
)
def test_invalid_values_raise_config_error_naming_the_field(data, field):
    error = _config_error(data)
    assert field in str(error)


def test_direct_construction_validates_too():
    with pytest.raises(ConfigError, match="policy"):
        CacheConfig(policy="fifo")
    with pytest.raises(ConfigError, match="store.capacity_bytes"):
        StoreConfig(capacity_bytes=-5)
    with pytest.raises(ConfigError, match="index.compact_fraction"):
        IndexConfig(compact_fraction=0)
    with pytest.raises(ConfigError, match="planner.checkpoint_fractions"):
        PlannerConfig(checkpoint_fractions=(0.5, 1.2))
    assert StoreConfig(capacity_bytes="1KiB").capacity_bytes == 1024


def test_from_yaml_rejects_bad_yaml_and_non_mappings():
    with pytest.raises(ConfigError, match="YAML"):
        CacheConfig.from_yaml("policy: [unclosed")
    with pytest.raises(ConfigError, match="mapping"):
        CacheConfig.from_yaml("- lru\n- lcbfu\n")


# -- parse_bytes ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1024, 1024),
        (0, 0),
        (2048.0, 2048),
        ("1MiB", 2**20),
        ("1mib", 2**20),
        ("1.5GB", 1_500_000_000),
        ("1.5 GB", 1_500_000_000),
        ("  4GiB ", 4 * 2**30),
        ("512", 512),
        ("512B", 512),
        ("2kb", 2000),
        ("2KiB", 2048),
        ("3TB", 3 * 10**12),
        ("1TiB", 2**40),
        (".5MiB", 2**19),
    ],
)
def test_parse_bytes_accepts_sizes(value, expected):
    result = parse_bytes(value)
    assert result == expected
    assert type(result) is int


@pytest.mark.parametrize(
    "value",
    ["", "MiB", "1XB", "one GB", "-1MiB", "1e9", "1.2.3GB", "1 Mi B", True, False, 1.5, None, [1024],
     float("nan"), float("inf")],
)
def test_parse_bytes_rejects_bad_values(value):
    with pytest.raises(ConfigError) as info:
        parse_bytes(value)
    assert isinstance(info.value, FlexCacheError)
    assert "byte size" in str(info.value)


def test_parse_bytes_rejects_negative_int():
    with pytest.raises(ConfigError):
        parse_bytes(-1)


# -- environment overrides ---------------------------------------------------


def test_env_override_top_level_field():
    cfg = CacheConfig().with_env_overrides(environ={"FLEXCACHE_POLICY": "lru"})
    assert cfg.policy == "lru"
    assert cfg.store == StoreConfig()


def test_env_override_nested_byte_size():
    cfg = CacheConfig().with_env_overrides(environ={"FLEXCACHE_STORE__CAPACITY_BYTES": "8GiB"})
    assert cfg.store.capacity_bytes == 8 * 2**30


def test_env_override_nested_list():
    cfg = CacheConfig().with_env_overrides(
        environ={"FLEXCACHE_PLANNER__SIMILARITY_TABLE": "[[0.7, 0.1], [0.9, 0.3]]"}
    )
    assert cfg.planner.similarity_table == ((0.7, 0.1), (0.9, 0.3))
    assert cfg.planner.checkpoint_fractions == DEFAULT_CHECKPOINT_FRACTIONS


def test_env_override_scalars_are_parsed_as_yaml():
    cfg = CacheConfig().with_env_overrides(environ={
        "FLEXCACHE_INDEX__CANDIDATES": "12",
        "FLEXCACHE_INDEX__COMPACT_FRACTION": "0.5",
        "FLEXCACHE_EMBEDDER__DEVICE": "cpu",
    })
    assert cfg.index.candidates == 12
    assert cfg.index.compact_fraction == 0.5
    assert cfg.embedder.device == "cpu"


def test_env_overrides_ignore_unrelated_and_config_variables():
    base = _custom_config()
    cfg = base.with_env_overrides(environ={
        "PATH": "/usr/bin",
        "FLEXCACHEPOLICY": "lru",  # no underscore after the prefix: not ours
        "FLEXCACHE_CONFIG": "/does/not/exist.yaml",
    })
    assert cfg == base


def test_env_overrides_empty_environ_is_identity():
    base = _custom_config()
    assert base.with_env_overrides(environ={}) == base


@pytest.mark.parametrize(
    ("environ", "fragment"),
    [
        ({"FLEXCACHE_BOGUS": "1"}, "bogus"),
        ({"FLEXCACHE_STORE__NOPE": "1"}, "store.nope"),
        ({"FLEXCACHE_NOSECTION__CAPACITY_BYTES": "1"}, "nosection"),
        ({"FLEXCACHE_POLICY__X": "1"}, "policy"),
    ],
)
def test_env_unknown_names_raise(environ, fragment):
    with pytest.raises(ConfigError) as info:
        CacheConfig().with_env_overrides(environ=environ)
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("environ", "field"),
    [
        ({"FLEXCACHE_POLICY": "fifo"}, "policy"),
        ({"FLEXCACHE_STORE__CAPACITY_BYTES": "-3GiB"}, "store.capacity_bytes"),
        ({"FLEXCACHE_STORE__CAPACITY_BYTES": "0"}, "store.capacity_bytes"),
        ({"FLEXCACHE_PLANNER__SIMILARITY_TABLE": "[[0.9, 0.1], [0.7, 0.3]]"}, "planner.similarity_table"),
        ({"FLEXCACHE_PLANNER__SIMILARITY_TABLE": "[[0.7, 0.1"}, "planner.similarity_table"),
        ({"FLEXCACHE_INDEX__CANDIDATES": "many"}, "index.candidates"),
        ({"FLEXCACHE_STORE": "big"}, "store"),
    ],
)
def test_env_invalid_values_raise(environ, field):
    with pytest.raises(ConfigError) as info:
        CacheConfig().with_env_overrides(environ=environ)
    assert field in str(info.value)


# -- load --------------------------------------------------------------------


def test_load_reads_yaml_file(tmp_path):
    path = tmp_path / "flexcache.yaml"
    path.write_text(
        "name: from-file\n"
        "policy: lru\n"
        "store:\n"
        "  capacity_bytes: 64MiB\n"
        "planner:\n"
        "  similarity_table: [[0.8, 0.2]]\n"
    )
    cfg = CacheConfig.load(path, environ={})
    assert cfg.name == "from-file"
    assert cfg.policy == "lru"
    assert cfg.store.capacity_bytes == 64 * 2**20
    assert cfg.planner.similarity_table == ((0.8, 0.2),)
    # Unmentioned fields keep defaults.
    assert cfg.index == IndexConfig()
    assert cfg.embedder == EmbedderConfig()
    # str paths work too.
    assert CacheConfig.load(str(path), environ={}) == cfg


def test_load_env_overrides_beat_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("policy: lru\nindex:\n  candidates: 2\n")
    cfg = CacheConfig.load(path, environ={"FLEXCACHE_POLICY": "lcbfu"})
    assert cfg.policy == "lcbfu"
    assert cfg.index.candidates == 2


def test_load_uses_flexcache_config_variable(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("policy: lru\n")
    cfg = CacheConfig.load(environ={"FLEXCACHE_CONFIG": str(path)})
    assert cfg.policy == "lru"


def test_load_without_path_gives_defaults():
    assert CacheConfig.load(environ={}) == CacheConfig()


def test_load_missing_file_raises(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        CacheConfig.load(missing, environ={})
    assert isinstance(info.value, FlexCacheError)
    assert "nope.yaml" in str(info.value)


def test_load_invalid_file_contents_raise(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("policy: fifo\n")
    with pytest.raises(ConfigError, match="policy"):
        CacheConfig.load(path, environ={})
    path.write_text("store: {capacity_bytes: 1MiB, colour: red}\n")
    with pytest.raises(ConfigError, match="store.colour"):
        CacheConfig.load(path, environ={})


# -- immutability ------------------------------------------------------------


def test_configs_are_frozen():
    cfg = CacheConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.policy = "lru"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.store.capacity_bytes = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.planner.similarity_table = ()  # type: ignore[misc]


def test_env_overrides_do_not_mutate_the_given_config():
    cfg = _custom_config()
    snapshot = copy.deepcopy(cfg)
    changed = cfg.with_env_overrides(environ={
        "FLEXCACHE_POLICY": "lcbfu",
        "FLEXCACHE_STORE__CAPACITY_BYTES": "8GiB",
        "FLEXCACHE_PLANNER__SIMILARITY_TABLE": "[[0.7, 0.1], [0.9, 0.3]]",
    })
    assert changed is not cfg
    assert changed != cfg
    assert cfg == snapshot
    assert cfg.policy == "lru"
    assert cfg.store.capacity_bytes == 3 * 2**20


def test_to_dict_is_a_copy():
    cfg = _custom_config()
    data = cfg.to_dict()
    data["policy"] = "lcbfu"
    data["store"]["capacity_bytes"] = 1
    data["planner"]["similarity_table"][0][0] = -1.0
    assert cfg.policy == "lru"
    assert cfg.store.capacity_bytes == 3 * 2**20
    assert cfg.planner.similarity_table[0] == (0.6, 0.15)


def test_from_dict_does_not_mutate_its_input():
    data = {"policy": "lru", "store": {"capacity_bytes": "1MiB"}, "planner": {"similarity_table": [[0.7, 0.2]]}}
    snapshot = copy.deepcopy(data)
    CacheConfig.from_dict(data)
    assert data == snapshot


def test_replace_makes_a_changed_copy():
    cfg = CacheConfig()
    other = dataclasses.replace(cfg, policy="lru")
    assert other.policy == "lru"
    assert cfg.policy == "lcbfu"
    with pytest.raises(ConfigError):
        dataclasses.replace(cfg, policy="fifo")


# -- planner tables follow the embedder they were calibrated with ---------------------------------


def test_the_shipped_tables_follow_the_configured_embedder():
    from flexcache.config import PART_SIMILARITY_TABLE, REGION_TABLE, USE_PART_SIMILARITY_TABLE, USE_REGION_TABLE

    minilm = CacheConfig.from_dict({"embedder": {"model": "all-MiniLM-L6-v2"}}).planner
    assert (minilm.similarity_table, minilm.part_table, minilm.region_table) == (
        TOYWORLD_SIMILARITY_TABLE, PART_SIMILARITY_TABLE, REGION_TABLE)
    multilingual = CacheConfig().planner
    assert (multilingual.similarity_table, multilingual.part_table, multilingual.region_table) == (
        USE_SIMILARITY_TABLE, USE_PART_SIMILARITY_TABLE, USE_REGION_TABLE)
    # A shipped table named for the other embedder is its calibration: translated too.
    named = CacheConfig.from_dict({"planner": {"similarity_table": "toyworld"}})
    assert named.planner.similarity_table == USE_SIMILARITY_TABLE
    # A round trip keeps them.
    assert CacheConfig.from_dict(CacheConfig.from_dict({"embedder": {"model": "all-MiniLM-L6-v2"}}).to_dict()) == (
        CacheConfig.from_dict({"embedder": {"model": "all-MiniLM-L6-v2"}}))


def test_tables_the_operator_wrote_are_kept_whatever_the_embedder():
    table = [[0.7, 0.1], [0.95, 0.3]]
    for model in ("multilingual", "all-MiniLM-L6-v2"):
        planner = CacheConfig.from_dict({"embedder": {"model": model}, "planner": {"similarity_table": table}}).planner
        assert planner.similarity_table == ((0.7, 0.1), (0.95, 0.3))
    nirvana = CacheConfig.from_dict({"planner": {"similarity_table": "nirvana"}}).planner
    assert nirvana.similarity_table == NIRVANA_SIMILARITY_TABLE


def test_an_embedder_nobody_calibrated_with_the_shipped_tables_warns(tmp_path):
    with pytest.warns(UserWarning, match="no calibrated planner tables"):
        CacheConfig.from_dict({"embedder": {"model": str(tmp_path / "my-model")}})
