"""Triton codec kernels against the torch reference (interpreter on CPU, compiled on CUDA).

What is compared exactly and what within rounding: the two backends do the same
arithmetic, but a compiled kernel may round differently (fused multiply-adds,
another division, another libm for log/cos). So the Triton output is checked
against what the codec promises, with a slack derived from float32 rounding
and the quantization step: every scale is its block's amax / qmax within one
float16 step, every code is floor(d / scale + 0.5) except where that value is
within float32 rounding of a half step (a boundary), where it may be one off,
and a round trip lands within half a step of the input. Under the interpreter
the two backends agree bit for bit, but nothing here relies on it. Outputs are
compared exactly only with the same backend's own (a kernel with itself).
"""

from __future__ import annotations

import pytest
import torch

from flexcache import ConfigError, InvalidLatentError
from flexcache.kernels import ops, reference
from tests.kernels.rounding import FLOAT16_STEP, FLOAT32_SLACK, assert_noise_close

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# Odd sizes: S is never a multiple of the block, T > 1 for the delta.
SHAPES = [((3, 4, 37), 1, 16), ((2, 5, 3, 11), 0, 16), ((4, 3, 5, 7), 1, 32)]


def _random(shape, seed):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(DEVICE)


def _codes(packed: torch.Tensor, bits: int, layout: tuple[int, int, int, int]) -> torch.Tensor:
    groups, frames, n_blocks, block = layout
    count = groups * frames * n_blocks * block
    return reference.unpack_bits(packed.reshape(-1).cpu(), bits, count).reshape(layout).double()


