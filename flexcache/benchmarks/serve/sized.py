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


# What a multistep solver's state holds beside x_K (`integrations.solver_state`): (model outputs, trajectory points).
_STATE_TENSORS = {"unipc": (2, 1), "dpm++": (2, 0)}


def measure_entry_sizes(profile: ModelProfile, fractions: tuple[float, ...], seed: int = 0, *,
                        solver_state: bool = True) -> dict[int, int]:
    """Bytes the default codec needs per checkpoint step for a latent of the profile's shape.

    Under a multistep solver an entry also holds its state (planner.solver_state): the model outputs are
    taken as the proxy's clean latent x0 (what flow solvers store of them: x0 predictions) and UniPC's last
    sample as the proxy's latent a step earlier, coded as the engine codes them.
    """
    from flexcache.benchmarks.codec_bench import correlated_proxy
    from flexcache.codec import build_codec
    from flexcache.core import CodecConfig
    from flexcache.engine import (
        SolverState,
        checkpoint_steps,
        encode_bundle,
        encode_state,
    )
    from flexcache.kernels import seeded_noise

    codec = build_codec(CodecConfig())
    dtype = getattr(torch, profile.latent_dtype)
    sizes = {}
    wanted = set(checkpoint_steps(profile.steps, fractions))
    outputs, points = _STATE_TENSORS.get(profile.solver, (0, 0)) if solver_state else (0, 0)
    for step, sigma, latent in correlated_proxy(profile.latent_shape, profile.steps, seed):
        if step in wanted:
            blob = codec.encode(latent.to(dtype), seed=seed, sigma=sigma)
            if outputs:
                eps = seeded_noise(profile.latent_shape, seed)
                x0 = (latent - sigma * eps) / (1 - sigma)
                earlier = min(1.0, sigma * 1.05)  # a step before K, on a 50-step flow schedule
                tensors = {f"model_outputs.{i}": x0.to(dtype) for i in range(outputs)}
                tensors.update({f"last_sample.{i}": ((1 - earlier) * x0 + earlier * eps).to(dtype)
                                for i in range(points)})
                state = SolverState(profile.solver, {}, tensors, frozenset(n for n in tensors if "last" in n))
                parts = encode_state(codec, state, seed=seed, sigma=sigma, frame_axis=1)
                blob = encode_bundle(blob, profile.solver, {}, parts)
            sizes[step] = len(blob)
    missing = wanted - set(sizes)
    if missing:  # checkpoints outside the proxy's set: the nearest measured size
        for step in missing:
            sizes[step] = sizes[min(sizes, key=lambda s: abs(s - step))]
    return sizes
