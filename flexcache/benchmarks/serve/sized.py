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
# How the proxy's state departs from what x_K already says. Taken from the toy world's real runs
# (`flexcache bench solvers`, 20 steps, K = 4, 8, 12): UniPC's and DPM-Solver++'s newest x0 prediction sits
# 10-33 % of its own spread away from the best linear fit on x_K and the seed noise, and consecutive x0
# predictions 11-18 % apart. (Outputs equal to x_K's implied x0, as this proxy once took them, would be
# predicted exactly and flatter the predictive coding.)
PROXY_STATE_ASSUMPTIONS = {
    "newest_model_output": "x0 + a smooth field (the proxy's correlations) at 25 % of x0's std",
    "older_model_outputs": "the next newer output + a smooth field at 15 % of x0's std",
    "last_sample": "(1 - s) x the oldest output + s eps, s the sigma a step before K (50-step flow schedule)",
}


def _proxy_state(solver: str, x0: torch.Tensor, eps: torch.Tensor, sigma: float, dtype: torch.dtype, seed: int):
    from flexcache.benchmarks.codec_bench import _smooth
    from flexcache.engine import SolverState

    outputs, points = _STATE_TENSORS[solver]
    generator = torch.Generator().manual_seed(seed + 1)

    def field() -> torch.Tensor:
        value = torch.randn(x0.shape, generator=generator)
        for dim, std in ((1, 1.5), (2, 2.0), (3, 2.0)):
            value = _smooth(value, dim, std)
        return value / value.std() * x0.std()

    newest = x0 + 0.25 * field()
    chain = [newest]
    for _ in range(outputs - 1):
        chain.append(chain[-1] + 0.15 * field())
    tensors = {f"model_outputs.{outputs - 1 - i}": output.to(dtype) for i, output in enumerate(chain)}
    earlier = min(1.0, sigma * 1.05)  # a step before K, on a 50-step flow schedule
    tensors.update({f"last_sample.{i}": ((1 - earlier) * chain[-1] + earlier * eps).to(dtype) for i in range(points)})
    return SolverState(solver, {}, tensors, frozenset(n for n in tensors if "last" in n))


def measure_entry_sizes(profile: ModelProfile, fractions: tuple[float, ...], seed: int = 0, *,
                        solver_state: bool = True) -> dict[int, int]:
    """Bytes the default codec needs per checkpoint step for a latent of the profile's shape.

    Under a multistep solver an entry also holds its state (planner.solver_state), coded as the
    engine codes it (predicted from x_K, `engine.state_coding`); the state is the proxy's, see
    `PROXY_STATE_ASSUMPTIONS`.
    """
    from flexcache.benchmarks.codec_bench import correlated_proxy
    from flexcache.codec import build_codec
    from flexcache.core import CodecConfig
    from flexcache.engine import checkpoint_steps, encode_bundle, encode_state
    from flexcache.kernels import seeded_noise

    codec = build_codec(CodecConfig())
    dtype = getattr(torch, profile.latent_dtype)
    sizes = {}
    wanted = set(checkpoint_steps(profile.steps, fractions))
    with_state = solver_state and profile.solver in _STATE_TENSORS
    for step, sigma, latent in correlated_proxy(profile.latent_shape, profile.steps, seed):
        if step in wanted:
            blob = codec.encode(latent.to(dtype), seed=seed, sigma=sigma)
            if with_state:
                eps = seeded_noise(profile.latent_shape, seed)
                x0 = (latent - sigma * eps) / (1 - sigma)
                state = _proxy_state(profile.solver, x0, eps, sigma, dtype, seed)
                coded = encode_state(codec, state, seed=seed, sigma=sigma, frame_axis=1, latent_blob=blob)
                blob = encode_bundle(blob, profile.solver, {}, coded)
            sizes[step] = len(blob)
    missing = wanted - set(sizes)
    if missing:  # checkpoints outside the proxy's set: the nearest measured size
        for step in missing:
            sizes[step] = sizes[min(sizes, key=lambda s: abs(s - step))]
    return sizes