def assert_valid_encoding(x, packed, scales, *, seed, noise_scale, bits, block, temporal_delta, frame_axis):
    """`(packed, scales)` quantize `x` as the codec specifies, up to float32 rounding.

    Frame by frame (the delta taken to the frame reconstructed from these very
    codes, as the encoder's closed loop does), in float64: each scale is the
    block's amax / qmax rounded to float16 (one float16 step of slack), and each
    code is floor(d / scale + 0.5), clamped, except where d / scale + 0.5 is
    within float32 rounding of an integer: there a backend may land one off.
    """
    groups, frames, span = reference.frame_view_shape(tuple(x.shape), frame_axis)
    n_blocks = -(-span // block)
    qmax = 2 ** (bits - 1) - 1
    codes = _codes(packed, bits, (groups, frames, n_blocks, block))
    steps = scales.reshape(groups, frames, n_blocks).cpu().double()
    r = x.reshape(groups, frames, span).cpu().double()
    noise = torch.zeros_like(r)
    if seed is not None and noise_scale != 0.0:
        noise = noise_scale * reference.philox_randn(seed, x.numel(), DEVICE).reshape(groups, frames, span).cpu().double()
    magnitude = r.abs() + noise.abs()  # what float32 rounding scales with
    r = r - noise

    def blocked(t: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.pad(t, (0, n_blocks * block - span)).reshape(groups, frames, n_blocks, block)

    r, magnitude = blocked(r), blocked(magnitude)
    recon = torch.zeros_like(r[:, 0])
    for t in range(frames):
        d = r[:, t] - recon if temporal_delta else r[:, t]
        wanted = torch.clamp_min(d.abs().amax(-1) / qmax, 2.0**-24)
        scale = steps[:, t]
        assert ((scale - wanted).abs() <= wanted * FLOAT16_STEP + 2.0**-24).all(), f"frame {t}: a scale is not amax / qmax"
        value = d / scale.unsqueeze(-1) + 0.5
        expected = torch.clamp(torch.floor(value), -qmax, qmax)
        off = (codes[:, t] - expected).abs()
        assert float(off.max()) <= 1, f"frame {t}: a code is {float(off.max())} steps off"
        slack = FLOAT32_SLACK * ((magnitude[:, t] + recon.abs() * (t + 1)) / scale.unsqueeze(-1) + value.abs() + 1)
        at_boundary = (value - value.round()).abs() <= slack
        assert bool(at_boundary[off == 1].all()), f"frame {t}: a code is one off away from a rounding boundary"
        if temporal_delta:
            recon = recon + codes[:, t] * scale.unsqueeze(-1)


def assert_within_half_a_step(out, x, scales, *, block, frame_axis, noise=None):
    """A decoded latent is within half a quantization step of the input, plus float32 rounding."""
    groups, frames, span = reference.frame_view_shape(tuple(x.shape), frame_axis)
    step = scales.reshape(groups, frames, -1).cpu().double().repeat_interleave(block, dim=-1)[..., :span]
    x64, out64 = x.reshape(groups, frames, span).cpu().double(), out.reshape(groups, frames, span).cpu().double()
    noise64 = torch.zeros_like(x64) if noise is None else noise.reshape(groups, frames, span).cpu().double().abs()
    bound = step / 2 + FLOAT32_SLACK * (x64.abs() + noise64 + 2 * step * frames)
    assert bool(((out64 - x64).abs() <= bound).all()), "a round trip is more than half a step off"


@pytest.fixture
def same_noise(monkeypatch):
    """Make the reference use the noise Triton generates, so both backends quantize the same residual.

    Both compute Philox bit-identically; only log/cos in Box-Muller differ in the
    last bits between libraries (tested separately in test_randn_matches_tl_randn).
    """
    def triton_randn(seed, numel, device="cpu", offset=0):
        assert offset == 0
        return ops.randn(seed, (numel,), device, backend="triton")

    monkeypatch.setattr(reference, "philox_randn", triton_randn)


@pytest.mark.parametrize("seed", [0, 1, 12345, 2**40 + 7, 2**63 + 5, 2**64 - 1])
def test_randn_matches_tl_randn(seed):
    triton_noise = ops.randn(seed, (3, 337), DEVICE, backend="triton")
    torch_noise = ops.randn(seed, (3, 337), DEVICE, backend="torch")
    assert torch.isfinite(triton_noise).all()
    assert_noise_close(triton_noise, torch_noise)
    assert abs(float(torch_noise.mean())) < 0.15 and 0.85 < float(torch_noise.std()) < 1.15


def test_randn_bound_catches_another_stream():
    # The bound is tight enough to tell noise of a neighbouring seed (or a wrong Philox round) apart.
    with pytest.raises(AssertionError, match="log/cos rounding"):
        assert_noise_close(ops.randn(8, (3, 337), DEVICE, backend="torch"), ops.randn(7, (3, 337), DEVICE, backend="torch"))


# Every width on the first shape; two widths on the others, to keep the interpreter fast.
KERNEL_CASES = [(*layout, bits) for i, layout in enumerate(SHAPES)
                for bits in (reference.BIT_WIDTHS if i == 0 else (3, 8))]


@pytest.mark.parametrize("shape,frame_axis,block,bits", KERNEL_CASES)
@pytest.mark.parametrize("temporal_delta", [False, True])
@pytest.mark.parametrize("residual", [False, True])
def test_encode_and_decode_match_reference(same_noise, shape, frame_axis, block, bits, temporal_delta, residual):
    x = _random(shape, seed=bits * 10 + temporal_delta)
    kwargs = dict(seed=777 if residual else None, noise_scale=0.6 if residual else 0.0, bits=bits, block=block,
                  temporal_delta=temporal_delta, frame_axis=frame_axis)
    packed_t, scales_t = ops.encode(x, backend="triton", **kwargs)
    packed_r, scales_r = ops.encode(x, backend="torch", **kwargs)
    assert packed_t.dtype == torch.uint8 and packed_t.shape == packed_r.shape
    assert scales_t.dtype == torch.float16 and scales_t.numel() == scales_r.numel()
    # Both are the codec's quantization of x; the oracle checks itself as well as the kernel.
    assert_valid_encoding(x, packed_t, scales_t, **kwargs)
    assert_valid_encoding(x, packed_r, scales_r, **kwargs)
    noise = 0.6 * reference.philox_randn(777, x.numel(), DEVICE).reshape(shape) if residual else None
    # The reference decodes what the kernel encoded (one format), and the kernel decodes it alike.
    out_t = ops.decode(packed_t, scales_t, shape, backend="triton", **kwargs)
    out_r = ops.decode(packed_t, scales_t, shape, backend="torch", **kwargs)
    noise_magnitude = 0.0 if noise is None else noise.abs()
    bound = FLOAT32_SLACK * (out_r.abs() + noise_magnitude)  # decoding is q * scale (exact), sums and + c * eps
    assert bool(((out_t - out_r).abs() <= bound).all()), "the kernel decodes beyond float32 rounding of the reference"
    assert_within_half_a_step(out_t, x, scales_t, block=block, frame_axis=frame_axis, noise=noise)


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_kernels_write_every_output_element(backend):
    # Poisoned caller-owned buffers: a kernel that skipped any element would leave 0xAB / NaN behind.
    x = _random((3, 4, 37), seed=5)
    packed_out = torch.full((3 * 4 * 3 * 16 * 4 // 8,), 0xAB, dtype=torch.uint8, device=DEVICE)
    scales_out = torch.full((3 * 4 * 3,), float("nan"), dtype=torch.float16, device=DEVICE)
    kwargs = dict(seed=None, noise_scale=0.0, bits=4, block=16)
    packed, scales = ops.encode(x, backend=backend, out=(packed_out, scales_out), **kwargs)
    assert packed is packed_out and scales is scales_out  # written in place, nothing allocated
    # The same backend into buffers it allocates itself: the same kernel on the same input, so the same bytes.
    own_packed, own_scales = ops.encode(x, backend=backend, **kwargs)
    assert torch.equal(packed_out.cpu(), own_packed.reshape(-1).cpu())
    assert torch.equal(scales_out.cpu(), own_scales.reshape(-1).cpu())
    assert_valid_encoding(x, packed_out, scales_out, temporal_delta=False, frame_axis=1, **kwargs)
    # Padding past S must decode to nothing: the output has exactly the latent's elements, all written.
    latent_out = torch.full((3, 4, 37), float("nan"), device=DEVICE)
    out = ops.decode(packed, scales, (3, 4, 37), backend=backend, out=latent_out, **kwargs)
    assert out is latent_out and torch.isfinite(latent_out).all()
    assert torch.equal(latent_out, ops.decode(packed, scales, (3, 4, 37), backend=backend, **kwargs))
    assert_within_half_a_step(latent_out, x, scales, block=16, frame_axis=1)


def test_out_buffers_of_the_wrong_size_or_dtype_are_refused():
    x = _random((3, 4, 37), seed=5)
    kwargs = dict(seed=None, noise_scale=0.0, bits=4, block=16, backend="torch")
    good = torch.empty(3 * 4 * 3, dtype=torch.float16, device=DEVICE)
    with pytest.raises(ConfigError, match="out packed"):
        ops.encode(x, out=(torch.empty(7, dtype=torch.uint8, device=DEVICE), good), **kwargs)
    with pytest.raises(ConfigError, match="out scales"):
        ops.encode(x, out=(torch.empty(288, dtype=torch.uint8, device=DEVICE), good.float()), **kwargs)


@pytest.mark.parametrize("bits", reference.BIT_WIDTHS)
def test_round_trip_error_is_within_half_a_step(bits):
    x = _random((4, 6, 300), seed=bits)
    packed, scales = ops.encode(x, seed=None, noise_scale=0.0, bits=bits, block=64, backend="torch")
    out = ops.decode(packed, scales, (4, 6, 300), seed=None, noise_scale=0.0, bits=bits, block=64, backend="torch")
    assert_within_half_a_step(out, x, scales, block=64, frame_axis=1)
    step = scales.float().repeat_interleave(64, dim=-1)[..., :300]
    assert float(((out - x).abs() / step).max()) > 0.4  # the bound is tight: some values are nearly half a step off


@pytest.mark.parametrize("bits", [2, 5, 8])
def test_pack_unpack_round_trip(bits):
    qmax = 2 ** (bits - 1) - 1
    q = torch.randint(-qmax, qmax + 1, (8 * 37,), generator=torch.Generator().manual_seed(bits), dtype=torch.int32)
    packed = reference.pack_bits(q, bits)
    assert packed.numel() == 37 * bits
    assert torch.equal(reference.unpack_bits(packed, bits, q.numel()), q)


def test_residual_shrinks_what_is_quantized():
    seed = 99
    noise = ops.randn(seed, (16, 4, 24), "cpu")
    latent = 0.9 * noise + 0.1 * torch.randn(16, 4, 24)
    c = reference.fit_noise_scale(latent, noise)
    assert 0.85 < c < 0.95
    _, with_residual = ops.encode(latent, seed=seed, noise_scale=c, bits=4, block=32, backend="torch")
    _, plain = ops.encode(latent, seed=None, noise_scale=0.0, bits=4, block=32, backend="torch")
    assert with_residual.float().mean() < 0.3 * plain.float().mean()


@pytest.mark.parametrize("bad", [
    torch.tensor([1.0, float("nan")]), torch.tensor([float("inf"), 1.0]), torch.zeros(0), torch.ones(3, dtype=torch.int32),
])
def test_bad_latents_are_refused(bad):
    with pytest.raises(InvalidLatentError):
        ops.encode(bad, seed=None, noise_scale=0.0, bits=4, block=16)


@pytest.mark.parametrize("kwargs", [{"bits": 1}, {"bits": 9}, {"block": 24}, {"block": 8192}, {"frame_axis": 3}])
def test_bad_parameters_are_refused(kwargs):
    params = dict(seed=None, noise_scale=0.0, bits=4, block=16, frame_axis=1, **{})
    params.update(kwargs)
    with pytest.raises(ConfigError):
        ops.encode(torch.randn(2, 3, 4), **params)


def test_decode_refuses_mismatched_buffers():
    packed, scales = ops.encode(torch.randn(2, 3, 40), seed=None, noise_scale=0.0, bits=4, block=16)
    with pytest.raises(InvalidLatentError):
        ops.decode(packed[:-1], scales, (2, 3, 40), seed=None, noise_scale=0.0, bits=4, block=16)


def test_unknown_backend_is_a_config_error():
    with pytest.raises(ConfigError):
        ops.encode(torch.randn(4, 4), seed=None, noise_scale=0.0, bits=4, block=16, backend="cuda-magic")
