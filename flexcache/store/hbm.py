"""GPU-memory tier: each blob is a `DeviceBlob`, a CUDA uint8 tensor with a host copy of its head.

This is the tier the codec decodes from: ``get(key, device=<its device>)``
hands out the stored `DeviceBlob` itself, with no host round trip, and a
`DeviceBlob` put here (what the codec writes on a GPU) is kept as it is.
Blobs are never written after their put, so sharing the tensor is safe as
long as callers treat it as read-only. Host bytes come back only for
``get(key)`` without a device: what a demotion or a write-behind copy needs.

Streams: copies run on a stream the tier owns, after the work already queued
on the caller's current stream, and have finished when a put returns. Output
tensors are allocated on the caller's stream and the tier records the reading
stream on every handed-out tensor, so PyTorch's caching allocator never gives
a blob's memory to someone else while queued kernels still read it.

The device copies are four small methods (`_upload`, `_keep`, `_download`,
`_hand_out`); everything else is `resident.ResidentTier`'s bookkeeping.
Nothing here touches CUDA at import time; CUDA is initialised by the first put.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import torch

from flexcache.core.blob import HEAD_BYTES, Blob, DeviceBlob
from flexcache.core.errors import (
    BackendUnavailableError,
    ConfigError,
    TierUnavailableError,
)
from flexcache.store.resident import Held, ResidentTier

STAGING_CHUNK_BYTES = 4 << 20  # two of these, pinned, double-buffer host-to-device copies of bytes


class HBMTier(ResidentTier):
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
        >>> tier.get("t.00c0ffee", device="cuda").device  # doctest: +SKIP
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
        self._device: torch.device | None = requested if requested.index is not None else None
        self._device_lock = threading.Lock()
        self._stream: torch.cuda.Stream | None = None
        self._staging_lock = threading.Lock()
        self._staging: torch.Tensor | None = None
        self._staging_ready: list[torch.cuda.Event] = []
        self._staging_failed = False

    @property
    def device(self) -> torch.device:
        """The CUDA device blobs live on (resolving "cuda" initialises CUDA)."""
        if self._device is None:
            with self._device_lock:
                if self._device is None:
                    self._device = torch.device("cuda", torch.cuda.current_device())
        return self._device

    def _is_mine(self, device: Any) -> bool:
        target = torch.device(device)
        if target.type != self.device.type:
            return False
        if target.type == "cuda" and target.index is None:
            target = torch.device("cuda", torch.cuda.current_device())
        return target == self.device

    def _side_stream(self) -> torch.cuda.Stream:
        device = self.device
        with self._device_lock:
            if self._stream is None:
                self._stream = torch.cuda.Stream(device=device)
            return self._stream

    # -- device copies (the only CUDA code; the bookkeeping is ResidentTier's) -----------

    def _upload(self, blob: bytes | bytearray | memoryview) -> torch.Tensor:
        """A new device tensor holding host bytes, copied through a pinned staging buffer."""
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

    def _keep(self, tensor: torch.Tensor) -> torch.Tensor:
        """A device tensor holding a `DeviceBlob`'s bytes: the tensor itself when it is on this device."""
        device = self.device
        if tensor.device == device:
            return tensor  # written by the codec on this device: kept, never copied
        if tensor.device.type == "cpu" and not tensor.is_pinned():
            return self._upload(memoryview(tensor.numpy()))
        stream = self._side_stream()
        out = torch.empty(tensor.numel(), dtype=torch.uint8, device=device)
        if tensor.numel() == 0:
            return out
        stream.wait_stream(torch.cuda.current_stream(device))
        if tensor.device.type == "cuda":
            stream.wait_stream(torch.cuda.current_stream(tensor.device))
        with torch.cuda.stream(stream):
            out.copy_(tensor, non_blocking=True)
        stream.synchronize()
        return out

    def _download(self, blob: DeviceBlob) -> bytes:
        stream = self._side_stream()
        stream.wait_stream(torch.cuda.current_stream(blob.device))  # a kept tensor may still be in flight
        with torch.cuda.stream(stream):
            return blob.to_host()  # blocking: the copy is done when it returns

    def _hand_out(self, blob: DeviceBlob) -> DeviceBlob:
        # The caller's stream reads it; if the blob is dropped meanwhile, the caching
        # allocator must wait for that stream before reusing the memory.
        blob.tensor.record_stream(torch.cuda.current_stream(blob.device))
        return blob

    # -- the Tier interface -------------------------------------------------------------------

    def put(self, key: str, blob: Blob, meta: bytes = b"") -> None:
        """Store host bytes (uploaded) or a `DeviceBlob` (kept as it is when it is on this device)."""
        if isinstance(blob, DeviceBlob):
            def store() -> DeviceBlob:
                return DeviceBlob(self._keep(blob.tensor), blob.head)
            nbytes = len(blob)
        else:
            view = memoryview(blob).cast("B") if not isinstance(blob, bytes) else memoryview(blob)
            nbytes = len(view)

            def store() -> DeviceBlob:
                return DeviceBlob(self._upload(view), bytes(view[:HEAD_BYTES]))

        def write(held: Held) -> DeviceBlob:
            try:
                return store()
            except torch.cuda.OutOfMemoryError as exc:
                with self._lock:
                    self._stats.errors += 1
                raise TierUnavailableError(f"hbm tier: the device is out of memory for {nbytes} bytes") from exc

        self._put_with(key, nbytes, meta, write)

    def get(self, key: str, device: Any = None) -> Blob | None:
        """The stored `DeviceBlob` for this tier's device (no copy), else host bytes (a device-to-host copy).

        Args:
            device: this tier's device: the blob itself, read-only by contract.
                Another CUDA device: a copy there. None or CPU: host bytes.
        """
        if device is not None and self._is_mine(device):
            return self._read(key, lambda held: self._hand_out(held.storage))
        if device is not None and torch.device(device).type == "cuda":
            return self._read(key, lambda held: DeviceBlob(held.storage.tensor.to(device), held.storage.head))
        return self._read(key, lambda held: self._download(held.storage))

    def _reset_locked(self) -> None:
        with self._staging_lock:
            self._staging = None
            self._staging_ready = []
