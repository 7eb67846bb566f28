"""The tiered store's records of residency: which tiers hold which version of a key.

Only `TieredStore` reads or writes these, always under its lock: a key's
version (its committed copies, the copies leaving, its pending moves) and,
per tier, the slot that keeps the tier's policy and the capacity charged to it
beside the tier itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flexcache.store.base import Tier
from flexcache.store.policy import RankedEntry, ReplacementPolicy


@dataclass(eq=False)
class Version(RankedEntry):
    """One version of a key: what the store knows of it (the policies rank these)."""

    meta: bytes = b""
    token: Any = None
    tiers: set[int] = field(default_factory=set)  # committed copies, charged to their slot
    leaving: set[int] = field(default_factory=set)  # copies being removed: no longer charged, still readable
    pending: int = 0  # background moves in flight (write-behind, promotion, demotion)


class Slot:
    """One tier with the bookkeeping the store keeps beside it."""

    def __init__(self, index: int, tier: Tier, policy: ReplacementPolicy) -> None:
        self.index, self.tier, self.policy = index, tier, policy
        self.charged = 0  # capacity charged for the committed copies (their footprints)
        self.stored = 0  # blob bytes of the committed copies
        self.reserved = 0  # footprints of writes in flight
        self.busy: set[str] = set()  # keys with a call in flight in this tier
        self.refusing = False  # the last write failed (one warning per outage)

    def footprint(self, nbytes: int) -> int:
        return self.tier.footprint(nbytes)

    def free(self) -> int:
        return self.tier.capacity_bytes - self.charged - self.reserved


class Excluding:
    """The keys a victim search must not pick: one key plus the pinned ones (a live view, no copy)."""

    __slots__ = ("_key", "_pins")

    def __init__(self, key: str, pins: dict[str, int]) -> None:
        self._key, self._pins = key, pins

    def __contains__(self, key: object) -> bool:
        return key == self._key or key in self._pins

    def __bool__(self) -> bool:
        return True
