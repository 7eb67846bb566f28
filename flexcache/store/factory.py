"""Build tiers from their typed configs: one registry keyed by config type.

Tier modules are imported only when their kind is configured, so a machine
without redis-py or CUDA never imports what it does not use. A configured
tier that cannot be built raises; it is never silently dropped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from flexcache.core.names import TIER_KINDS
from flexcache.core.tiers import (
    DiskTierConfig,
    HBMTierConfig,
    HostTierConfig,
    MemoryTierConfig,
    RedisTierConfig,
    TierConfig,
)
from flexcache.store.base import Tier
from flexcache.store.integrity import checked

C = TypeVar("C", bound=TierConfig)
TIER_BUILDERS: dict[type[TierConfig], Callable[[TierConfig, str], Tier]] = {}


def register_tier(config_type: type[C]) -> Callable[[Callable[[C, str], Tier]], Callable[[C, str], Tier]]:
    """Register the builder of the tier `config_type` describes (``builder(config, cache_name)``)."""
    def register(builder: Callable[[C, str], Tier]) -> Callable[[C, str], Tier]:
        TIER_BUILDERS[config_type] = builder  # type: ignore[assignment]
        return builder
    return register


@register_tier(MemoryTierConfig)
def _memory(config: MemoryTierConfig, cache_name: str) -> Tier:
    from flexcache.store.memory import MemoryTier

    return MemoryTier(config.capacity_bytes)


@register_tier(HostTierConfig)
def _host(config: HostTierConfig, cache_name: str) -> Tier:
    from flexcache.store.host import HostTier

    pinned = {"auto": None, "required": True, "never": False}[config.pinned]
    return HostTier(config.capacity_bytes, pinned=pinned, slab_bytes=config.slab_bytes)


@register_tier(HBMTierConfig)
def _hbm(config: HBMTierConfig, cache_name: str) -> Tier:
    from flexcache.store.hbm import HBMTier

    return HBMTier(config.capacity_bytes, device=config.device)


@register_tier(DiskTierConfig)
def _disk(config: DiskTierConfig, cache_name: str) -> Tier:
    from flexcache.store.disk import DiskTier

    return DiskTier(config.path, config.capacity_bytes)


@register_tier(RedisTierConfig)
def _redis(config: RedisTierConfig, cache_name: str) -> Tier:
    from flexcache.store.redis import RedisTier

    return RedisTier(config.url, config.capacity_bytes, cache_name=cache_name, prefix=config.prefix,
                     socket_timeout=config.socket_timeout_s, breaker_failures=config.breaker_failures,
                     breaker_cooldown_s=config.breaker_cooldown_s, cluster=config.cluster,
                     events_maxlen=config.events_maxlen)


def build_tier(config: TierConfig, *, cache_name: str = "flexcache") -> Tier:
    """The tier `config` describes; persistent and shared tiers get the integrity layer.

    Raises:
        BackendUnavailableError / TierUnavailableError: the tier cannot run here
            (no CUDA for hbm, an unwritable disk path, a missing redis client).

    Example:
        >>> build_tier(MemoryTierConfig(capacity_bytes="1MiB")).capacity_bytes
        1048576
    """
    # Bytes that leave process memory can come back damaged; frame them with a CRC.
    return checked(TIER_BUILDERS[type(config)](config, cache_name))


if sorted(config.kind for config in TIER_BUILDERS) != sorted(TIER_KINDS):  # pragma: no cover - a programming error
    raise ImportError("store.factory builds a different set of tier kinds than core.names.TIER_KINDS lists")
