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
from dataclasses import dataclass, field
from typing import Any

from flexcache.core.blob import Blob, DeviceBlob, host_bytes
from flexcache.core.errors import CorruptBlobError, InvalidLatentError
from flexcache.engine.records import GenerationSignature, SolverState
from flexcache.engine.state_coding import Prediction, decode_predicted_state, encode_predicted_state
from flexcache.kernels.ops import all_finite

BUNDLE_MAGIC = b"FXSS"
BUNDLE_VERSION = 2  # 2: state tensors may be predicted (`state_coding`); 1: every tensor coded alone
PLAIN_BUNDLE_VERSION = 1  # still written where nothing is predicted, so such bundles read as before
_HEAD = struct.Struct("<4sBIH")  # magic, version, JSON bytes, parts
_LENGTH = struct.Struct("<Q")


# Model outputs are coded at this many times the latent's error budget: an error in them reaches the next
# latent scaled by the step's size, and at 4x the resumed runs of `flexcache bench solvers` land as close as
# at 1x, in a quarter fewer bytes (16x lands measurably farther).
MODEL_OUTPUT_BUDGET_SCALE = 4.0


@dataclass
class CodedState:
    """A solver state as a bundle stores it: coded parts, and how predicted tensors are rebuilt."""

    parts: dict[str, Blob]
    predictions: dict[str, Prediction] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)  # decoding order of the predicted tensors


def encode_state(codec: Any, state: SolverState, *, seed: int | None, sigma: float | None,
                 frame_axis: int, latent_blob: Blob | None = None) -> CodedState:
    """The state's tensors coded by the latent's `codec`.

    With `latent_blob` (x_K's blob) and a codec with a sigma budget, each tensor is predicted from
    the decoded x_K, the seed noise and the tensors before it, and only its residual is coded
    (`state_coding`). Otherwise each is coded alone: trajectory points against the seed's noise as
    x_K is, model outputs at `MODEL_OUTPUT_BUDGET_SCALE` times the latent's budget.
    """
    budget_sigmas = {name: sigma if name in state.noisy or sigma is None else sigma * MODEL_OUTPUT_BUDGET_SCALE
                     for name in state.tensors}
    if latent_blob is not None and state.tensors:
        device = next(iter(state.tensors.values())).device
        latent = codec.decode(latent_blob, device=device)
        predicted = encode_predicted_state(codec, state, latent=latent, seed=seed, budget_sigmas=budget_sigmas,
                                           frame_axis=frame_axis)
        if predicted is not None:
            parts, predictions = predicted
            return CodedState(parts, predictions, list(predictions))
    parts = {}
    for name, tensor in state.tensors.items():
        noisy = name in state.noisy
        parts[name] = codec.encode(tensor, seed=seed if noisy else None, sigma=budget_sigmas[name],
                                   frame_axis=frame_axis)
    return CodedState(parts)


def decode_state(codec: Any, coded: CodedState, latent: Any, device: Any = None) -> dict[str, Any]:
    """The state tensors of a bundle, given x_K decoded (`latent`), on `device`.

    Raises:
        CorruptBlobError: a part or a prediction that cannot be what `encode_state` wrote.
    """
    tensors = {name: codec.decode(part, device=device) for name, part in coded.parts.items()
               if name not in coded.predictions}
    if coded.predictions:
        tensors.update(decode_predicted_state(codec, coded.parts, coded.predictions, coded.order,
                                              latent.to(device) if device is not None else latent))
    return tensors


def encode_bundle(latent_blob: Blob, solver: str, scalars: dict[str, Any],
                  parts: CodedState | dict[str, Blob]) -> Blob:
    """One blob holding `latent_blob` and the coded state (host bytes; a device latent stays there)."""
    coded = parts if isinstance(parts, CodedState) else CodedState(dict(parts))
    names = sorted(coded.parts)
    content: dict[str, Any] = {"solver": solver, "scalars": scalars, "parts": names}
    version = PLAIN_BUNDLE_VERSION
    if coded.predictions:
        content["predict"] = {name: prediction.to_dict() for name, prediction in coded.predictions.items()}
        content["order"] = list(coded.order)
        version = BUNDLE_VERSION
    table = json.dumps(content, sort_keys=True, separators=(",", ":")).encode()
    bodies = [bytes(host_bytes(coded.parts[name])) for name in names]
    head = _HEAD.pack(BUNDLE_MAGIC, version, len(table), len(names))
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


def split_bundle(blob: Blob) -> tuple[Blob, tuple[str, dict[str, Any], CodedState] | None]:
    """(latent blob, (solver, scalars, coded state) or None for a plain latent blob).

    Reads both bundle versions: 1 (every tensor coded alone) and 2 (predicted tensors).

    Raises:
        CorruptBlobError: a bundle that is truncated or whose table does not parse.
    """
    if not is_bundle(blob):
        return blob, None
    magic, version, table_nbytes, count = _HEAD.unpack(_read(blob, 0, _HEAD.size))
    if version not in (PLAIN_BUNDLE_VERSION, BUNDLE_VERSION):
        raise CorruptBlobError(f"solver-state bundle version {version} is not one this version reads "
                               f"({PLAIN_BUNDLE_VERSION} or {BUNDLE_VERSION})")
    lengths_end = _HEAD.size + count * _LENGTH.size
    head_end = lengths_end + table_nbytes
    head = _read(blob, 0, head_end)
    lengths = [_LENGTH.unpack_from(head, _HEAD.size + i * _LENGTH.size)[0] for i in range(count)]
    try:
        table = json.loads(head[lengths_end:])
        names = list(table["parts"])
        solver, scalars = str(table["solver"]), dict(table["scalars"])
        predict = dict(table.get("predict", {})) if version == BUNDLE_VERSION else {}
        order = [str(name) for name in table.get("order", [])] if predict else []
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptBlobError(f"solver-state bundle table is unreadable: {exc}") from None
    predictions = {str(name): Prediction.from_dict(value) for name, value in predict.items()}
    if sorted(order) != sorted(predictions):
        raise CorruptBlobError("solver-state bundle's decoding order does not list its predicted parts")
    if len(names) != count:
        raise CorruptBlobError(f"solver-state bundle names {len(names)} parts, its head {count}")
    offset = head_end
    parts = {}
    for name, length in zip(names, lengths):
        parts[name] = _read(blob, offset, offset + length)
        offset += length
    if offset >= len(blob):
        raise CorruptBlobError("solver-state bundle holds no latent")
    missing = _referenced(scalars) - set(names) - set(predictions)
    if missing:
        raise CorruptBlobError(f"solver-state bundle lacks the parts its scalars name: {sorted(missing)}")
    latent = blob.suffix(offset) if isinstance(blob, DeviceBlob) else memoryview(blob)[offset:]
    return latent, (solver, scalars, CodedState(parts, predictions, order))


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
