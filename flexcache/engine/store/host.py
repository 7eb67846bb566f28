"""Host-memory tier over one pre-allocated (pinned when CUDA exists) buffer.

Why one buffer: pinning many small allocations fragments page-locked memory
and makes every allocation a slow driver call (a problem LMCache users
report). This tier pins one buffer once and hands out fixed-size slabs of it.

Allocator: the buffer is cut into `slab_count` slabs of `slab_bytes`. A blob of
``n`` bytes takes ``ceil(n / slab_bytes)`` slabs as a list of extents
``(first slab, slab count)``. Allocation is best-fit over the free runs, so a
blob usually occupies one contiguous run (one DMA to the GPU); when no free run
is long enough it is gathered from the longest runs instead, so external
fragmentation never refuses a blob while enough slabs are free. Freed runs
coalesce with their neighbours. The waste is internal: at most one partial
slab per blob, which is why `fits` counts slabs as well as bytes.

Concurrency: the lock guards only bookkeeping; bytes are copied outside it.
A reader leases the blob it copies from, and a blob that is removed or replaced
while leased keeps its slabs until the last reader is done, so a reader never
sees a reused slab. A put writes into freshly reserved slabs and commits under
the lock, so readers see the old blob or the whole new one.
"""

from __future__ import annotations

import bisect
import mmap
import threading
import warnings
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from flexcache.engine.store.base import Tier, TierStats
from flexcache.errors import BackendUnavailableError, CapacityError, ConfigError, TierUnavailableError

# A tier smaller than this many slabs of the requested size uses smaller slabs,
# so a small tier is not a handful of slabs that each hold one tiny blob.
MIN_SLABS = 16
_PAGE = mmap.PAGESIZE
_CUDA_HOST_REGISTER_PORTABLE = 1  # pinned for every CUDA context, not only the current one


