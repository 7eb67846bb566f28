"""Host-memory tier: blobs as immutable bytes in a dict."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from flexcache.core.blob import Blob, host_bytes
from flexcache.store.base import Tier, TierStats


class MemoryTier(Tier):
    """Process-local host memory; thread-safe, not persistent."""

    name = "memory"

    def __init__(self, capacity_bytes: int) -> None:
        super().__init__(capacity_bytes)
        self._blobs: dict[str, bytes] = {}
        self._meta: dict[str, bytes] = {}
        self._bytes = 0
        self._lock = threading.Lock()
        self._stats = TierStats(self.name, 0, 0, capacity_bytes)

    def put(self, key: str, blob: Blob, meta: bytes = b"") -> None:
        blob = bytes(host_bytes(blob))
        with self._lock:
            old = self._blobs.get(key)
            self._bytes += len(blob) - (len(old) if old is not None else 0)
            self._blobs[key] = blob
            self._meta[key] = bytes(meta)
            self._stats.puts += 1

    def get(self, key: str, device: Any = None) -> bytes | None:
        with self._lock:
            blob = self._blobs.get(key)
            self._stats.gets += 1
            if blob is None:
                self._stats.get_misses += 1
            return blob

    def get_meta(self, key: str) -> bytes | None:
        with self._lock:
            return self._meta.get(key)

    def contains(self, key: str) -> bool:
        with self._lock:
            return key in self._blobs

    def remove(self, key: str) -> bool:
        with self._lock:
            blob = self._blobs.pop(key, None)
            if blob is None:
                return False
            self._meta.pop(key, None)
            self._bytes -= len(blob)
            self._stats.removes += 1
            return True

    def keys(self) -> Iterator[str]:
        with self._lock:
            return iter(list(self._blobs))

    @property
    def bytes_used(self) -> int:
        return self._bytes

    def stats(self) -> TierStats:
        with self._lock:
            self._stats.entries = len(self._blobs)
            self._stats.bytes_used = self._bytes
            return TierStats(**vars(self._stats))
