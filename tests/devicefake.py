"""An HBM tier whose device is the CPU and which records every host <-> device copy.

`HBMTier` keeps all its CUDA work in four methods (`_upload`, `_keep`,
`_download`, `_hand_out`); this subclass replaces them with CPU copies that
append to `copies`, and stores its blobs as `RecordingDeviceBlob`s, whose
`to_host` (the one way a device blob's bytes reach the host) records too. A
test drives the real store, codec and engine over it and reads `copies` to
prove that a hit served from device memory never crossed to the host.
"""

from __future__ import annotations

import torch

from flexcache.core.blob import DeviceBlob
from flexcache.store.hbm import HBMTier


def recording_blob_class(copies: list[tuple[str, int]]) -> type[DeviceBlob]:
    class RecordingDeviceBlob(DeviceBlob):
        __slots__ = ()

        def to_host(self, start: int = 0, stop: int | None = None) -> bytes:
            stop_at = len(self) if stop is None else min(stop, len(self))
            if stop_at > len(self.head):  # what the head does not cover is a device-to-host copy
                copies.append(("d2h", stop_at - start))
            return super().to_host(start, stop)

    return RecordingDeviceBlob


class CpuHBMTier(HBMTier):
    """`HBMTier`'s bookkeeping on a CPU "device", with every crossing recorded in `copies`."""

    def __init__(self, capacity_bytes: int) -> None:
        super().__init__(capacity_bytes)
        self.copies: list[tuple[str, int]] = []
        self._blob_class = recording_blob_class(self.copies)

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def _upload(self, blob) -> torch.Tensor:
        self.copies.append(("h2d", len(blob)))
        return torch.frombuffer(bytearray(blob), dtype=torch.uint8) if len(blob) else torch.empty(0, dtype=torch.uint8)

    def _keep(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor  # already on this "device": kept, never copied

    def _download(self, blob: DeviceBlob) -> bytes:
        self.copies.append(("d2h", len(blob)))
        return blob.tensor.numpy().tobytes()

    def _hand_out(self, blob: DeviceBlob) -> DeviceBlob:
        return blob

    def put(self, key, blob, meta=b""):
        super().put(key, blob, meta)
        with self._lock:  # re-type what was stored, so reads of its bytes are recorded
            held = self._entries.get(key)
            if held is not None and not isinstance(held.storage, self._blob_class):
                held.storage = self._blob_class(held.storage.tensor, held.storage.head)
