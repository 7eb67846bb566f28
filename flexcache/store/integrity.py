"""The one integrity layer: what leaves process memory (disk, Redis) goes out framed with a CRC-32.

`ChecksummedTier` wraps any tier and frames both what it stores for a key:
the blob and its metadata. Each frame is 16 bytes, little-endian::

    magic "FXTK" (4) | CRC-32 of the body (u32) | body length (u64) | body

(docs/format.md, "Integrity frame"). A frame that fails on the way back is
counted, quarantined in the inner tier and reported as a miss (None): damaged
bytes never reach the codec, and nothing else in the blob path checksums
again. Blobs that stay in process memory (memory, pinned host, HBM tiers)
are not framed. `build_tier` wraps every persistent or shared tier, and
`FlexCache` wraps such tiers handed to it directly.
"""

from __future__ import annotations

import struct
import threading
import time
import zlib
from collections import deque
from collections.abc import Iterator
from typing import Any

from flexcache.core.blob import Blob, host_bytes
from flexcache.core.errors import CorruptBlobError
from flexcache.core.types import check_key
from flexcache.store.base import Tier, TierStats

FRAME = struct.Struct("<4sIQ")  # magic, crc32 of the body, body length
FRAME_MAGIC = b"FXTK"
_LATENCY_SAMPLES = 1024


def frame(body: bytes | bytearray | memoryview) -> bytes:
    """`body` with its integrity frame in front.

    Example:
        >>> unframe(frame(b"latent bytes")).tobytes()
        b'latent bytes'
    """
    view = memoryview(body).cast("B") if not isinstance(body, bytes) else body
    return b"".join((FRAME.pack(FRAME_MAGIC, zlib.crc32(view), len(view)), view))


def unframe(framed: bytes | bytearray | memoryview) -> memoryview:
    """The body inside a frame, as a view (no copy).

    Raises:
        CorruptBlobError: too short, wrong magic, wrong length or failed checksum.
    """
    view = memoryview(framed).cast("B") if not isinstance(framed, bytes) else memoryview(framed)
    if len(view) < FRAME.size:
        raise CorruptBlobError(f"stored value is {len(view)} bytes, shorter than its frame")
    magic, crc, length = FRAME.unpack_from(view)
    if magic != FRAME_MAGIC:
        raise CorruptBlobError("stored value does not start with the integrity frame magic")
    body = view[FRAME.size:]
    if len(body) != length:
        raise CorruptBlobError(f"stored value holds {len(body)} bytes, its frame says {length}")
    if zlib.crc32(body) != crc:
        raise CorruptBlobError("stored value failed its checksum")
    return body


def checked(tier: Tier) -> Tier:
    """`tier` behind the integrity layer when what it stores leaves process memory (and it is not already)."""
    if (tier.persistent or tier.shared) and not isinstance(tier, ChecksummedTier):
        return ChecksummedTier(tier)
    return tier


class ChecksummedTier(Tier):
    """Wraps any tier: frames every blob and metadata record with a CRC-32 and times every call.

    A blob or metadata record that fails its frame check is counted,
    quarantined in the inner tier and reported as a miss (None); it never
    reaches a caller. Latencies of the last calls are kept per operation for
    `stats()`.

    Example:
        >>> from flexcache.store.memory import MemoryTier
        >>> tier = ChecksummedTier(MemoryTier(1 << 20))
        >>> tier.put("t.00c0ffee", b"blob", b"meta")
        >>> bytes(tier.get("t.00c0ffee")), tier.get_meta("t.00c0ffee")
        (b'blob', b'meta')
    """

    def __init__(self, inner: Tier) -> None:
        super().__init__(inner.capacity_bytes)
        self.inner = inner
        self.name = inner.name
        self.persistent, self.shared, self.device_resident = inner.persistent, inner.shared, False
        self._lock = threading.Lock()
        self._corrupt = 0
        self._latency: dict[str, deque[float]] = {}

    def _timed(self, op: str, started: float) -> None:
        elapsed = (time.perf_counter() - started) * 1000
        with self._lock:
            self._latency.setdefault(op, deque(maxlen=_LATENCY_SAMPLES)).append(elapsed)

    def _damaged(self, key: str, framed: Any = None) -> None:
        with self._lock:
            self._corrupt += 1
        self.inner.quarantine(key, framed)

    def put(self, key: str, blob: Blob, meta: bytes = b"") -> None:
        started = time.perf_counter()
        self.inner.put(check_key(key), frame(host_bytes(blob)), frame(meta))
        self._timed("put", started)

    def get(self, key: str, device: Any = None) -> memoryview | None:
        started = time.perf_counter()
        framed = self.inner.get(key)
        if framed is None:
            self._timed("get", started)
            return None
        try:
            blob = unframe(framed)
        except CorruptBlobError:
            self._damaged(key, framed)  # only what was read: a replacement that landed meanwhile stays
            return None
        self._timed("get", started)
        return blob

    def get_meta(self, key: str) -> bytes | None:
        framed = self.inner.get_meta(key)
        if framed is None:
            return None
        try:
            return unframe(framed).tobytes()
        except CorruptBlobError:
            self._damaged(key)
            return None

    def scan(self) -> Iterator[tuple[str, bytes]]:
        for key, framed in self.inner.scan():
            try:
                meta = unframe(framed).tobytes()
            except CorruptBlobError:
                self._damaged(key)
                continue
            yield key, meta

    def contains(self, key: str) -> bool:
        return self.inner.contains(key)

    def remove(self, key: str) -> bool:
        return self.inner.remove(key)

    def keys(self) -> Iterator[str]:
        return self.inner.keys()

    def quarantine(self, key: str, expected: Any = None) -> None:
        self.inner.quarantine(key, None if expected is None else frame(host_bytes(expected)))

    def close(self) -> None:
        self.inner.close()

    @property
    def bytes_used(self) -> int:
        return self.inner.bytes_used

    def footprint(self, nbytes: int) -> int:
        return self.inner.footprint(nbytes + FRAME.size)

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
