"""The cache engine: the `FlexCache` facade over embedding, the vector index, prompt
parts, the planner, the records of what is cached, and sharing between processes."""

from flexcache.engine.cache import DEFAULT_TENANT, FlexCache
from flexcache.engine.embedder import (
    SentenceTransformerEmbedder,
    TextEmbedder,
    build_embedder,
    validate_prompts,
)
from flexcache.engine.guard import SharingGuard
from flexcache.engine.approximate_index import FaissApproximateIndex, build_approximate_index
from flexcache.engine.index import (
    MISSING_ID,
    FaissFlatIndex,
    PartitionedIndex,
    TorchFlatIndex,
    build_index,
)
from flexcache.engine.inspector import disk_entries, format_inspection, inspect_entries, redis_entries
from flexcache.engine.metrics import CacheCollector, start_metrics_server
from flexcache.engine.planner import Plan, SimilarityPlanner, checkpoint_steps
from flexcache.engine.records import (
    CacheEntry,
    GenerationSignature,
    PromptRecord,
    SolverState,
)
from flexcache.engine.region_hits import HitStart, region_start
from flexcache.engine.regions import decode_mask, encode_mask, object_cells
from flexcache.engine.solver_bundle import CodedState, decode_state, encode_bundle, encode_state, split_bundle
from flexcache.engine.splitter import (
    PromptParts,
    normalise,
    parts_from,
    split_prompt,
    words,
)

__all__ = [
    "CacheEntry", "DEFAULT_TENANT", "HitStart", "decode_mask", "encode_mask", "object_cells", "region_start", "FlexCache", "GenerationSignature", "MISSING_ID", "PartitionedIndex", "Plan",
    "PromptParts", "PromptRecord", "SentenceTransformerEmbedder", "SolverState", "CodedState", "decode_state", "encode_bundle", "encode_state", "split_bundle", "SimilarityPlanner", "TextEmbedder",
    "CacheCollector", "start_metrics_server", "SharingGuard", "disk_entries", "format_inspection", "inspect_entries", "redis_entries",
    "FaissApproximateIndex", "FaissFlatIndex", "build_approximate_index",
    "TorchFlatIndex", "build_embedder", "build_index", "checkpoint_steps", "normalise", "parts_from", "split_prompt", "validate_prompts", "words",
]
