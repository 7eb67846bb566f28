"""The tier interface every store level implements (LMCache-style, small), and
the checksum/metrics wrapper any tier can be put behind.

A tier maps string keys to immutable blobs plus a small metadata record (the
entry's description, so a persistent tier can rebuild the index after a
restart). Capacity and eviction decisions belong to the tiered store and its
replacement policy; a tier only reports how many blob bytes it holds. Batched
calls have per-key defaults that a remote tier can override with one round trip.

Keys are short ASCII strings of ``[A-Za-z0-9_.-]`` (the engine uses stable
hex digests), so every tier can use them as file names or key suffixes.
"""

from __future__ import annotations

import abc
import re
import struct
import threading
import time
import zlib
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from flexcache.errors import CorruptBlobError, InvalidPlanError

KEY_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}\.[0-9a-f]{8,64}")
TENANT_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")


def make_key(tenant: str, digest: str) -> str:
    """The store key of an entry: ``<tenant>.<hex digest>`` (stable across processes)."""
    return check_key(f"{tenant}.{digest}")


def split_key(key: str) -> tuple[str, str]:
    """``(tenant, digest)`` of a store key, so a tier can lay keys out per tenant."""
    tenant, digest = check_key(key).rsplit(".", 1)
    return tenant, digest


def check_key(key: str) -> str:
    if not isinstance(key, str) or KEY_PATTERN.fullmatch(key) is None:
        raise InvalidPlanError(
            f"store keys are '<tenant>.<hex digest>' with tenant of [A-Za-z0-9_-]; got {key!r}"
        )
    return key


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
    def put(self, key: str, blob: bytes, meta: bytes = b"") -> None:
        """Store `blob` (and its metadata) under `key`, replacing what was there."""

    @abc.abstractmethod
    def get(self, key: str) -> bytes | None:
        """The blob under `key`, or None when absent."""

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

    def scan(self) -> Iterator[tuple[str, bytes]]:
        """``(key, meta)`` of every committed entry: how a restarted cache finds them."""
        for key in self.keys():
            meta = self.get_meta(key)
            if meta is not None:
                yield key, meta

    def quarantine(self, key: str) -> None:
        """Take a blob that failed its checksum out of service (default: remove it)."""
        self.remove(key)

    def close(self) -> None:
        """Release connections, files or memory pools."""

    def put_many(self, items: Iterable[tuple[str, bytes] | tuple[str, bytes, bytes]]) -> None:
        """Items are ``(key, blob)`` or ``(key, blob, meta)``."""
        for item in items:
            self.put(*item)

    def get_many(self, keys: Iterable[str]) -> list[bytes | None]:
        return [self.get(key) for key in keys]

    def remove_many(self, keys: Iterable[str]) -> int:
        return sum(self.remove(key) for key in keys)

    def fits(self, nbytes: int) -> bool:
        """Whether `nbytes` more would fit without evicting anything."""
        return self.bytes_used + nbytes <= self.capacity_bytes


# -- checksums and metrics, around any tier -------------------------------------------

_FRAME = struct.Struct("<4sIQ")  # magic, crc32 of the blob, blob length
_FRAME_MAGIC = b"FXTK"
_LATENCY_SAMPLES = 1024


def frame_blob(blob: bytes) -> bytes:
    """Blob with a checksummed frame (what `ChecksummedTier` stores)."""
    return _FRAME.pack(_FRAME_MAGIC, zlib.crc32(blob), len(blob)) + bytes(blob)


def unframe_blob(framed: bytes | bytearray | memoryview) -> bytes:
    """The blob inside a frame; `CorruptBlobError` if the frame or checksum is wrong."""
    view = memoryview(framed)
    if len(view) < _FRAME.size:
        raise CorruptBlobError(f"stored value is {len(view)} bytes, shorter than its frame")
    magic, crc, length = _FRAME.unpack_from(view)
    if magic != _FRAME_MAGIC:
        raise CorruptBlobError("stored value does not start with the tier frame magic")
    body = view[_FRAME.size:]
    if len(body) != length:
        raise CorruptBlobError(f"stored value holds {len(body)} bytes, its frame says {length}")
    if zlib.crc32(body) != crc:
        raise CorruptBlobError("stored value failed its checksum")
    return bytes(body)


class ChecksummedTier(Tier):
    """Wraps any tier: frames every blob with a CRC-32 and times every call.

    A blob that fails its frame check on `get` is counted, quarantined in the
    inner tier and reported as a miss (None); it never reaches a caller.
    Latencies of the last calls are kept per operation for `stats()`.
    """

    def __init__(self, inner: Tier) -> None:
        super().__init__(inner.capacity_bytes)
        self.inner = inner
        self.name = inner.name
        self.persistent, self.shared, self.device_resident = inner.persistent, inner.shared, inner.device_resident
        self._lock = threading.Lock()
        self._corrupt = 0
        self._latency: dict[str, deque[float]] = {}

    def _timed(self, op: str, started: float) -> None:
        elapsed = (time.perf_counter() - started) * 1000
        with self._lock:
            self._latency.setdefault(op, deque(maxlen=_LATENCY_SAMPLES)).append(elapsed)

    def put(self, key: str, blob: bytes, meta: bytes = b"") -> None:
        started = time.perf_counter()
        self.inner.put(check_key(key), frame_blob(blob), meta)
        self._timed("put", started)

    def get(self, key: str) -> bytes | None:
        started = time.perf_counter()
        framed = self.inner.get(key)
        if framed is None:
            self._timed("get", started)
            return None
        try:
            blob = unframe_blob(framed)
        except CorruptBlobError:
            with self._lock:
                self._corrupt += 1
            self.inner.quarantine(key)
            return None
        self._timed("get", started)
        return blob

    def get_meta(self, key: str) -> bytes | None:
        return self.inner.get_meta(key)

    def contains(self, key: str) -> bool:
        return self.inner.contains(key)

    def remove(self, key: str) -> bool:
        return self.inner.remove(key)

    def keys(self) -> Iterator[str]:
        return self.inner.keys()

    def scan(self) -> Iterator[tuple[str, bytes]]:
        return self.inner.scan()

    def quarantine(self, key: str) -> None:
        self.inner.quarantine(key)

    def close(self) -> None:
        self.inner.close()

    @property
    def bytes_used(self) -> int:
        return self.inner.bytes_used

    def fits(self, nbytes: int) -> bool:
        return self.inner.fits(nbytes + _FRAME.size)

    def stats(self) -> TierStats:
        stats = self.inner.stats()
        with self._lock:
            stats.corrupt += self._corrupt
            for op, samples in self._latency.items():
                ordered = sorted(samples)
                stats.latency_ms[op] = {
                    "median": ordered[len(ordered) // 2],
                    "p99": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
                    "samples": len(ordered),
                }
        return stats
