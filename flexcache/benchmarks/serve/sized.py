"""Simulated store contents: blobs of a measured size that hold only a header, in a tier that accounts them.

A 64 GB budget of 20 MB latents would not fit a laptop, and the simulator
never looks at latent values: `SizedCodec` makes blobs of the size the real
codec gives a latent of the profile's shape (`measure_entry_sizes`), and
`AccountedTier` keeps each blob's head while accounting its full length.
"""

from __future__ import annotations

import json
import struct

import torch

from flexcache.benchmarks.serve.profiles import ModelProfile
from flexcache.codec import LatentCodec
from flexcache.core import CorruptBlobError
from flexcache.store import MemoryTier

_HEADER = struct.Struct("<4sI")  # magic, JSON length
_MAGIC = b"FCSZ"


class SizedBlob:
    """A blob as the store sees it: `size` bytes long, of which only the leading `head` exists.

    Materializing tens of MB of zeros per simulated insert dominated the run;
    the store only asks a blob for its length and `AccountedTier` for its head.
    """

    __slots__ = ("head", "size")

    def __init__(self, head: bytes, size: int) -> None:
        self.head, self.size = head, size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: slice) -> bytes:
        if not isinstance(index, slice) or index.start not in (None, 0) or index.step not in (None, 1):
            raise TypeError("a SizedBlob only gives its leading bytes (blob[:n])")
        stop = self.size if index.stop is None else min(index.stop, self.size)
        return self.head[:stop] + bytes(max(0, stop - len(self.head)))


class SizedCodec(LatentCodec):
    """Blobs of a given size per checkpoint step whose content is only the latent's shape and dtype.

    `sizes` maps a step to a blob size in bytes; decode returns zeros of the
    recorded shape (the simulator never looks at latent values).
    """

    name = "sized"

    def __init__(self, sizes: dict[int, int]) -> None:
        self.sizes = sizes

    def encode(self, latent: torch.Tensor, *, seed: int | None = None, sigma: float | None = None,
               frame_axis: int = 1) -> bytes:
        info = json.dumps({"shape": list(latent.shape), "dtype": str(latent.dtype).removeprefix("torch.")}).encode()
        head = _HEADER.pack(_MAGIC, len(info)) + info
        return SizedBlob(head, max(len(head), self.sizes[int(sigma)]))  # the simulator passes the step as sigma

    def decode(self, blob, device=None) -> torch.Tensor:
        data = bytes(blob[:_HEADER.size])
        magic, length = _HEADER.unpack(data) if len(data) == _HEADER.size else (b"", 0)
        if magic != _MAGIC:
            raise CorruptBlobError("not a sized-codec blob")
        info = json.loads(bytes(blob[_HEADER.size:_HEADER.size + length]))
        return torch.zeros(info["shape"], dtype=getattr(torch, info["dtype"]), device=device)


class AccountedTier(MemoryTier):
    """A memory tier that keeps only each blob's header but accounts its full length."""

    name = "accounted"
    KEEP = 256

    def __init__(self, capacity_bytes: int) -> None:
        super().__init__(capacity_bytes)
        self._full: dict[str, int] = {}

    def put(self, key: str, blob: bytes, meta: bytes = b"") -> None:
        with self._lock:
            self._bytes += len(blob) - self._full.get(key, 0)
            self._full[key] = len(blob)
            self._blobs[key] = bytes(blob[:self.KEEP])
            self._meta[key] = bytes(meta)
            self._stats.puts += 1

    def remove(self, key: str) -> bool:
        with self._lock:
            if self._blobs.pop(key, None) is None:
                return False
            self._meta.pop(key, None)
            self._bytes -= self._full.pop(key)
            self._stats.removes += 1
            return True


def measure_entry_sizes(profile: ModelProfile, fractions: tuple[float, ...], seed: int = 0) -> dict[int, int]:
    """Bytes the default codec needs per checkpoint step for a latent of the profile's shape."""
    from flexcache.benchmarks.codec_bench import correlated_proxy
    from flexcache.codec import build_codec
    from flexcache.core import CodecConfig
    from flexcache.engine import checkpoint_steps

    codec = build_codec(CodecConfig())
    sizes = {}
    wanted = set(checkpoint_steps(profile.steps, fractions))
    for step, sigma, latent in correlated_proxy(profile.latent_shape, profile.steps, seed):
        if step in wanted:
            sizes[step] = len(codec.encode(latent.to(getattr(torch, profile.latent_dtype)), seed=seed, sigma=sigma))
    missing = wanted - set(sizes)
    if missing:  # checkpoints outside the proxy's set: the nearest measured size
        for step in missing:
            sizes[step] = sizes[min(sizes, key=lambda s: abs(s - step))]
    return sizes