def _check_size(what: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{what} must be a positive integer; got {value!r}")
    return value


class SlabAllocator:
    """Free list over slab indices (no memory): best-fit runs, gather when fragmented.

    Free runs are kept sorted by first slab, with their lengths and their ends
    indexed so a freed run merges with both neighbours in O(log n).

    Example:
        >>> a = SlabAllocator(8)
        >>> a.allocate(3)
        [(0, 3)]
        >>> a.free([(0, 3)]); a.free_slabs
        8
    """

    def __init__(self, slab_count: int) -> None:
        self.slab_count = slab_count
        self.free_slabs = slab_count
        self._starts: list[int] = [0] if slab_count else []
        self._length_at: dict[int, int] = {0: slab_count} if slab_count else {}
        self._start_ending_at: dict[int, int] = {slab_count: 0} if slab_count else {}

    @property
    def free_runs(self) -> list[tuple[int, int]]:
        """``(first slab, length)`` of every free run, in address order."""
        return [(s, self._length_at[s]) for s in self._starts]

    @property
    def largest_free_run(self) -> int:
        return max(self._length_at.values(), default=0)

    def allocate(self, count: int) -> list[tuple[int, int]] | None:
        """Extents holding `count` slabs, or None when fewer slabs are free."""
        if count == 0:
            return []
        if count > self.free_slabs:
            return None
        best = None
        for start in self._starts:
            length = self._length_at[start]
            if length >= count and (best is None or length < self._length_at[best]):
                best = start
                if length == count:
                    break
        if best is not None:
            self._take(best, count)
            return [(best, count)]
        # No run is long enough: take the longest runs first, for the fewest pieces.
        extents, needed = [], count
        for start in sorted(self._starts, key=lambda s: -self._length_at[s]):
            taken = min(needed, self._length_at[start])
            self._take(start, taken)
            extents.append((start, taken))
            needed -= taken
            if needed == 0:
                break
        return extents

    def _take(self, start: int, count: int) -> None:
        length = self._length_at.pop(start)
        del self._start_ending_at[start + length]
        index = bisect.bisect_left(self._starts, start)
        if count < length:  # the head is used; the tail stays free in place
            self._starts[index] = start + count
            self._length_at[start + count] = length - count
            self._start_ending_at[start + length] = start + count
        else:
            del self._starts[index]
        self.free_slabs -= count

    def free(self, extents: list[tuple[int, int]]) -> None:
        for start, count in extents:
            if count == 0:
                continue
            end = start + count
            left = self._start_ending_at.pop(start, None)
            if left is not None:  # merge with the run that ends where this starts
                del self._length_at[left]
                del self._starts[bisect.bisect_left(self._starts, left)]
                start = left
            right_length = self._length_at.pop(end, None)
            if right_length is not None:  # and with the run that starts where this ends
                del self._start_ending_at[end + right_length]
                del self._starts[bisect.bisect_left(self._starts, end)]
                end += right_length
            bisect.insort(self._starts, start)
            self._length_at[start] = end - start
            self._start_ending_at[end] = start
            self.free_slabs += count


def _register_host_memory(ptr: int, nbytes: int) -> None:
    """Page-lock `nbytes` at `ptr` for DMA (initialises CUDA)."""
    code = int(torch.cuda.cudart().cudaHostRegister(ptr, nbytes, _CUDA_HOST_REGISTER_PORTABLE))
    if code != 0:
        # A failed runtime call stays the thread's "last error" and would fail the next
        # kernel launch check in unrelated code; one tiny launch consumes it here.
        try:
            torch.zeros(1, device="cuda").add_(1)
        except RuntimeError:
            pass
        raise RuntimeError(f"cudaHostRegister of {nbytes} bytes failed with CUDA error {code}")


def _unregister_host_memory(ptr: int, keep_alive: torch.Tensor) -> None:
    # `keep_alive` is the buffer: the finalizer holds it so it is freed only after this.
    torch.cuda.cudart().cudaHostUnregister(ptr)


class _Pool:
    """The tier's one buffer; page-locked with cudaHostRegister when `pinned`.

    cudaHostRegister on a plain allocation rather than ``torch.empty(...,
    pin_memory=True)``: PyTorch's caching host allocator rounds a request up to
    a power of two (48 GiB would pin 64 GiB) and keeps the block cached after
    the tier lets go of it.
    """

    def __init__(self, nbytes: int, pinned: bool) -> None:
        # Pinned: register whole pages from a page boundary (room for both roundings).
        raw = torch.empty(nbytes + (2 * _PAGE if pinned else 0), dtype=torch.uint8)
        offset = (-raw.data_ptr()) % _PAGE if pinned else 0
        self.tensor = raw[offset:offset + nbytes]
        self.array = self.tensor.numpy()
        self.view = memoryview(self.array)
        self.pinned = pinned
        if pinned:
            ptr = self.tensor.data_ptr()
            _register_host_memory(ptr, -(-nbytes // _PAGE) * _PAGE)
            finalizer = weakref.finalize(self, _unregister_host_memory, ptr, raw)
            finalizer.atexit = False  # the process is exiting; the driver reclaims it


@dataclass(eq=False)
class _Blob:
    extents: list[tuple[int, int]]  # (first slab, slab count), in blob order
    length: int
    meta: bytes
    generation: int
    readers: int = 0
    retired: bool = False


class HostTier(Tier):
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
    bytes). `fits` counts both, so a store that makes room until `fits` holds
    never sees the latter. Empty blobs are allowed and take no slab.

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
        self._lock = threading.Lock()
        self._pool: _Pool | None = None
        self._allocator = SlabAllocator(self.slab_count)
        self._entries: dict[str, _Blob] = {}
        self._bytes = 0
        self._reserved = 0
        self._generation = 0
        self._streams: dict[int, torch.cuda.Stream] = {}
        self._stats = TierStats(self.name, 0, 0, capacity_bytes)

    # -- the pool -------------------------------------------------------------------

    def ensure_pool(self) -> None:
        """Allocate (and pin) the buffer now instead of on the first put: pinning
        tens of GiB takes seconds."""
        with self._lock:
            self._pool_locked()

    def _pool_locked(self) -> _Pool:
        if self._pool is not None:
            return self._pool
        if self.pinned:
            try:
                self._pool = _Pool(self.pool_bytes, True)
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
                    RuntimeWarning, stacklevel=4,
                )
                self.pinned = False
        try:
            self._pool = _Pool(self.pool_bytes, False)
        except RuntimeError as exc:
            raise TierUnavailableError(f"host tier could not allocate {self.pool_bytes} bytes: {exc}") from exc
        return self._pool

    # -- allocation, commit, leases ---------------------------------------------------

    def _slabs_for(self, nbytes: int) -> int:
        return -(-nbytes // self.slab_bytes)

    def _reserve(self, key: str, length: int, meta: bytes) -> tuple[_Blob, _Pool]:
        with self._lock:
            if length > self.capacity_bytes:
                self._stats.errors += 1
                raise CapacityError(
                    f"a blob of {length} bytes is larger than the host tier ({self.capacity_bytes} bytes)"
                )
            pool = self._pool_locked()
            old = self._entries.get(key)
            logical = self._bytes + self._reserved + length - (old.length if old is not None else 0)
            extents = self._allocator.allocate(self._slabs_for(length)) if logical <= self.capacity_bytes else None
            if extents is None:
                self._stats.errors += 1
                raise TierUnavailableError(
                    f"host tier cannot take {length} bytes now ({self._bytes} of {self.capacity_bytes} bytes used, "
                    f"{self._allocator.free_slabs} of {self.slab_count} slabs free); make room first"
                )
            self._reserved += length
            return _Blob(extents, length, bytes(meta), self._generation), pool

    def _commit(self, key: str, blob: _Blob) -> None:
        with self._lock:
            if blob.generation != self._generation:
                raise TierUnavailableError("the host tier was closed while a put was writing")
            self._reserved -= blob.length
            old = self._entries.get(key)
            self._entries[key] = blob
            self._bytes += blob.length - (old.length if old is not None else 0)
            if old is not None:
                self._retire_locked(old)
            self._stats.puts += 1

    def _abandon(self, blob: _Blob) -> None:
        with self._lock:
            if blob.generation == self._generation:
                self._reserved -= blob.length
                self._allocator.free(blob.extents)

    def _put_with(self, key: str, length: int, meta: bytes, write: Callable[[_Pool, _Blob], None]) -> None:
        blob, pool = self._reserve(key, length, meta)
        try:
            write(pool, blob)
        except BaseException:
            self._abandon(blob)
            raise
        self._commit(key, blob)

    def _retire_locked(self, blob: _Blob) -> None:
        blob.retired = True
        if blob.readers == 0 and blob.generation == self._generation:
            self._allocator.free(blob.extents)

    def _lease(self, key: str) -> tuple[_Blob, _Pool] | None:
        with self._lock:
            self._stats.gets += 1
            blob = self._entries.get(key)
            if blob is None:
                self._stats.get_misses += 1
                return None
            blob.readers += 1
            return blob, self._pool

    def _release(self, blob: _Blob) -> None:
        with self._lock:
            blob.readers -= 1
            if blob.retired:
                self._retire_locked(blob)

    def _segments(self, blob: _Blob) -> Iterator[tuple[int, int, int]]:
        """``(pool offset, blob offset, length)`` of each piece of `blob`."""
        done = 0
        for start, count in blob.extents:
            size = min(count * self.slab_bytes, blob.length - done)
            yield start * self.slab_bytes, done, size
            done += size

    # -- bytes API --------------------------------------------------------------------

    def put(self, key: str, blob: bytes, meta: bytes = b"") -> None:
        source = np.frombuffer(blob, dtype=np.uint8)

        def write(pool: _Pool, target: _Blob) -> None:
            for at, offset, size in self._segments(target):
                pool.array[at:at + size] = source[offset:offset + size]

        self._put_with(key, source.size, meta, write)

    def get(self, key: str) -> bytes | None:
        leased = self._lease(key)
        if leased is None:
            return None
        blob, pool = leased
        try:
            return self._copy_out(pool, blob)
        finally:
            self._release(blob)

    def _copy_out(self, pool: _Pool, blob: _Blob) -> bytes:
        pieces = [pool.view[at:at + size] for at, _, size in self._segments(blob)]
        return bytes(pieces[0]) if len(pieces) == 1 else b"".join(pieces)

    # -- tensor API ---------------------------------------------------------------------

    def put_tensor(self, key: str, tensor: torch.Tensor, meta: bytes = b"") -> None:
        """Store the bytes of a uint8 tensor (any shape, CPU or CUDA).

        A CUDA tensor is copied device-to-host on this tier's own stream, after
        the work already queued on the tensor's device, and the copy has
        finished when this returns.

        Raises:
            TypeError: `tensor` is not a uint8 tensor.
            CapacityError / TierUnavailableError: as `put`.
        """
        if not isinstance(tensor, torch.Tensor) or tensor.dtype != torch.uint8:
            raise TypeError(f"put_tensor takes a uint8 tensor; got {getattr(tensor, 'dtype', type(tensor))}")
        flat = tensor.detach().reshape(-1).contiguous()
        if flat.device.type == "cpu":
            source = flat.numpy()

            def write(pool: _Pool, target: _Blob) -> None:
                for at, offset, size in self._segments(target):
                    pool.array[at:at + size] = source[offset:offset + size]
        else:
            def write(pool: _Pool, target: _Blob) -> None:
                stream = self._stream(flat.device)
                stream.wait_stream(torch.cuda.current_stream(flat.device))  # the producer's writes first
                with torch.cuda.stream(stream):
                    for at, offset, size in self._segments(target):
                        pool.tensor[at:at + size].copy_(flat[offset:offset + size], non_blocking=True)
                stream.synchronize()

        self._put_with(key, flat.numel(), meta, write)

    def get_tensor(self, key: str, device: str | torch.device | None = None) -> torch.Tensor | None:
        """The blob as a new 1-D uint8 tensor the caller owns, or None when absent.

        Args:
            device: None or CPU: a host copy. A CUDA device: copied straight
                from the (pinned) buffer by DMA on this tier's stream, with no
                host copy in between; ready to use on the caller's current
                stream when this returns. The way to promote into HBM.
        """
        target = torch.device("cpu") if device is None else torch.device(device)
        leased = self._lease(key)
        if leased is None:
            return None
        blob, pool = leased
        try:
            if target.type == "cpu":
                out = torch.empty(blob.length, dtype=torch.uint8)
                array = out.numpy()
                for at, offset, size in self._segments(blob):
                    array[offset:offset + size] = pool.array[at:at + size]
                return out
            # Allocated on the caller's stream, so the caching allocator orders its reuse there.
            out = torch.empty(blob.length, dtype=torch.uint8, device=target)
            stream = self._stream(out.device)
            stream.wait_stream(torch.cuda.current_stream(out.device))
            with torch.cuda.stream(stream):
                for at, offset, size in self._segments(blob):
                    out[offset:offset + size].copy_(pool.tensor[at:at + size], non_blocking=True)
            stream.synchronize()  # the lease (slabs not reused) lasts until the DMA is done
            return out
        finally:
            self._release(blob)

    def _stream(self, device: torch.device) -> torch.cuda.Stream:
        index = device.index if device.index is not None else torch.cuda.current_device()
        with self._lock:
            stream = self._streams.get(index)
            if stream is None:
                stream = self._streams[index] = torch.cuda.Stream(device=index)
            return stream

    # -- the rest of the Tier interface --------------------------------------------------

    def get_meta(self, key: str) -> bytes | None:
        with self._lock:
            blob = self._entries.get(key)
            return None if blob is None else blob.meta

    def contains(self, key: str) -> bool:
        with self._lock:
            return key in self._entries

    def remove(self, key: str) -> bool:
        with self._lock:
            blob = self._entries.pop(key, None)
            if blob is None:
                return False
            self._bytes -= blob.length
            self._retire_locked(blob)
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
            return (self._bytes + self._reserved + nbytes <= self.capacity_bytes
                    and self._slabs_for(nbytes) <= self._allocator.free_slabs)

    def extents(self, key: str) -> list[tuple[int, int]] | None:
        """``(first slab, slab count)`` pieces of `key`'s blob, or None (for tests and debugging)."""
        with self._lock:
            blob = self._entries.get(key)
            return None if blob is None else list(blob.extents)

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

    def stats(self) -> TierStats:
        with self._lock:
            self._stats.entries = len(self._entries)
            self._stats.bytes_used = self._bytes
            return TierStats(**vars(self._stats))

    def close(self) -> None:
        """Drop every blob and release the buffer (unpinned once no read still uses it)."""
        with self._lock:
            self._generation += 1
            self._entries.clear()
            self._bytes = self._reserved = 0
            self._allocator = SlabAllocator(self.slab_count)
            self._pool = None
