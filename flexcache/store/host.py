"""Host-memory tier over one pre-allocated buffer, pinned when CUDA exists (`slabs.HostPool`).

Blobs live in slabs of the pool (`slabs.SlabAllocator`); reservations,
commits and leases are `resident.ResidentTier`'s. A blob handed out for a CUDA
device is copied straight from the pinned pool by DMA into a `DeviceBlob`,
with its headers read from the pool on the host: a promotion into HBM or a
decode on the GPU never stages through pageable memory. A `DeviceBlob` put
here is copied device-to-host the same way.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from flexcache.core.blob import HEAD_BYTES, Blob, DeviceBlob, host_bytes
from flexcache.core.errors import (
    BackendUnavailableError,
    ConfigError,
    TierUnavailableError,
)
from flexcache.store.resident import Held, ResidentTier
from flexcache.store.slabs import HostPool, SlabAllocator

# A tier smaller than this many slabs of the requested size uses smaller slabs,
# so a small tier is not a handful of slabs that each hold one tiny blob.
MIN_SLABS = 16


def _check_size(what: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{what} must be a positive integer; got {value!r}")
    return value


class HostTier(ResidentTier):
    """Host memory in one pre-allocated buffer, pinned when CUDA is available.

    Args:
        capacity_bytes: blob bytes the tier may hold; the buffer is this size
            rounded up to a whole slab, allocated on the first put (or by
            `ensure_pool`).
        pinned: page-lock the buffer. None (default): when CUDA is available;
            if page-locking then fails the tier warns and uses plain memory.
            True: required (BackendUnavailableError without CUDA or if it fails).
        slab_bytes: allocation unit. Tiers smaller than ``MIN_SLABS`` slabs
            use the largest power of two that gives that many.

    Raises:
        ConfigError: capacity_bytes or slab_bytes is not a positive integer.
        BackendUnavailableError: pinned=True without CUDA.

    `put` raises CapacityError for a blob larger than the tier and
    TierUnavailableError when the tier cannot take it now: bytes or free slabs
    run short (slab rounding or blobs still being read can exhaust slabs before
    bytes). A blob's `footprint` is its whole slabs, so a store that charges
    footprints never sees the latter while no blob is being read. Empty blobs
    are allowed and take no slab.

    Example:
        >>> tier = HostTier(1 << 20, pinned=False, slab_bytes=4096)
        >>> tier.put("t.00c0ffee", b"latent bytes", b"meta")
        >>> tier.get("t.00c0ffee"), tier.slabs_used
        (b'latent bytes', 1)
    """

    name = "host"
    persistent = False

    def __init__(self, capacity_bytes: int, *, pinned: bool | None = None, slab_bytes: int = 1 << 20) -> None:
        super().__init__(_check_size("host tier capacity_bytes", capacity_bytes))
        _check_size("host tier slab_bytes", slab_bytes)
        if capacity_bytes < slab_bytes * MIN_SLABS:
            slab_bytes = min(slab_bytes, 1 << max(0, (capacity_bytes // MIN_SLABS).bit_length() - 1))
        self.slab_bytes = slab_bytes
        self.slab_count = -(-capacity_bytes // slab_bytes)
        self.pool_bytes = self.slab_count * slab_bytes
        cuda = torch.cuda.is_available()  # asks the driver; does not initialise CUDA
        if pinned and not cuda:
            raise BackendUnavailableError("a pinned host tier needs CUDA; use pinned=False (or None) here")
        self._pin_required = pinned is True
        self.pinned = cuda if pinned is None else pinned
        self._pool: HostPool | None = None
        self._allocator = SlabAllocator(self.slab_count)
        self._streams: dict[int, torch.cuda.Stream] = {}
        self._streams_lock = threading.Lock()

    # -- the pool -------------------------------------------------------------------

    def ensure_pool(self) -> None:
        """Allocate (and pin) the buffer now instead of on the first put: pinning
        tens of GiB takes seconds."""
        with self._lock:
            self._pool_locked()

    def _pool_locked(self) -> HostPool:
        if self._pool is not None:
            return self._pool
        if self.pinned:
            try:
                self._pool = HostPool(self.pool_bytes, True)
                return self._pool
            except RuntimeError as exc:
                if self._pin_required:
                    raise BackendUnavailableError(
                        f"host tier could not pin {self.pool_bytes} bytes ({exc}); "
                        "lower its capacity_bytes or use pinned=False"
                    ) from exc
                warnings.warn(
                    f"flexcache: host tier could not pin {self.pool_bytes} bytes ({exc}); "
                    "using pageable memory, host-to-GPU copies will be slower",
                    RuntimeWarning, stacklevel=5,
                )
                self.pinned = False
        try:
            self._pool = HostPool(self.pool_bytes, False)
        except RuntimeError as exc:
            raise TierUnavailableError(f"host tier could not allocate {self.pool_bytes} bytes: {exc}") from exc
        return self._pool

    # -- ResidentTier hooks -------------------------------------------------------------

    def _slabs_for(self, nbytes: int) -> int:
        return -(-nbytes // self.slab_bytes)

    def footprint(self, nbytes: int) -> int:
        return self._slabs_for(nbytes) * self.slab_bytes

    def _allocate_locked(self, nbytes: int) -> Any:
        pool = self._pool_locked()
        extents = self._allocator.allocate(self._slabs_for(nbytes))
        return None if extents is None else (extents, pool)

    def _needs_storage_locked(self, length: int) -> bool:
        return True

    def _free_locked(self, storage: Any) -> None:
        self._allocator.free(storage[0])

    def _no_room(self, nbytes: int) -> str:
        return (f"host tier cannot take {nbytes} bytes now ({self._bytes} of {self.capacity_bytes} bytes used, "
                f"{self._allocator.free_slabs} of {self.slab_count} slabs free)")

    def _reset_locked(self) -> None:
        self._allocator = SlabAllocator(self.slab_count)
        self._pool = None

    def _segments(self, held: Held) -> Iterator[tuple[int, int, int]]:
        """``(pool offset, blob offset, length)`` of each piece of a held blob."""
        done = 0
        for start, count in held.storage[0]:
            size = min(count * self.slab_bytes, held.length - done)
            yield start * self.slab_bytes, done, size
            done += size

    # -- writes ---------------------------------------------------------------------

    def put(self, key: str, blob: Blob, meta: bytes = b"") -> None:
        """Store host bytes, or a `DeviceBlob` (a CUDA one copied device-to-host by DMA)."""
        if isinstance(blob, DeviceBlob) and blob.device.type == "cuda":
            self._put_from_device(key, blob.tensor, meta)
            return
        if isinstance(blob, DeviceBlob):
            source = blob.tensor.numpy()
        else:
            source = np.frombuffer(host_bytes(blob), dtype=np.uint8)

        def write(held: Held) -> None:
            array = held.storage[1].array
            for at, offset, size in self._segments(held):
                array[at:at + size] = source[offset:offset + size]

        self._put_with(key, source.size, meta, write)

    def _put_from_device(self, key: str, flat: torch.Tensor, meta: bytes) -> None:
        def write(held: Held) -> None:
            pool = held.storage[1]
            stream = self._stream(flat.device)
            stream.wait_stream(torch.cuda.current_stream(flat.device))  # the producer's writes first
            with torch.cuda.stream(stream):
                for at, offset, size in self._segments(held):
                    pool.tensor[at:at + size].copy_(flat[offset:offset + size], non_blocking=True)
            stream.synchronize()

        self._put_with(key, flat.numel(), meta, write)

    # -- reads ----------------------------------------------------------------------

    def get(self, key: str, device: Any = None) -> Blob | None:
        """The blob as host bytes, or for a CUDA `device` as a `DeviceBlob` copied there by DMA."""
        target = None if device is None else torch.device(device)
        if target is not None and target.type == "cuda":
            return self._read(key, lambda held: self._copy_to_device(held, target))
        return self._read(key, self._copy_out)

    def _copy_out(self, held: Held) -> bytes:
        view = held.storage[1].view
        pieces = [view[at:at + size] for at, _, size in self._segments(held)]
        if not pieces:
            return b""
        return bytes(pieces[0]) if len(pieces) == 1 else b"".join(pieces)

    def _head(self, held: Held) -> bytes:
        view, wanted, parts = held.storage[1].view, min(held.length, HEAD_BYTES), []
        for at, _, size in self._segments(held):
            take = min(size, wanted - sum(len(p) for p in parts))
            if take <= 0:
                break
            parts.append(bytes(view[at:at + take]))
        return b"".join(parts)

    def _copy_to_device(self, held: Held, target: torch.device) -> DeviceBlob:
        pool = held.storage[1]
        # Allocated on the caller's stream, so the caching allocator orders its reuse there.
        out = torch.empty(held.length, dtype=torch.uint8, device=target)
        stream = self._stream(out.device)
        stream.wait_stream(torch.cuda.current_stream(out.device))
        with torch.cuda.stream(stream):
            for at, offset, size in self._segments(held):
                out[offset:offset + size].copy_(pool.tensor[at:at + size], non_blocking=True)
        stream.synchronize()  # the lease (slabs not reused) lasts until the DMA is done
        return DeviceBlob(out, self._head(held))

    def _stream(self, device: torch.device) -> torch.cuda.Stream:
        index = device.index if device.index is not None else torch.cuda.current_device()
        with self._streams_lock:
            stream = self._streams.get(index)
            if stream is None:
                stream = self._streams[index] = torch.cuda.Stream(device=index)
            return stream

    # -- capacity and introspection ----------------------------------------------------

    def fits(self, nbytes: int) -> bool:
        with self._lock:
            return (self._bytes + self._reserved + nbytes <= self.capacity_bytes
                    and self._slabs_for(nbytes) <= self._allocator.free_slabs)

    def extents(self, key: str) -> list[tuple[int, int]] | None:
        """``(first slab, slab count)`` pieces of `key`'s blob, or None (for tests and debugging)."""
        with self._lock:
            held = self._entries.get(key)
            return None if held is None else list(held.storage[0])

    @property
    def slabs_used(self) -> int:
        """Slabs held by blobs, by puts in progress and by removed blobs still being read."""
        return self.slab_count - self._allocator.free_slabs

    @property
    def slabs_free(self) -> int:
        return self._allocator.free_slabs

    def slab_stats(self) -> dict[str, int | bool]:
        """Allocator state: slab size and counts, free runs (fragmentation), pinning."""
        with self._lock:
            runs = self._allocator.free_runs
            return {
                "slab_bytes": self.slab_bytes, "slab_count": self.slab_count,
                "slabs_used": self.slab_count - self._allocator.free_slabs,
                "slabs_free": self._allocator.free_slabs, "free_runs": len(runs),
                "largest_free_run": max((n for _, n in runs), default=0),
                "pool_allocated": self._pool is not None, "pinned": self.pinned,
            }
