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
