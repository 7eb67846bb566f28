"""Fused latent codec kernels: seed-noise residual, closed-loop temporal delta,
per-block quantization and bit packing in one pass (and the inverse).

One program owns one run of BLOCK values along S for one group g and walks the
T frames in order, so the temporal delta can use the frame it reconstructed
last. Layout and arithmetic mirror `flexcache.kernels.reference` exactly.
"""

import triton
import triton.language as tl


@triton.jit
def _linear_offsets(g, t, T, S, s):
    return (g * T + t).to(tl.int64) * S + s


@triton.jit
def _program_block(n_blocks, S, BLOCK: tl.constexpr):
    """This program's group g, block b, positions s along S and which of them exist."""
    pid = tl.program_id(0)
    g = pid // n_blocks
    b = pid % n_blocks
    s = b * BLOCK + tl.arange(0, BLOCK)
    return g, b, s, s < S


@triton.jit
def _pack_lanes(BITS: tl.constexpr):
    """The 8 values of a packed group: lane index, bit offset of each field, bit offset of each byte."""
    lane = tl.arange(0, 8)
    return lane, lane.to(tl.int64) * BITS, lane.to(tl.int64) * 8


@triton.jit
def _packed_offsets(row, lane, GROUPS: tl.constexpr, BITS: tl.constexpr):
    """Byte offsets of one block's packed groups: `BITS` bytes for each group of 8 values."""
    return row.to(tl.int64) * (GROUPS * BITS) + tl.arange(0, GROUPS)[:, None] * BITS + lane[None, :]


@triton.jit
def encode_kernel(x_ptr, packed_ptr, scales_ptr, seed, noise_scale, T, S, n_blocks,
                  BITS: tl.constexpr, BLOCK: tl.constexpr, RESIDUAL: tl.constexpr, DELTA: tl.constexpr):
    g, b, s, in_row = _program_block(n_blocks, S, BLOCK)
    QMAX: tl.constexpr = (1 << (BITS - 1)) - 1
    GROUPS: tl.constexpr = BLOCK // 8
    lane, field_shifts, byte_shifts = _pack_lanes(BITS)
    recon = tl.zeros([BLOCK], dtype=tl.float32)
    for t in range(T):
        linear = _linear_offsets(g, t, T, S, s)
        r = tl.load(x_ptr + linear, mask=in_row, other=0.0).to(tl.float32)
        if RESIDUAL:
            r = tl.where(in_row, r - noise_scale * tl.randn(seed, linear), 0.0)
        if DELTA:
            d = r - recon
        else:
            d = r
        amax = tl.max(tl.abs(d), axis=0)
        scale = tl.maximum(amax / QMAX, 5.960464477539063e-08).to(tl.float16).to(tl.float32)
        q = tl.floor(d / scale + 0.5)
        q = tl.minimum(tl.maximum(q, -QMAX), QMAX)
        if DELTA:
            recon = recon + q * scale
        row = (g * T + t) * n_blocks + b
        tl.store(scales_ptr + row, scale.to(tl.float16))
        fields = tl.reshape(q.to(tl.int64) + QMAX, [GROUPS, 8])
        words = tl.sum(fields << field_shifts[None, :], axis=1)  # disjoint bits: sum == or
        packed = (words[:, None] >> byte_shifts[None, :]) & 0xFF
        out = _packed_offsets(row, lane, GROUPS, BITS)
        tl.store(packed_ptr + out, packed.to(tl.uint8), mask=lane[None, :] < BITS)


@triton.jit
def decode_kernel(packed_ptr, scales_ptr, out_ptr, seed, noise_scale, T, S, n_blocks,
                  BITS: tl.constexpr, BLOCK: tl.constexpr, RESIDUAL: tl.constexpr, DELTA: tl.constexpr):
    g, b, s, in_row = _program_block(n_blocks, S, BLOCK)
    QMAX: tl.constexpr = (1 << (BITS - 1)) - 1
    GROUPS: tl.constexpr = BLOCK // 8
    lane, field_shifts, byte_shifts = _pack_lanes(BITS)
    recon = tl.zeros([BLOCK], dtype=tl.float32)
    for t in range(T):
        row = (g * T + t) * n_blocks + b
        src = _packed_offsets(row, lane, GROUPS, BITS)
        packed = tl.load(packed_ptr + src, mask=lane[None, :] < BITS, other=0).to(tl.int64)
        words = tl.sum(packed << byte_shifts[None, :], axis=1)
        fields = (words[:, None] >> field_shifts[None, :]) & ((1 << BITS) - 1)
        q = tl.reshape(fields, [BLOCK]) - QMAX
        v = q.to(tl.float32) * tl.load(scales_ptr + row).to(tl.float32)
        if DELTA:
            recon = recon + v
            v = recon
        linear = _linear_offsets(g, t, T, S, s)
        if RESIDUAL:
            v = v + noise_scale * tl.randn(seed, linear)
        tl.store(out_ptr + linear, v, mask=in_row)


@triton.jit
def randn_kernel(out_ptr, seed, n, BLOCK: tl.constexpr):
    offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    tl.store(out_ptr + offsets, tl.randn(seed, offsets), mask=offsets < n)
