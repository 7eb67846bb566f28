"""Build tiers from `TierConfig`s: one registry keyed by tier kind.

Tier modules are imported only when their kind is configured, so a machine
without redis-py or CUDA never imports what it does not use. A configured
tier that cannot be built raises; it is never silently dropped.
"""

from __future__ import annotations

from collections.abc import Callable

from flexcache.config import TierConfig
from flexcache.engine.store.base import ChecksummedTier, Tier


def _memory(config: TierConfig, cache_name: str) -> Tier:
    from flexcache.engine.store.memory import MemoryTier

    return MemoryTier(config.capacity_bytes)


def _host(config: TierConfig, cache_name: str) -> Tier:
    from flexcache.engine.store.host import HostTier

    return HostTier(config.capacity_bytes)


def _hbm(config: TierConfig, cache_name: str) -> Tier:
    from flexcache.engine.store.hbm import HBMTier

    return HBMTier(config.capacity_bytes)


def _disk(config: TierConfig, cache_name: str) -> Tier:
    from flexcache.engine.store.disk import DiskTier

    return DiskTier(config.path, config.capacity_bytes)


def _redis(config: TierConfig, cache_name: str) -> Tier:
    from flexcache.engine.store.redis import RedisTier

    return RedisTier(config.url, config.capacity_bytes, cache_name=cache_name)


TIER_BUILDERS: dict[str, Callable[[TierConfig, str], Tier]] = {
    "memory": _memory, "host": _host, "hbm": _hbm, "disk": _disk, "redis": _redis,
}


def build_tier(config: TierConfig, *, cache_name: str = "flexcache") -> Tier:
    """The tier `config` describes; persistent and shared tiers get checksummed frames.

    Raises:
        BackendUnavailableError / TierUnavailableError: the tier cannot run here
            (no CUDA for hbm, an unwritable disk path, a missing redis client).
    """
    tier = TIER_BUILDERS[config.kind](config, cache_name)
    # Bytes that leave process memory can come back damaged; frame them with a CRC.
    return ChecksummedTier(tier) if tier.persistent or tier.shared else tier
