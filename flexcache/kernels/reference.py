"""Pure-torch reference of the latent codec kernels: the CPU path and the test oracle.

Every function here has a Triton twin in `flexcache/kernels/triton/` that must
agree with it: integers exactly, floats to about 1e-6 (the seed noise uses
log/cos, whose last bit differs between libraries).

The lossy transform of a latent x (viewed as (G, T, S): dimensions before the
frame axis, frames, dimensions after it):

1. seed-noise residual: r = x - c * eps, where eps is the Philox normal noise
   the run started from (`philox_randn`, bit-compatible with Triton's
   ``tl.randn(seed, offset)``) and c = <x, eps> / <eps, eps> is fitted per
   entry. Early in a trajectory x is mostly that noise, so r is small.
2. optional temporal delta, closed loop: frame t codes r_t - r̂_{t-1}, the
   difference to the *reconstructed* previous frame, so quantization errors do
   not accumulate along the frames.
3. per-block symmetric quantization: each run of `block` values along S (within
   one (g, t)) gets a float16 scale amax / qmax and integers in [-qmax, qmax],
   qmax = 2^(bits-1) - 1; stored offset by qmax as unsigned `bits`-bit fields,
   8 values per `bits` bytes, little-endian bit order.
"""

from __future__ import annotations

import math

import torch

_M32 = 0xFFFFFFFF
# Philox4x32-10 constants, as in triton.language.random.
_PHILOX_ROUND_A = 0xD2511F53
_PHILOX_ROUND_B = 0xCD9E8D57
_PHILOX_KEY_A = 0x9E3779B9
_PHILOX_KEY_B = 0xBB67AE85
_UINT_TO_UNIFORM = 4.6566127342e-10
_TWO_PI = 6.283185307179586
_MIN_SCALE = 2.0**-24  # the smallest float16 subnormal: a block of zeros still has a usable scale

BIT_WIDTHS = (2, 3, 4, 5, 6, 7, 8)


def _mul_hi_lo(a: torch.Tensor, b: int) -> tuple[torch.Tensor, torch.Tensor]:
    """High and low 32 bits of a * b for a < 2^32, b < 2^32, without int64 overflow."""
    b_hi, b_lo = b >> 16, b & 0xFFFF
    t_hi, t_lo = a * b_hi, a * b_lo
    hi = (t_hi + (t_lo >> 16)) >> 16
    lo = (((t_hi & 0xFFFF) << 16) + t_lo) & _M32
    return hi, lo


def _uniform(bits: torch.Tensor) -> torch.Tensor:
    # triton.language.random.uint_to_uniform_float for 32-bit inputs.
    signed = torch.where(bits >= 2**31, bits - 2**32, bits)
    signed = torch.where(signed < 0, -signed - 1, signed)
    return signed.to(torch.int32).to(torch.float32) * torch.tensor(_UINT_TO_UNIFORM, dtype=torch.float32)


def philox_randn(seed: int, numel: int, device: torch.device | str = "cpu", offset: int = 0) -> torch.Tensor:
    """Standard normal float32 values ``tl.randn(seed, offset + arange(numel))`` would give.

    Philox4x32-10 keyed by the 64-bit seed (low word, high word), counter =
    (offset low word, offset high word, 0, 0), then Box-Muller on the first two
    outputs, exactly as Triton 3.x implements it.
    """
    counters = torch.arange(offset, offset + numel, dtype=torch.int64, device=device)
    c0, c1 = counters & _M32, (counters >> 32) & _M32
    c2 = torch.zeros_like(c0)
    c3 = torch.zeros_like(c0)
    k0, k1 = seed & _M32, (seed >> 32) & _M32
    for _ in range(10):
        hi_b, lo_b = _mul_hi_lo(c2, _PHILOX_ROUND_B)
        hi_a, lo_a = _mul_hi_lo(c0, _PHILOX_ROUND_A)
        c0, c1, c2, c3 = hi_b ^ c1 ^ k0, lo_b, hi_a ^ c3 ^ k1, lo_a
        k0, k1 = (k0 + _PHILOX_KEY_A) & _M32, (k1 + _PHILOX_KEY_B) & _M32
    u1 = torch.clamp_min(_uniform(c0), 1.0e-7)
    theta = torch.tensor(_TWO_PI, dtype=torch.float32) * _uniform(c1)
    return torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(theta)


def frame_view_shape(shape: tuple[int, ...], frame_axis: int) -> tuple[int, int, int]:
    """(G, T, S) for a latent of `shape` split around `frame_axis`."""
    groups = math.prod(shape[:frame_axis])
    return groups, shape[frame_axis], math.prod(shape[frame_axis + 1:])


def fit_noise_scale(x: torch.Tensor, eps: torch.Tensor) -> float:
    """c minimising ||x - c * eps||: <x, eps> / <eps, eps> (in float64)."""
    x64, e64 = x.reshape(-1).double(), eps.reshape(-1).double()
    return float((x64 @ e64) / (e64 @ e64))


def _block_scales(amax: torch.Tensor, qmax: int) -> torch.Tensor:
    # Rounded to float16 because that is how scales are stored; used as float32.
    return torch.clamp_min(amax / qmax, _MIN_SCALE).to(torch.float16).to(torch.float32)


def _quantize(values: torch.Tensor, scales: torch.Tensor, qmax: int) -> torch.Tensor:
    # floor(v + 0.5) rather than round-half-even: the Triton kernel does the same.
    return torch.clamp(torch.floor(values / scales.unsqueeze(-1) + 0.5), -qmax, qmax)


