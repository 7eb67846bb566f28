"""Storage tiers for encoded latent blobs."""

from flexcache.engine.store.base import Tier, TierStats
from flexcache.engine.store.memory import MemoryTier

__all__ = ["Tier", "TierStats", "MemoryTier"]
