"""What the codec writes and the store keeps: a blob is bytes, or a uint8 tensor on a device.

A `DeviceBlob` is the device form: the blob's bytes as a 1-D uint8 tensor
(read-only by contract) plus a host copy of its first bytes (`head`), so a
decoder reads the blob's headers without a device-to-host copy and the
payload never leaves the device. Every conversion of a `DeviceBlob` to host
bytes goes through `DeviceBlob.to_host`, and every upload through
`DeviceBlob.from_host`: the two places a test (or a profiler) watches to prove
that a hit in device memory stays there.
"""

from __future__ import annotations

from typing import Any, Union

import torch

from flexcache.core.errors import InvalidLatentError

# The host copy a DeviceBlob keeps of its first bytes. Large enough for the blob container's
# header, the codec's parameters and the lossless container's chunk table of any latent we
# cache (a 1 GiB raw stream in 1 MiB chunks needs about 4.1 KB of tables).
HEAD_BYTES = 8192


class DeviceBlob:
    """A blob held in device memory.

    Args:
        tensor: the blob's bytes, a 1-D contiguous uint8 tensor (on any device).
        head: a host copy of the blob's first bytes (any prefix; writers keep
            at least ``HEAD_BYTES`` or the whole header); copied from `tensor`
            when omitted (one small device-to-host copy).

    Raises:
        InvalidLatentError: `tensor` is not a 1-D contiguous uint8 tensor, or
            `head` is longer than it.

    Example:
        >>> blob = DeviceBlob(torch.tensor([1, 2, 3], dtype=torch.uint8))
        >>> len(blob), blob.head, blob.to_host(1)
        (3, b'\\x01\\x02\\x03', b'\\x02\\x03')
    """

    __slots__ = ("tensor", "head")

    def __init__(self, tensor: torch.Tensor, head: bytes | None = None) -> None:
        if not isinstance(tensor, torch.Tensor) or tensor.dtype != torch.uint8 or tensor.dim() != 1:
            raise InvalidLatentError(
                f"a device blob is a 1-D uint8 tensor; got {getattr(tensor, 'dtype', type(tensor).__name__)} "
                f"of shape {tuple(getattr(tensor, 'shape', ()))}")
        if not tensor.is_contiguous():
            raise InvalidLatentError("a device blob's tensor must be contiguous")
        self.tensor = tensor
        if head is None:
            head = _copy_to_host(tensor[:HEAD_BYTES])
        head = bytes(head)
        if len(head) > tensor.numel():
            raise InvalidLatentError(f"a device blob's head holds {len(head)} bytes, more than its {tensor.numel()}")
        self.head = head

    @classmethod
    def from_host(cls, data: bytes | bytearray | memoryview, device: torch.device | str) -> DeviceBlob:
        """Upload host bytes to `device` (the one host-to-device copy of a blob)."""
        view = memoryview(data)
        view = view if view.format == "B" and view.ndim == 1 else view.cast("B")
        if not len(view):
            source = torch.empty(0, dtype=torch.uint8)
        else:  # a read-only buffer (bytes) needs a writable copy for torch.frombuffer
            source = torch.frombuffer(view if not view.readonly else bytearray(view), dtype=torch.uint8)
        return cls(source.to(device), bytes(view[:HEAD_BYTES]))

    def __len__(self) -> int:
        return self.tensor.numel()

    @property
    def device(self) -> torch.device:
        return self.tensor.device

    def to_host(self, start: int = 0, stop: int | None = None) -> bytes:
        """Bytes ``start .. stop`` on the host: from `head` when it covers them, else a device-to-host copy."""
        stop = len(self) if stop is None else min(stop, len(self))
        start = max(0, min(start, stop))
        if stop <= len(self.head):
            return self.head[start:stop]
        return _copy_to_host(self.tensor[start:stop])

    def view(self, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Bytes ``start .. stop`` as a tensor on the blob's device (no copy)."""
        return self.tensor[start:stop]

    def prepend(self, header: bytes) -> DeviceBlob:
        """`header` (host bytes) in front of this blob, on its device: one small upload and a device copy."""
        on_device = type(self).from_host(header, self.device).tensor
        return type(self)(torch.cat([on_device, self.tensor]), header + self.head)

    def suffix(self, start: int) -> DeviceBlob:
        """The blob from byte `start` on, with what its head covers of it (no copy)."""
        return type(self)(self.tensor[start:], self.head[start:])

    def __repr__(self) -> str:
        return f"DeviceBlob({len(self)} bytes on {self.device})"


def _copy_to_host(tensor: torch.Tensor) -> bytes:
    if tensor.numel() == 0:
        return b""
    return tensor.detach().to("cpu").contiguous().numpy().tobytes()


Blob = Union[bytes, bytearray, memoryview, DeviceBlob]


def blob_nbytes(blob: Any) -> int:
    """The length of a blob in bytes, whatever its form."""
    if isinstance(blob, memoryview):
        return blob.nbytes
    return len(blob)


def host_bytes(blob: Blob) -> bytes | bytearray | memoryview:
    """The blob as host bytes: itself when it already is, else `DeviceBlob.to_host` (a copy)."""
    if isinstance(blob, DeviceBlob):
        return blob.to_host()
    return blob


def is_device_blob(blob: Any) -> bool:
    return isinstance(blob, DeviceBlob)