def quantize_blocks(x: torch.Tensor, *, seed: int | None, noise_scale: float, bits: int, block: int,
                    temporal_delta: bool, frame_axis: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Residual + (delta) + per-block quantization of a latent.

    Returns:
        ``(q, scales)``: int32 integers of shape (G, T, n_blocks, block), zero
        in the padding past S, and float16 scales of shape (G, T, n_blocks).
    """
    groups, frames, span = frame_view_shape(tuple(x.shape), frame_axis)
    n_blocks = -(-span // block)
    qmax = 2 ** (bits - 1) - 1
    r = x.reshape(groups, frames, span).to(torch.float32)
    if seed is not None and noise_scale != 0.0:
        eps = philox_randn(seed, x.numel(), x.device).reshape(groups, frames, span)
        r = r - torch.tensor(noise_scale, dtype=torch.float32) * eps
    r = torch.nn.functional.pad(r, (0, n_blocks * block - span)).reshape(groups, frames, n_blocks, block)
    if not temporal_delta:
        scales = _block_scales(r.abs().amax(dim=-1), qmax)
        q = _quantize(r, scales, qmax)
    else:
        q = torch.empty_like(r)
        scales = torch.empty(r.shape[:-1], dtype=torch.float32, device=r.device)
        recon = torch.zeros_like(r[:, 0])
        for t in range(frames):
            delta = r[:, t] - recon
            scales[:, t] = _block_scales(delta.abs().amax(dim=-1), qmax)
            q[:, t] = _quantize(delta, scales[:, t], qmax)
            recon = recon + q[:, t] * scales[:, t].unsqueeze(-1)
    return q.to(torch.int32), scales.to(torch.float16)


def dequantize_blocks(q: torch.Tensor, scales: torch.Tensor, shape: tuple[int, ...], *, seed: int | None,
                      noise_scale: float, temporal_delta: bool, frame_axis: int) -> torch.Tensor:
    """Inverse of `quantize_blocks`: float32 latent of `shape`."""
    groups, frames, span = frame_view_shape(shape, frame_axis)
    values = q.to(torch.float32) * scales.to(torch.float32).unsqueeze(-1)
    if temporal_delta:
        # A running sum in frame order, the same additions the encoder made (not cumsum,
        # whose summation order may differ).
        recon = torch.zeros_like(values[:, 0])
        for t in range(frames):
            recon = recon + values[:, t]
            values[:, t] = recon
    r = values.reshape(groups, frames, -1)[:, :, :span]
    if seed is not None and noise_scale != 0.0:
        eps = philox_randn(seed, math.prod(shape), q.device).reshape(groups, frames, span)
        r = r + torch.tensor(noise_scale, dtype=torch.float32) * eps
    return r.reshape(shape)


def pack_bits(q: torch.Tensor, bits: int) -> torch.Tensor:
    """Signed integers in [-qmax, qmax] -> uint8, 8 values per `bits` bytes (length % 8 == 0)."""
    qmax = 2 ** (bits - 1) - 1
    fields = (q.reshape(-1, 8).to(torch.int64) + qmax)
    shifts = torch.arange(8, device=q.device, dtype=torch.int64) * bits
    words = (fields << shifts).sum(dim=1)  # disjoint bit ranges: the sum is an OR
    byte_shifts = torch.arange(bits, device=q.device, dtype=torch.int64) * 8
    return ((words.unsqueeze(1) >> byte_shifts) & 0xFF).to(torch.uint8).reshape(-1)


def unpack_bits(packed: torch.Tensor, bits: int, count: int) -> torch.Tensor:
    """Inverse of `pack_bits`: `count` int32 values."""
    qmax = 2 ** (bits - 1) - 1
    groups = packed.reshape(-1, bits).to(torch.int64)
    byte_shifts = torch.arange(bits, device=packed.device, dtype=torch.int64) * 8
    words = (groups << byte_shifts).sum(dim=1)
    shifts = torch.arange(8, device=packed.device, dtype=torch.int64) * bits
    fields = (words.unsqueeze(1) >> shifts) & ((1 << bits) - 1)
    return (fields - qmax).to(torch.int32).reshape(-1)[:count]


def encode(x: torch.Tensor, *, seed: int | None, noise_scale: float, bits: int, block: int,
           temporal_delta: bool, frame_axis: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize and pack: ``(packed uint8, float16 scales)``."""
    q, scales = quantize_blocks(x, seed=seed, noise_scale=noise_scale, bits=bits, block=block,
                                temporal_delta=temporal_delta, frame_axis=frame_axis)
    return pack_bits(q, bits), scales


def decode(packed: torch.Tensor, scales: torch.Tensor, shape: tuple[int, ...], *, seed: int | None,
           noise_scale: float, bits: int, block: int, temporal_delta: bool, frame_axis: int) -> torch.Tensor:
    """Unpack and dequantize: the float32 latent."""
    groups, frames, span = frame_view_shape(shape, frame_axis)
    n_blocks = -(-span // block)
    q = unpack_bits(packed, bits, groups * frames * n_blocks * block).reshape(groups, frames, n_blocks, block)
    return dequantize_blocks(q, scales, shape, seed=seed, noise_scale=noise_scale,
                             temporal_delta=temporal_delta, frame_axis=frame_axis)
