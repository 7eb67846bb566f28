"""Triton codec kernels against the torch reference (interpreter on CPU, compiled on CUDA)."""

from __future__ import annotations

import pytest
import torch

from flexcache import ConfigError, InvalidLatentError
from flexcache.kernels import ops, reference

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# Odd sizes: S is never a multiple of the block, T > 1 for the delta.
SHAPES = [((3, 4, 37), 1, 16), ((2, 5, 3, 11), 0, 16), ((4, 3, 5, 7), 1, 32)]


def _random(shape, seed):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(DEVICE)


@pytest.fixture
def same_noise(monkeypatch):
    """Make the reference use the noise Triton generates, so integers can be compared exactly.

    Both compute Philox bit-identically; only log/cos in Box-Muller differ in the
    last bit between libraries (tested separately in test_randn_matches_tl_randn).
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
    assert (triton_noise - torch_noise).abs().max() <= 1e-6
    assert abs(float(torch_noise.mean())) < 0.15 and 0.85 < float(torch_noise.std()) < 1.15


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
    assert torch.equal(scales_t.reshape(-1).cpu(), scales_r.reshape(-1).cpu())
    assert torch.equal(packed_t.cpu(), packed_r.cpu())
    out_t = ops.decode(packed_t, scales_t, shape, backend="triton", **kwargs)
    out_r = ops.decode(packed_t, scales_t, shape, backend="torch", **kwargs)
    torch.testing.assert_close(out_t, out_r, rtol=0, atol=1e-6)


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_kernels_write_every_output_element(backend):
    # Poisoned caller-owned buffers: a kernel that skipped any element would leave 0xAB / NaN behind.
    x = _random((3, 4, 37), seed=5)
    packed_out = torch.full((3 * 4 * 3 * 16 * 4 // 8,), 0xAB, dtype=torch.uint8, device=DEVICE)
    scales_out = torch.full((3 * 4 * 3,), float("nan"), dtype=torch.float16, device=DEVICE)
    kwargs = dict(seed=None, noise_scale=0.0, bits=4, block=16)
    packed, scales = ops.encode(x, backend=backend, out=(packed_out, scales_out), **kwargs)
    assert packed is packed_out and scales is scales_out  # written in place, nothing allocated
    reference_packed, reference_scales = ops.encode(x, backend="torch", **kwargs)
    assert torch.equal(packed_out.cpu(), reference_packed.reshape(-1).cpu())
    assert torch.equal(scales_out.cpu(), reference_scales.reshape(-1).cpu())
    # Padding past S must decode to nothing: the output has exactly the latent's elements, all written.
    latent_out = torch.full((3, 4, 37), float("nan"), device=DEVICE)
    out = ops.decode(packed, scales, (3, 4, 37), backend=backend, out=latent_out, **kwargs)
    assert out is latent_out and torch.isfinite(latent_out).all()
    expected = ops.decode(reference_packed, reference_scales, (3, 4, 37), backend="torch", **kwargs)
    torch.testing.assert_close(latent_out, expected, rtol=0, atol=1e-6)


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
    step = scales.float().repeat_interleave(64, dim=-1)[..., :300]
    assert ((out - x).abs() <= step / 2 + 1e-6).all()


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
