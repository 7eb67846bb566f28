"""Bookkeeping shared by the tiers that hold blobs in memory they manage (pinned host slabs, HBM).

A put reserves room under a short lock, writes outside it, and commits under
it again, so readers see the old blob or the whole new one and a slow copy
never holds up other keys. A reader leases the blob it copies from; a blob
removed or replaced while leased keeps its storage until the last reader is
done, so no reader sees storage reused under it. `close` starts a new
generation: a put that was writing when the tier closed is refused at commit.

A subclass allocates (`_allocate_locked`), frees (`_free_locked`) and says
what it holds; everything else lives here once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from flexcache.core.errors import CapacityError, TierUnavailableError
from flexcache.store.base import Tier, TierStats


@dataclass(eq=False)
class Held:
    """One blob as a resident tier holds it."""

    storage: Any  # what the subclass allocated: slab extents, a device blob
    length: int
    meta: bytes
    generation: int
    readers: int = 0
    retired: bool = False


class ResidentTier(Tier):
    """A tier over memory it allocates; thread-safe, not persistent."""

    def __init__(self, capacity_bytes: int) -> None:
        super().__init__(capacity_bytes)
        self._lock = threading.Lock()
        self._entries: dict[str, Held] = {}
        self._bytes = 0
        self._reserved = 0
        self._generation = 0
        self._stats = TierStats(self.name, 0, 0, capacity_bytes)

    # -- what a subclass provides ------------------------------------------------------

    def _allocate_locked(self, nbytes: int) -> Any:
        """Storage for `nbytes` (lock held), or None when there is no room for it now."""
        return None

    def _free_locked(self, storage: Any) -> None:
        """Give back what `_allocate_locked` (or the write) produced (lock held)."""

    def _no_room(self, nbytes: int) -> str:
        return f"{self.name} tier cannot take {nbytes} bytes now ({self._bytes} of {self.capacity_bytes} bytes used)"

    def _reset_locked(self) -> None:
        """Drop pools and caches on `close` (lock held)."""

    # -- reserve, write, commit ------------------------------------------------------------

    def _reserve(self, key: str, length: int, meta: bytes) -> Held:
        with self._lock:
            if length > self.capacity_bytes:
                self._stats.errors += 1
                raise CapacityError(
                    f"a blob of {length} bytes is larger than the {self.name} tier ({self.capacity_bytes} bytes)"
                )
            old = self._entries.get(key)
            logical = self._bytes + self._reserved + length - (old.length if old is not None else 0)
            storage = self._allocate_locked(length) if logical <= self.capacity_bytes else None
            if logical > self.capacity_bytes or (storage is None and self._needs_storage_locked(length)):
                self._stats.errors += 1
                raise TierUnavailableError(f"{self._no_room(length)}; make room first")
            self._reserved += length
            return Held(storage, length, bytes(meta), self._generation)

    def _needs_storage_locked(self, length: int) -> bool:
        """Whether `_allocate_locked` returning None means no room (it does for slabs, not for HBM)."""
        return False

    def _commit(self, key: str, held: Held) -> None:
        with self._lock:
            if held.generation != self._generation:
                raise TierUnavailableError(f"the {self.name} tier was closed while a put was writing")
            self._reserved -= held.length
            old = self._entries.get(key)
            self._entries[key] = held
            self._bytes += held.length - (old.length if old is not None else 0)
            if old is not None:
                self._retire_locked(old)
            self._stats.puts += 1

    def _abandon(self, held: Held) -> None:
        with self._lock:
            if held.generation == self._generation:
                self._reserved -= held.length
                self._free_locked(held.storage)

    def _put_with(self, key: str, length: int, meta: bytes, write: Callable[[Held], Any]) -> None:
        """Reserve, run `write(held)` outside the lock, commit; `write` may return the storage it made."""
        held = self._reserve(key, length, meta)
        try:
            made = write(held)
        except BaseException:
            self._abandon(held)
            raise
        if made is not None:
            held.storage = made
        self._commit(key, held)

    def _retire_locked(self, held: Held) -> None:
        held.retired = True
        if held.readers == 0 and held.generation == self._generation:
            self._free_locked(held.storage)

    # -- leases ------------------------------------------------------------------------------

    def _lease(self, key: str) -> Held | None:
        with self._lock:
            self._stats.gets += 1
            held = self._entries.get(key)
            if held is None:
                self._stats.get_misses += 1
                return None
            held.readers += 1
            return held

    def _release(self, held: Held) -> None:
        with self._lock:
            held.readers -= 1
            if held.retired:
                self._retire_locked(held)

    def _read(self, key: str, copy: Callable[[Held], Any]) -> Any:
        """`copy(held)` under a lease, or None when `key` is absent."""
        held = self._lease(key)
        if held is None:
            return None
        try:
            return copy(held)
        finally:
            self._release(held)

    # -- the rest of the Tier interface ------------------------------------------------------

    def get_meta(self, key: str) -> bytes | None:
        with self._lock:
            held = self._entries.get(key)
            return None if held is None else held.meta

    def contains(self, key: str) -> bool:
        with self._lock:
            return key in self._entries

    def remove(self, key: str) -> bool:
        with self._lock:
            held = self._entries.pop(key, None)
            if held is None:
                return False
            self._bytes -= held.length
            self._retire_locked(held)
            self._stats.removes += 1
            return True

    def keys(self) -> Iterator[str]:
        with self._lock:
            return iter(list(self._entries))

    @property
    def bytes_used(self) -> int:
        return self._bytes

    def fits(self, nbytes: int) -> bool:
        with self._lock:
            return self._bytes + self._reserved + self.footprint(nbytes) <= self.capacity_bytes

    def stats(self) -> TierStats:
        with self._lock:
            self._stats.entries = len(self._entries)
            self._stats.bytes_used = self._bytes
            return TierStats(**vars(self._stats))

    def close(self) -> None:
        """Drop every blob (storage still being read is released by its last reader)."""
        with self._lock:
            self._generation += 1
            self._entries.clear()
            self._bytes = self._reserved = 0
            self._reset_locked()
