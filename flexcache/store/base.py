"""The tier interface every store level implements (LMCache-style, small).

A tier maps string keys to immutable blobs plus a small metadata record (the
entry's description, so a persistent tier can rebuild the index after a
restart). A blob is bytes, or a `DeviceBlob` (a uint8 tensor on a device):
a device-resident tier keeps device blobs as they are and hands them back for
a device with no host copy; every other tier stores host bytes. Capacity and
eviction decisions belong to the tiered store and its replacement policy; a
tier reports how many blob bytes it holds and what a blob costs its capacity
(`footprint`). Batched calls have per-key defaults that a remote tier can
override with one round trip.

Keys are ``<tenant>.<hex digest>`` (`flexcache.core.types.KEY_PATTERN`), so
every tier can use them as file names or key suffixes.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from flexcache.core.blob import Blob


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
    corrupt: int = 0
    errors: int = 0
    latency_ms: dict[str, dict[str, float]] = field(default_factory=dict)


class Tier(abc.ABC):
    """One storage level.

    Capability flags let the tiered store reason about tiers without
    isinstance: `persistent` (survives a restart), `shared` (seen by other
    processes), `device_resident` (blobs live in GPU memory).

    Contract: `put` is atomic (afterwards `get` returns the whole blob or, if
    it raised, the previous state); `get` never returns a partial blob;
    `bytes_used` is the sum of the lengths of the blobs held (metadata not
    counted).
    """

    name: str = "tier"
    persistent: bool = False
    shared: bool = False
    device_resident: bool = False

    def __init__(self, capacity_bytes: int) -> None:
        self.capacity_bytes = capacity_bytes

    @abc.abstractmethod
    def put(self, key: str, blob: Blob, meta: bytes = b"") -> None:
        """Store `blob` (and its metadata) under `key`, replacing what was there."""

    @abc.abstractmethod
    def get(self, key: str, device: Any = None) -> Blob | None:
        """The blob under `key`, or None when absent.

        Args:
            device: where the caller will use it. A tier that can hand the blob
                over on that device (as a `DeviceBlob`) may; host bytes are
                always a valid answer. None: host bytes.
        """

    @abc.abstractmethod
    def get_meta(self, key: str) -> bytes | None:
        """The metadata stored with `key`, or None when absent."""

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

    def footprint(self, nbytes: int) -> int:
        """Capacity a blob of `nbytes` takes here (its length, plus any framing or rounding)."""
        return nbytes

    def scan(self) -> Iterator[tuple[str, bytes]]:
        """``(key, meta)`` of every committed entry: how a restarted cache finds them."""
        for key in self.keys():
            meta = self.get_meta(key)
            if meta is not None:
                yield key, meta

    def quarantine(self, key: str, expected: Any = None) -> None:
        """Take a blob that failed its checksum out of service (default: remove it).

        Args:
            expected: the damaged blob as the caller read it; when given, a
                tier leaves a blob alone that a put replaced meanwhile.
        """
        if expected is None or self.get(key) == expected:
            self.remove(key)

    def close(self) -> None:
        """Release connections, files or memory pools."""

    def put_many(self, items: Iterable[tuple[str, Blob] | tuple[str, Blob, bytes]]) -> None:
        """Items are ``(key, blob)`` or ``(key, blob, meta)``."""
        for item in items:
            self.put(*item)

    def get_many(self, keys: Iterable[str]) -> list[Blob | None]:
        return [self.get(key) for key in keys]

    def remove_many(self, keys: Iterable[str]) -> int:
        return sum(self.remove(key) for key in keys)

    def fits(self, nbytes: int) -> bool:
        """Whether a blob of `nbytes` more would fit without evicting anything."""
        return self.bytes_used + self.footprint(nbytes) <= self.capacity_bytes
