"""The tier interface every store level implements (LMCache-style, small).

A tier maps string keys to immutable blobs (bytes-like). Capacity and
eviction decisions belong to the engine and its replacement policy; a tier
only reports how many bytes it holds. Batched calls have per-key defaults
that a remote tier can override with one round trip.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Iterator
from dataclasses import dataclass


@dataclass
class TierStats:
    name: str
    entries: int
    bytes_used: int
    capacity_bytes: int
    puts: int = 0
    gets: int = 0
    get_misses: int = 0
    removes: int = 0


class Tier(abc.ABC):
    """One storage level.

    Capability flags let the engine reason about tiers without isinstance:
    `persistent` (survives a restart), `shared` (seen by other processes),
    `device_resident` (blobs live in GPU memory).
    """

    name: str = "tier"
    persistent: bool = False
    shared: bool = False
    device_resident: bool = False

    def __init__(self, capacity_bytes: int) -> None:
        self.capacity_bytes = capacity_bytes

    @abc.abstractmethod
    def put(self, key: str, blob: bytes) -> None:
        """Store `blob` under `key`, replacing any blob there."""

    @abc.abstractmethod
    def get(self, key: str) -> bytes | None:
        """The blob under `key`, or None when absent."""

    @abc.abstractmethod
    def contains(self, key: str) -> bool: ...

    @abc.abstractmethod
    def remove(self, key: str) -> bool:
        """Remove `key`; True when it was present."""

    @abc.abstractmethod
    def keys(self) -> Iterator[str]: ...

    @property
    @abc.abstractmethod
    def bytes_used(self) -> int: ...

    @abc.abstractmethod
    def stats(self) -> TierStats: ...

    def put_many(self, items: Iterable[tuple[str, bytes]]) -> None:
        for key, blob in items:
            self.put(key, blob)

    def get_many(self, keys: Iterable[str]) -> list[bytes | None]:
        return [self.get(key) for key in keys]

    def remove_many(self, keys: Iterable[str]) -> int:
        return sum(self.remove(key) for key in keys)

    def fits(self, nbytes: int) -> bool:
        """Whether `nbytes` more would fit without evicting anything."""
        return self.bytes_used + nbytes <= self.capacity_bytes
