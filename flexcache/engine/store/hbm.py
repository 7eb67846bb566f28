"""GPU-memory tier: each blob is one CUDA uint8 tensor.

This is the tier the codec decodes from: `get_tensor` hands out the stored
tensor itself, with no host round trip. Blobs are never written after their
put, so sharing the tensor is safe as long as callers treat it as read-only.

Streams: copies run on a stream the tier owns, after the work already queued
on the caller's current stream, and have finished when a put returns. Output
tensors are allocated on the caller's stream and the tier records the reading
stream on every handed-out tensor, so PyTorch's caching allocator never gives
a blob's memory to someone else while queued kernels still read it.

Nothing here touches CUDA at import time; CUDA is initialised by the first put.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from flexcache.engine.store.base import Tier, TierStats
from flexcache.errors import BackendUnavailableError, CapacityError, ConfigError, TierUnavailableError

STAGING_CHUNK_BYTES = 4 << 20  # two of these, pinned, double-buffer host-to-device copies of bytes


@dataclass(eq=False)
class _Blob:
    tensor: torch.Tensor
    meta: bytes


class HBMTier(Tier):
    """GPU memory; thread-safe, not persistent, `device_resident`.

    Args:
        capacity_bytes: blob bytes the tier may hold on the device.
        device: the CUDA device; "cuda" means the current device at the first put.

    Raises:
        ConfigError: capacity_bytes is not a positive integer, or device is not CUDA.
        BackendUnavailableError: CUDA (or that device) is not available.

    `put` raises CapacityError for a blob larger than the tier and
    TierUnavailableError when it would go over capacity now or the device is
    out of memory. While a key is being replaced both blobs are on the device.

    Example:
        >>> tier = HBMTier(8 << 30)  # doctest: +SKIP
        >>> tier.put("t.00c0ffee", blob, meta)  # doctest: +SKIP
        >>> tier.get_tensor("t.00c0ffee").device  # doctest: +SKIP
        device(type='cuda', index=0)
    """

    name = "hbm"
    persistent = False
    device_resident = True

    def __init__(self, capacity_bytes: int, *, device: str | torch.device = "cuda") -> None:
        if isinstance(capacity_bytes, bool) or not isinstance(capacity_bytes, int) or capacity_bytes <= 0:
            raise ConfigError(f"hbm tier capacity_bytes must be a positive integer; got {capacity_bytes!r}")
        super().__init__(capacity_bytes)
        try:
            requested = torch.device(device)
        except (RuntimeError, TypeError) as exc:
            raise ConfigError(f"hbm tier device must be a CUDA device such as 'cuda:0'; got {device!r}") from exc
        if requested.type != "cuda":
            raise ConfigError(f"hbm tier device must be a CUDA device such as 'cuda:0'; got {device!r}")
        # is_available and device_count ask the driver without initialising CUDA.
        if not torch.cuda.is_available():
            raise BackendUnavailableError(
                "the hbm tier needs a CUDA device; remove it from store.tiers or use host"
            )
        if requested.index is not None and requested.index >= torch.cuda.device_count():
            raise BackendUnavailableError(
                f"the hbm tier asks for {requested} but this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
        self._requested = requested
        self._device: torch.device | None = requested if requested.index is not None else None
        self._lock = threading.Lock()
        self._entries: dict[str, _Blob] = {}
        self._bytes = 0
        self._reserved = 0
        self._stream: torch.cuda.Stream | None = None
        self._staging_lock = threading.Lock()
        self._staging: torch.Tensor | None = None
        self._staging_ready: list[torch.cuda.Event] = []
        self._staging_failed = False
        self._stats = TierStats(self.name, 0, 0, capacity_bytes)

    @property
    def device(self) -> torch.device:
        """The CUDA device blobs live on (resolving "cuda" initialises CUDA)."""
        if self._device is None:
            with self._lock:
                if self._device is None:
                    self._device = torch.device("cuda", torch.cuda.current_device())
        return self._device

    def _side_stream(self) -> torch.cuda.Stream:
        device = self.device
        with self._lock:
            if self._stream is None:
                self._stream = torch.cuda.Stream(device=device)
            return self._stream

    # -- device copies (the only CUDA code; the bookkeeping below is device-agnostic) --

    def _store_bytes(self, blob: bytes) -> torch.Tensor:
        """A new device tensor holding `blob`, copied through a pinned staging buffer."""
        source = np.frombuffer(blob, dtype=np.uint8)
        device, stream = self.device, self._side_stream()
        out = torch.empty(source.size, dtype=torch.uint8, device=device)  # on the caller's stream
        if source.size == 0:
            return out
        stream.wait_stream(torch.cuda.current_stream(device))
        with self._staging_lock:
            staging = self._staging_buffer()
            if staging is None:  # no pinned memory: one pageable copy; the driver stages it
                with torch.cuda.stream(stream):
                    out.copy_(torch.from_numpy(source.copy()))
                stream.synchronize()
                return out
            halves = staging.numpy()
            for number, offset in enumerate(range(0, source.size, STAGING_CHUNK_BYTES)):
                half = number % 2
                size = min(STAGING_CHUNK_BYTES, source.size - offset)
                self._staging_ready[half].synchronize()  # the DMA that last read this half is done
                base = half * STAGING_CHUNK_BYTES
                halves[base:base + size] = source[offset:offset + size]
                with torch.cuda.stream(stream):
                    out[offset:offset + size].copy_(staging[base:base + size], non_blocking=True)
                    self._staging_ready[half].record(stream)
            stream.synchronize()
        return out

    def _staging_buffer(self) -> torch.Tensor | None:
        """Two pinned chunks (staging lock held); None when pinned memory is unavailable."""
        if self._staging is None and not self._staging_failed:
            try:
                self._staging = torch.empty(2 * STAGING_CHUNK_BYTES, dtype=torch.uint8, pin_memory=True)
                self._staging_ready = [torch.cuda.Event(), torch.cuda.Event()]
            except RuntimeError:
                self._staging_failed = True
        return self._staging

    def _store_tensor(self, tensor: torch.Tensor, copy: bool) -> torch.Tensor:
        """A device tensor holding `tensor`'s bytes; `tensor` itself when copy=False allows it."""
        flat = tensor.detach().reshape(-1).contiguous()
        device = self.device
        if not copy and flat.device == device and flat.is_contiguous():
            return flat
        if flat.device.type == "cpu" and not flat.is_pinned():
            return self._store_bytes(memoryview(flat.numpy()))
        stream = self._side_stream()
        out = torch.empty(flat.numel(), dtype=torch.uint8, device=device)
        if flat.numel() == 0:
            return out
        stream.wait_stream(torch.cuda.current_stream(device))
        if flat.device.type == "cuda" and flat.device != device:
            stream.wait_stream(torch.cuda.current_stream(flat.device))
        with torch.cuda.stream(stream):
            out.copy_(flat, non_blocking=True)
        stream.synchronize()
        return out

    def _load_bytes(self, tensor: torch.Tensor) -> bytes:
        stream = self._side_stream()
        stream.wait_stream(torch.cuda.current_stream(tensor.device))  # a copy=False tensor may be in flight
        with torch.cuda.stream(stream):
            host = tensor.to("cpu")  # blocking: the copy is done when it returns
        return host.numpy().tobytes()

    def _hand_out(self, tensor: torch.Tensor) -> torch.Tensor:
        # The caller's stream reads it; if the blob is dropped meanwhile, the caching
        # allocator must wait for that stream before reusing the memory.
        tensor.record_stream(torch.cuda.current_stream(tensor.device))
        return tensor

    # -- bookkeeping ----------------------------------------------------------------------

    def _reserve(self, key: str, nbytes: int) -> None:
        with self._lock:
            if nbytes > self.capacity_bytes:
                self._stats.errors += 1
                raise CapacityError(
                    f"a blob of {nbytes} bytes is larger than the hbm tier ({self.capacity_bytes} bytes)"
                )
            old = self._entries.get(key)
            if self._bytes + self._reserved + nbytes - (old.tensor.numel() if old else 0) > self.capacity_bytes:
                self._stats.errors += 1
                raise TierUnavailableError(
                    f"hbm tier cannot take {nbytes} bytes now "
                    f"({self._bytes} of {self.capacity_bytes} used); make room first"
                )
            self._reserved += nbytes

    def _put_stored(self, key: str, nbytes: int, meta: bytes, store) -> None:
        self._reserve(key, nbytes)
        try:
            tensor = store()
        except torch.cuda.OutOfMemoryError as exc:
            with self._lock:
                self._reserved -= nbytes
                self._stats.errors += 1
            raise TierUnavailableError(f"hbm tier: the device is out of memory for {nbytes} bytes") from exc
        except BaseException:
            with self._lock:
                self._reserved -= nbytes
            raise
        with self._lock:
            self._reserved -= nbytes
            old = self._entries.get(key)
            self._entries[key] = _Blob(tensor, bytes(meta))
            self._bytes += nbytes - (old.tensor.numel() if old else 0)
            self._stats.puts += 1

    def put(self, key: str, blob: bytes, meta: bytes = b"") -> None:
        nbytes = memoryview(blob).nbytes
        self._put_stored(key, nbytes, meta, lambda: self._store_bytes(blob))

    def put_tensor(self, key: str, tensor: torch.Tensor, meta: bytes = b"", *, copy: bool = True) -> None:
        """Store a uint8 tensor's bytes (CPU, pinned CPU or CUDA).

        Args:
            copy: False lets the tier keep `tensor` itself when it is already a
                contiguous tensor on this device (a promotion from
                `HostTier.get_tensor(key, device=...)`). The tensor must be
                ready (no writes still queued) and never written afterwards.

        Raises:
            TypeError: `tensor` is not a uint8 tensor.
        """
        if not isinstance(tensor, torch.Tensor) or tensor.dtype != torch.uint8:
            raise TypeError(f"put_tensor takes a uint8 tensor; got {getattr(tensor, 'dtype', type(tensor))}")
        self._put_stored(key, tensor.numel(), meta, lambda: self._store_tensor(tensor, copy))

    def get(self, key: str) -> bytes | None:
        blob = self._lookup(key)
        return None if blob is None else self._load_bytes(blob.tensor)

    def get_tensor(self, key: str) -> torch.Tensor | None:
        """The stored 1-D uint8 CUDA tensor itself (read-only by contract), or None."""
        blob = self._lookup(key)
        return None if blob is None else self._hand_out(blob.tensor)

    def _lookup(self, key: str) -> _Blob | None:
        with self._lock:
            self._stats.gets += 1
            blob = self._entries.get(key)
            if blob is None:
                self._stats.get_misses += 1
            return blob

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
            self._bytes -= blob.tensor.numel()
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
            return self._bytes + self._reserved + nbytes <= self.capacity_bytes

    def stats(self) -> TierStats:
        with self._lock:
            self._stats.entries = len(self._entries)
            self._stats.bytes_used = self._bytes
            return TierStats(**vars(self._stats))

    def close(self) -> None:
        """Drop every blob; their memory returns to PyTorch's caching allocator."""
        with self._lock:
            self._entries.clear()
            self._bytes = 0
        with self._staging_lock:
            self._staging = None
            self._staging_ready = []
