"""FXSS: a checkpoint's latent blob together with its solver state, as one stored blob.

An entry captured under a multistep solver (`SolverState`) stores

    head | part lengths | JSON | state parts | latent blob

where each state part is a codec blob of one state tensor and the JSON holds
the solver's name, its scalars and the parts' names (docs/format.md). The
latent comes last, so a device blob's latent is a suffix of it with no copy.
Entries without state store the latent blob alone, as before. No checksum of
its own: what leaves process memory is framed by the store's integrity layer
(`store.integrity`), like every blob; here only the structure is checked.
"""

from __future__ import annotations

import json
import struct
from typing import Any

from flexcache.core.blob import Blob, DeviceBlob, host_bytes
from flexcache.core.errors import CorruptBlobError, InvalidLatentError
from flexcache.engine.records import GenerationSignature, SolverState
from flexcache.kernels.ops import all_finite

BUNDLE_MAGIC = b"FXSS"
BUNDLE_VERSION = 1
_HEAD = struct.Struct("<4sBIH")  # magic, version, JSON bytes, parts
_LENGTH = struct.Struct("<Q")


# Model outputs are coded at this many times the latent's error budget: an error in them reaches the next
# latent scaled by the step's size, and at 4x the resumed runs of `flexcache bench solvers` land as close as
# at 1x, in a quarter fewer bytes (16x lands measurably farther).
MODEL_OUTPUT_BUDGET_SCALE = 4.0


def encode_state(codec: Any, state: SolverState, *, seed: int | None, sigma: float | None,
                 frame_axis: int) -> dict[str, Blob]:
    """The state's tensors coded by the latent's `codec`: trajectory points against the seed's noise as x_K is."""
    parts = {}
    for name, tensor in state.tensors.items():
        noisy = name in state.noisy
        budget_sigma = sigma if noisy or sigma is None else sigma * MODEL_OUTPUT_BUDGET_SCALE
        parts[name] = codec.encode(tensor, seed=seed if noisy else None, sigma=budget_sigma, frame_axis=frame_axis)
    return parts


def encode_bundle(latent_blob: Blob, solver: str, scalars: dict[str, Any], parts: dict[str, Blob]) -> Blob:
    """One blob holding `latent_blob` and the coded state `parts` (host bytes; a device latent stays there)."""
    names = sorted(parts)
    table = json.dumps({"solver": solver, "scalars": scalars, "parts": names}, sort_keys=True,
                       separators=(",", ":")).encode()
    bodies = [bytes(host_bytes(parts[name])) for name in names]
    head = _HEAD.pack(BUNDLE_MAGIC, BUNDLE_VERSION, len(table), len(names))
    head += b"".join(_LENGTH.pack(len(body)) for body in bodies) + table
    prefix = head + b"".join(bodies)
    if isinstance(latent_blob, DeviceBlob):
        return latent_blob.prepend(prefix)
    return prefix + bytes(latent_blob)


def _read(blob: Blob, start: int, stop: int) -> bytes:
    if stop > len(blob):
        raise CorruptBlobError(f"solver-state bundle of {len(blob)} bytes is truncated (needs {stop})")
    return blob.to_host(start, stop) if isinstance(blob, DeviceBlob) else bytes(memoryview(blob)[start:stop])


def _referenced(scalars: dict[str, Any]) -> set[str]:
    slots = [slot for value in scalars.values() for slot in (value if isinstance(value, list) else [value])]
    return {slot["tensor"] for slot in slots if isinstance(slot, dict) and "tensor" in slot}


def is_bundle(blob: Blob) -> bool:
    return len(blob) >= 4 and _read(blob, 0, 4) == BUNDLE_MAGIC


def split_bundle(blob: Blob) -> tuple[Blob, tuple[str, dict[str, Any], dict[str, bytes]] | None]:
    """(latent blob, (solver, scalars, coded parts) or None for a plain latent blob).

    Raises:
        CorruptBlobError: a bundle that is truncated or whose table does not parse.
    """
    if not is_bundle(blob):
        return blob, None
    magic, version, table_nbytes, count = _HEAD.unpack(_read(blob, 0, _HEAD.size))
    if version != BUNDLE_VERSION:
        raise CorruptBlobError(f"solver-state bundle version {version} is not {BUNDLE_VERSION}")
    lengths_end = _HEAD.size + count * _LENGTH.size
    head_end = lengths_end + table_nbytes
    head = _read(blob, 0, head_end)
    lengths = [_LENGTH.unpack_from(head, _HEAD.size + i * _LENGTH.size)[0] for i in range(count)]
    try:
        table = json.loads(head[lengths_end:])
        names = list(table["parts"])
        solver, scalars = str(table["solver"]), dict(table["scalars"])
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptBlobError(f"solver-state bundle table is unreadable: {exc}") from None
    if len(names) != count:
        raise CorruptBlobError(f"solver-state bundle names {len(names)} parts, its head {count}")
    offset = head_end
    parts = {}
    for name, length in zip(names, lengths):
        parts[name] = _read(blob, offset, offset + length)
        offset += length
    if offset >= len(blob):
        raise CorruptBlobError("solver-state bundle holds no latent")
    missing = _referenced(scalars) - set(names)
    if missing:
        raise CorruptBlobError(f"solver-state bundle lacks the parts its scalars name: {sorted(missing)}")
    latent = blob.suffix(offset) if isinstance(blob, DeviceBlob) else memoryview(blob)[offset:]
    return latent, (solver, scalars, parts)



def checked_state(step: int, state: SolverState, signature: GenerationSignature) -> SolverState:
    """`state` with its tensors in the signature's latent shape (a leading batch of 1 dropped), or an error."""
    if not isinstance(state, SolverState):
        raise InvalidLatentError(f"solver state for step {step} must be a SolverState; got {type(state).__name__}")
    try:
        json.dumps(state.scalars)
    except (TypeError, ValueError) as exc:
        raise InvalidLatentError(f"solver state for step {step} has scalars JSON cannot hold: {exc}") from None
    tensors = {}
    for name, tensor in state.tensors.items():
        if tensor.dim() == len(signature.latent_shape) + 1 and tensor.shape[0] == 1:
            tensor = tensor[0]
        if tuple(tensor.shape) != signature.latent_shape or not tensor.is_floating_point():
            raise InvalidLatentError(f"solver state {name!r} for step {step} is a {tensor.dtype} of shape "
                                     f"{tuple(tensor.shape)}; it must be floating point of the latent's shape "
                                     f"{signature.latent_shape}")
        if not all_finite(tensor):
            raise InvalidLatentError(f"solver state {name!r} for step {step} holds NaN or infinite values")
        tensors[name] = tensor.detach()
    return SolverState(state.solver, state.scalars, tensors, frozenset(state.noisy) & set(tensors))
