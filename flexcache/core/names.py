"""The one list of every name a config can choose: config validation, the registries that
implement the names, the CLI's choices and docs/config.md all read them from here (a test
checks that each registry implements exactly its list)."""

from __future__ import annotations

POLICIES: tuple[str, ...] = ("lru", "lcbfu", "flexcache")  # store.policy.POLICY_REGISTRY
CODECS: tuple[str, ...] = ("flexcache", "lossless")  # codec.latent.CODEC_REGISTRY
BUDGET_MODES: tuple[str, ...] = ("auto", "sigma", "relative_l2")
LOSSLESS_ALGORITHMS: tuple[str, ...] = ("none", "zstd", "deflate", "lz4", "ans", "bitcomp")  # codec.lossless
KERNEL_BACKENDS: tuple[str, ...] = ("auto", "triton", "torch")  # kernels.ops.Backend
INDEX_BACKENDS: tuple[str, ...] = ("auto", "faiss", "torch")  # engine.index.build_index
APPROXIMATE_INDEXES: tuple[str, ...] = ("hnsw", "ivf")  # engine.approximate_index
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")
TIER_KINDS: tuple[str, ...] = ("hbm", "host", "memory", "disk", "redis")  # core.tiers + store.factory
LOOKUPS: tuple[str, ...] = ("full", "decoupled")
REGION_METHODS: tuple[str, ...] = ("restart", "renoise")  # engine.regions
REGION_PARTS: tuple[str, ...] = ("background", "object")  # the part a region rule matches (and keeps)
# Where an error of the cache path can be contained (`FlexCache.count_error`; the diffusers binding):
# the key, the plan, fetching the start, preparing or running the resumed run, capturing checkpoints, the
# object-mask probe, the in-request caches' set-up, inserting, latency padding.
CACHE_ERROR_STAGES: tuple[str, ...] = ("signature", "plan", "fetch", "resume", "run", "capture", "mask_probe",
                                       "in_request", "insert", "padding")

ALL_NAMES: dict[str, tuple[str, ...]] = {
    "policy": POLICIES, "codec.name": CODECS, "codec.budget_mode": BUDGET_MODES,
    "codec.lossless": LOSSLESS_ALGORITHMS, "codec.backend": KERNEL_BACKENDS, "index.backend": INDEX_BACKENDS,
    "index.approximate": APPROXIMATE_INDEXES,
    "device": DEVICES, "store.tiers[].kind": TIER_KINDS, "planner.lookup": LOOKUPS,
    "planner.region_method": REGION_METHODS, "planner.region_table[][0]": REGION_PARTS,
}
