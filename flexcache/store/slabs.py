"""The pinned host pool under the host tier: one buffer, cut into slabs by a free-list allocator.

Why one buffer: pinning many small allocations fragments page-locked memory
and makes every allocation a slow driver call (a problem LMCache users
report). The host tier pins one buffer once and hands out fixed-size slabs of it.

Allocator: the buffer is cut into `slab_count` slabs of `slab_bytes`. A blob of
``n`` bytes takes ``ceil(n / slab_bytes)`` slabs as a list of extents
``(first slab, slab count)``. Allocation is best-fit over the free runs, so a
blob usually occupies one contiguous run (one DMA to the GPU); when no free run
is long enough it is gathered from the longest runs instead, so external
fragmentation never refuses a blob while enough slabs are free. Freed runs
coalesce with their neighbours. The waste is internal: at most one partial
slab per blob.
"""

from __future__ import annotations

import bisect
import mmap
import weakref

import torch

_PAGE = mmap.PAGESIZE
_CUDA_HOST_REGISTER_PORTABLE = 1  # pinned for every CUDA context, not only the current one


class SlabAllocator:
    """Free list over slab indices (no memory): best-fit runs, gather when fragmented.

    Free runs are kept sorted by first slab, with their lengths and their ends
    indexed so a freed run merges with both neighbours in O(log n), and sorted
    by (length, first slab), so the best fit (the shortest run that is long
    enough, the lowest of equals) and the longest runs are found by bisection,
    not by a scan of every run: a tier of many entries fragments into as many runs.

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
        self._starts: list[int] = []
        self._length_at: dict[int, int] = {}
        self._start_ending_at: dict[int, int] = {}
        self._by_length: list[tuple[int, int]] = []  # (length, first slab) of every free run, ascending
        if slab_count:
            self._add_run(0, slab_count)

    @property
    def free_runs(self) -> list[tuple[int, int]]:
        """``(first slab, length)`` of every free run, in address order."""
        return [(s, self._length_at[s]) for s in self._starts]

    @property
    def largest_free_run(self) -> int:
        return self._by_length[-1][0] if self._by_length else 0

    def allocate(self, count: int) -> list[tuple[int, int]] | None:
        """Extents holding `count` slabs, or None when fewer slabs are free."""
        if count == 0:
            return []
        if count > self.free_slabs:
            return None
        fit = bisect.bisect_left(self._by_length, (count, -1))
        if fit < len(self._by_length):  # the shortest run that holds it (the lowest of equals)
            best = self._by_length[fit][1]
            self._take(best, count)
            return [(best, count)]
        # No run is long enough: take the longest runs first (the lowest of equals), for the fewest pieces.
        extents, needed = [], count
        while needed:
            longest = self._by_length[-1][0]
            start = self._by_length[bisect.bisect_left(self._by_length, (longest, -1))][1]
            taken = min(needed, longest)
            self._take(start, taken)
            extents.append((start, taken))
            needed -= taken
        return extents

    def _add_run(self, start: int, length: int) -> None:
        bisect.insort(self._starts, start)
        self._length_at[start] = length
        self._start_ending_at[start + length] = start
        bisect.insort(self._by_length, (length, start))

    def _drop_run(self, start: int) -> int:
        """Forget the free run at `start`; returns its length."""
        length = self._length_at.pop(start)
        del self._start_ending_at[start + length]
        del self._starts[bisect.bisect_left(self._starts, start)]
        del self._by_length[bisect.bisect_left(self._by_length, (length, start))]
        return length

    def _take(self, start: int, count: int) -> None:
        length = self._drop_run(start)
        if count < length:  # the head is used; the tail stays free in place
            self._add_run(start + count, length - count)
        self.free_slabs -= count

    def free(self, extents: list[tuple[int, int]]) -> None:
        for start, count in extents:
            if count == 0:
                continue
            end = start + count
            left = self._start_ending_at.get(start)
            if left is not None:  # merge with the run that ends where this starts
                self._drop_run(left)
                start = left
            if end in self._length_at:  # and with the run that starts where this ends
                end += self._drop_run(end)
            self._add_run(start, end - start)
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


class HostPool:
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
