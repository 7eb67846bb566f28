"""Predictive coding of a multistep solver's state: only what x_K and the seed noise do not already say.

A checkpoint under UniPC or DPM-Solver++ stores, beside x_K, the solver's last
model outputs (x0 predictions for flow models) and UniPC's last sample. Coded
on their own they cost 3-5x the bytes of x_K (README, "Solver state"), yet
they are nearly determined by what the decoder already holds:

* a flow model's x0 prediction at step K is close to (x_K - sigma_K eps) / (1 - sigma_K);
* consecutive x0 predictions differ little;
* the solver's own update ties them together: UniPC's x_K is a linear
  combination of its last sample and its two model outputs, so once the
  outputs are known the last sample is (toy world: residual under 3 % of it).

So each state tensor is predicted, channel by channel, as a least-squares
linear combination of its *references*: the decoded x_K, the regenerated seed
noise, and the state tensors decoded before it (model outputs newest first,
trajectory points last). The coefficients go into the bundle's table; only the
residual is coded, by the entry's codec, at the tensor's own error budget. The
loop is closed: the encoder predicts from decoded references, as the decoder
will, so a tensor's error is its residual's coding error and the budget holds
as it did without prediction. Where the prediction alone meets the budget no
residual is stored at all.

Not predicted (coded alone, as before): tensors of a lossless codec (exact
resume stays bit-exact), of a codec without a sigma budget, and any entry
written before this format (bundle version 1).
"""

from __future__ import annotations

import base64
import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from flexcache.core.blob import Blob
from flexcache.core.errors import CorruptBlobError
from flexcache.engine.records import SolverState
from flexcache.kernels import ops

LATENT_REFERENCE = "latent"
NOISE_REFERENCE = "noise"
# Per-channel coefficients only for latents laid out channels first with few channels (C, T, H, W);
# anything else (a packed token vector) gets one set for the whole tensor.
MAX_COEFFICIENT_GROUPS = 64
_INDEX = re.compile(r"\.(\d+)$")
SHORTCUT_FRACTION = 0.125


@dataclass(frozen=True)
class Prediction:
    """How one state tensor is rebuilt: references, per-group coefficients, and whether a residual was stored."""

    references: tuple[str, ...]
    coefficients: tuple[tuple[float, ...], ...]  # one row per group, one value per reference (float32 values)
    residual: bool
    dtype: str
    noise_seed: int | None = None

    def to_dict(self) -> dict[str, Any]:
        packed = np.asarray(self.coefficients, dtype="<f4").tobytes()
        return {"refs": list(self.references), "groups": len(self.coefficients),
                "coef": base64.b64encode(packed).decode(), "residual": self.residual, "dtype": self.dtype,
                "seed": self.noise_seed}

    @classmethod
    def from_dict(cls, data: Any) -> "Prediction":
        try:
            references = tuple(str(name) for name in data["refs"])
            values = np.frombuffer(base64.b64decode(data["coef"], validate=True), dtype="<f4")
            groups = int(data["groups"])
            if groups < 1 or values.size != groups * len(references):
                raise ValueError(f"{values.size} coefficients for {groups} groups of {len(references)} references")
            coefficients = tuple(tuple(float(v) for v in row) for row in values.reshape(groups, len(references)))
            seed = data.get("seed")
            prediction = cls(references, coefficients, bool(data["residual"]), str(data["dtype"]),
                             None if seed is None else int(seed))
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptBlobError(f"solver-state prediction is unreadable: {exc}") from None
        if not coefficients or any(len(row) != len(references) for row in coefficients):
            raise CorruptBlobError("solver-state prediction has coefficient rows that do not match its references")
        if not all(math.isfinite(v) for row in coefficients for v in row):
            raise CorruptBlobError("solver-state prediction holds non-finite coefficients")
        if not isinstance(getattr(torch, prediction.dtype, None), torch.dtype):
            raise CorruptBlobError(f"solver-state prediction names an unknown dtype {prediction.dtype!r}")
        if NOISE_REFERENCE in references and prediction.noise_seed is None:
            raise CorruptBlobError("solver-state prediction uses the seed noise but records no seed")
        return prediction


def coding_order(state: SolverState) -> list[str]:
    """Model outputs newest first (each predicts the one before it), trajectory points last (the update ties them)."""
    def key(name: str) -> tuple[int, int, str]:
        match = _INDEX.search(name)
        return (name in state.noisy, -int(match.group(1)) if match else 0, name)
    return sorted(state.tensors, key=key)


def _groups(shape: tuple[int, ...]) -> int:
    return shape[0] if len(shape) >= 3 and shape[0] <= MAX_COEFFICIENT_GROUPS else 1


def _fit(target: torch.Tensor, references: list[torch.Tensor]) -> torch.Tensor:
    """Least-squares coefficients (groups, references) of `target` on `references`, per group (float64)."""
    groups = _groups(tuple(target.shape))
    stacked = torch.stack([r.reshape(groups, -1) for r in references]).double()  # (m, g, n)
    y = target.reshape(groups, -1).double()
    gram = torch.einsum("igk,jgk->gij", stacked, stacked)
    rhs = torch.einsum("igk,gk->gi", stacked, y)
    # A tiny ridge keeps a reference that is all zeros, or a copy of another, from making the system singular.
    ridge = 1e-9 * gram.diagonal(dim1=-2, dim2=-1).mean(dim=-1).clamp_min(1e-30)
    gram = gram + ridge.view(-1, 1, 1) * torch.eye(len(references), dtype=gram.dtype, device=gram.device)
    return torch.linalg.solve(gram, rhs.unsqueeze(-1)).squeeze(-1)


