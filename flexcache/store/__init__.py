"""Where encoded blobs live: the `Tier` interface, the tiers (memory, pinned host, HBM,
disk, Redis), the integrity layer for tiers that leave process memory, replacement
policies, and `TieredStore`, the one owner of which tier holds which entry."""

from flexcache.store.base import Tier, TierStats
from flexcache.store.factory import build_tier
from flexcache.store.integrity import ChecksummedTier, frame, unframe
from flexcache.store.memory import MemoryTier
from flexcache.store.policy import (
    POLICY_REGISTRY,
    FlexCachePolicy,
    LCBFUPolicy,
    LRUPolicy,
    ReplacementPolicy,
    build_policy,
)
from flexcache.store.tiered import TieredStore

__all__ = [
    "ChecksummedTier", "frame", "unframe", "FlexCachePolicy", "LCBFUPolicy", "LRUPolicy", "MemoryTier", "POLICY_REGISTRY",
    "ReplacementPolicy", "Tier", "TierStats", "TieredStore", "build_policy", "build_tier",
]