def _predict(coefficients: torch.Tensor, references: list[torch.Tensor], shape: tuple[int, ...]) -> torch.Tensor:
    groups = coefficients.shape[0]
    out = torch.zeros((groups, math.prod(shape) // groups), dtype=torch.float32, device=references[0].device)
    for index, reference in enumerate(references):
        out += coefficients[:, index].to(out).view(-1, 1) * reference.reshape(groups, -1)
    return out.reshape(shape)


def _rms_limit(codec: Any, sigma: float | None) -> float | None:
    """The codec's absolute rms budget at `sigma`; None where it has none (lossless, or no sigma budget)."""
    config = getattr(codec, "config", None)
    if codec.name != "flexcache" or config is None or sigma is None:
        return None
    if config.budget_mode not in ("sigma", "auto") or not math.isfinite(sigma) or sigma <= 0:
        return None
    return config.sigma_budget * sigma


def _noise(codec: Any, shape: tuple[int, ...], seed: int, device: torch.device) -> torch.Tensor:
    return ops.randn(seed, shape, device, codec.config.backend).to(torch.float32)


def encode_predicted_state(codec: Any, state: SolverState, *, latent: torch.Tensor | None, seed: int | None,
                           budget_sigmas: dict[str, float | None],
                           frame_axis: int) -> tuple[dict[str, Blob], dict[str, Prediction]] | None:
    """The state's residual parts and predictions; None where it is not predicted (code it alone, as before).

    Args:
        codec: the entry's codec (only the compressing codec with a sigma budget predicts).
        state: the checked solver state (tensors in the latent's shape).
        latent: x_K *as the decoder will see it* (decoded from its blob), or None.
        seed: the run's seed (its noise is a reference), or None.
        budget_sigmas: per tensor, the sigma its budget is taken at (model outputs get a looser one).
        frame_axis: the latent's frame dimension, for the codec.
    """
    if latent is None or any(_rms_limit(codec, budget_sigmas.get(name)) is None for name in state.tensors):
        return None
    device = latent.device
    shape = tuple(latent.shape)
    references: dict[str, torch.Tensor] = {LATENT_REFERENCE: latent.to(torch.float32)}
    if seed is not None:
        references[NOISE_REFERENCE] = _noise(codec, shape, seed, device)
    parts: dict[str, Blob] = {}
    predictions: dict[str, Prediction] = {}
    for name in coding_order(state):
        target = state.tensors[name].to(device)
        names = list(references)
        refs = [references[n] for n in names]
        coefficients = _fit(target, refs).float()  # stored as float32: predict with what the decoder reads
        predicted = _predict(coefficients, refs, shape)
        error = target.to(torch.float32) - predicted
        limit = _rms_limit(codec, budget_sigmas[name])
        if float(torch.sqrt(torch.mean(error.double() ** 2))) <= SHORTCUT_FRACTION * limit:
            decoded = predicted
            stored = False
        else:
            blob = codec.encode(error.to(target.dtype), seed=None, sigma=budget_sigmas[name], frame_axis=frame_axis)
            decoded = predicted + codec.decode(blob, device=device).to(torch.float32)
            parts[name] = blob
            stored = True
        predictions[name] = Prediction(tuple(names), tuple(tuple(float(v) for v in row) for row in coefficients.cpu()),
                                       stored, str(target.dtype).removeprefix("torch."),
                                       seed if NOISE_REFERENCE in names else None)
        references[name] = decoded
    return parts, predictions


def decode_predicted_state(codec: Any, parts: dict[str, bytes], predictions: dict[str, Prediction],
                           order: list[str], latent: torch.Tensor) -> dict[str, torch.Tensor]:
    """The state tensors rebuilt from x_K (decoded), the seed noise and the residual `parts`, in `order`.

    Raises:
        CorruptBlobError: a prediction that names a reference not yet decoded, a missing residual part,
            or a residual of another shape than the latent's.
    """
    device = latent.device
    shape = tuple(latent.shape)
    references: dict[str, torch.Tensor] = {LATENT_REFERENCE: latent.to(torch.float32)}
    out: dict[str, torch.Tensor] = {}
    for name in order:
        prediction = predictions[name]
        if NOISE_REFERENCE in prediction.references and NOISE_REFERENCE not in references:
            references[NOISE_REFERENCE] = _noise(codec, shape, prediction.noise_seed, device)
        unknown = [n for n in prediction.references if n not in references]
        if unknown:
            raise CorruptBlobError(f"solver-state part {name!r} is predicted from {unknown}, not decoded before it")
        if len(prediction.coefficients) != _groups(shape):
            raise CorruptBlobError(f"solver-state part {name!r} has {len(prediction.coefficients)} coefficient "
                                   f"rows; a latent of shape {shape} needs {_groups(shape)}")
        coefficients = torch.tensor(prediction.coefficients, dtype=torch.float32, device=device)
        value = _predict(coefficients, [references[n] for n in prediction.references], shape)
        if prediction.residual:
            if name not in parts:
                raise CorruptBlobError(f"solver-state part {name!r} records a residual the bundle lacks")
            residual = codec.decode(parts[name], device=device)
            if tuple(residual.shape) != shape:
                raise CorruptBlobError(f"solver-state residual {name!r} decodes to {tuple(residual.shape)}, "
                                       f"not the latent's {shape}")
            value = value + residual.to(torch.float32)
        references[name] = value
        out[name] = value.to(getattr(torch, prediction.dtype))
    return out
