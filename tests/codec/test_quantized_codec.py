"""The compressing codec: budgets, stages, container checks, cross-backend blobs."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from flexcache import ConfigError, CorruptBlobError, InvalidLatentError
from flexcache.codec.latent import (
    LosslessCodec,
    QuantizedCodec,
    build_codec,
    describe_blob,
    read_header,
)
from flexcache.config import CodecConfig
from flexcache.kernels.noise import seeded_noise
from flexcache.store.integrity import frame, unframe
from tests.kernels.rounding import BOX_MULLER_RADIUS, FLOAT32_SLACK

SEED = 31337


def noisy_latent(shape, sigma, seed=SEED, torch_seed=0):
    """Flow-matching-like x_K: (1 - sigma) * smooth field + sigma * the seeded noise."""
    smooth = torch.randn(shape, generator=torch.Generator().manual_seed(torch_seed)).cumsum(-1)
    smooth = smooth / smooth.std()
    return (1 - sigma) * smooth + sigma * seeded_noise(shape, seed)


def rms(a, b):
    return float(torch.sqrt(torch.mean((a.double() - b.double()) ** 2)))


@pytest.mark.parametrize("sigma", [0.95, 0.7, 0.4])
@pytest.mark.parametrize("shape", [(16, 3, 8, 13), (4, 5, 37)])
def test_sigma_budget_is_met_and_recorded(sigma, shape):
    codec = QuantizedCodec()
    x = noisy_latent(shape, sigma)
    blob = codec.encode(x, seed=SEED, sigma=sigma)
    y = codec.decode(blob)
    info = describe_blob(blob)
    assert info["codec"] == "flexcache" and info["budget_kind"] == "sigma"
    assert rms(y, x) <= 0.02 * sigma * (1 + 1e-5)
    assert info["achieved_rms"] == pytest.approx(rms(y, x), rel=1e-4)
    assert info["sigma"] == pytest.approx(sigma)
    assert 0.0 < info["noise_scale"]


@pytest.mark.parametrize("budget", [0.05, 0.02, 0.01])
def test_relative_l2_budget_without_sigma(budget):
    codec = QuantizedCodec(CodecConfig(relative_l2_budget=budget))
    x = torch.randn(8, 4, 10, 10)
    y = codec.decode(codec.encode(x))
    assert float((y - x).norm() / x.norm()) <= budget * (1 + 1e-5)
    assert describe_blob(codec.encode(x))["budget_kind"] == "relative_l2"


def test_tighter_budget_costs_more_bits():
    x = noisy_latent((16, 3, 8, 16), 0.6)
    loose = describe_blob(QuantizedCodec(CodecConfig(sigma_budget=0.1)).encode(x, seed=SEED, sigma=0.6))
    tight = describe_blob(QuantizedCodec(CodecConfig(sigma_budget=0.01)).encode(x, seed=SEED, sigma=0.6))
    assert loose["bits"] < tight["bits"] and loose["nbytes"] < tight["nbytes"]


def test_seed_residual_is_the_big_lever_on_noisy_latents():
    x = noisy_latent((16, 3, 16, 16), 0.9)
    with_seed = QuantizedCodec().encode(x, seed=SEED, sigma=0.9)
    without = QuantizedCodec(CodecConfig(seed_residual=False)).encode(x, seed=SEED, sigma=0.9)
    wrong_seed = QuantizedCodec().encode(x, seed=SEED + 1, sigma=0.9)
    assert len(with_seed) * 2 < len(without)
    assert describe_blob(wrong_seed)["noise_scale"] < 0.1  # unrelated noise: c fits near zero
    assert len(with_seed) * 2 < len(wrong_seed)


@pytest.mark.parametrize("stage", [{"temporal_delta": True}, {"lossless": "none"}, {"lossless": "deflate"},
                                   {"lossless": "lz4"}, {"block_size": 16}, {"block_size": 4096}])
def test_every_stage_setting_round_trips_within_budget(stage):
    codec = QuantizedCodec(CodecConfig(**stage))
    x = noisy_latent((16, 5, 9, 11), 0.5)
    y = codec.decode(codec.encode(x, seed=SEED, sigma=0.5))
    assert rms(y, x) <= 0.01 * (1 + 1e-5)


def test_impossible_budget_falls_back_to_lossless():
    codec = QuantizedCodec(CodecConfig(bit_widths=(2,), sigma_budget=0.001))
    x = noisy_latent((4, 3, 32), 0.5)
    blob = codec.encode(x, seed=SEED, sigma=0.5)
    assert read_header(blob).codec == "lossless"
    assert torch.equal(codec.decode(blob), x)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_dtype_is_preserved(dtype):
    x = noisy_latent((16, 3, 8, 8), 0.5).to(dtype)
    y = QuantizedCodec().decode(QuantizedCodec().encode(x, seed=SEED, sigma=0.5))
    assert y.dtype == dtype
    assert rms(y, x) <= 0.01 * (1 + 1e-3) + (0.004 if dtype == torch.bfloat16 else 0.0)


@pytest.mark.parametrize("encode_backend,decode_backend", [("triton", "torch"), ("torch", "triton")])
def test_blobs_cross_backends(encode_backend, decode_backend):
    x = noisy_latent((4, 3, 37), 0.8)
    writer = QuantizedCodec(CodecConfig(backend=encode_backend, temporal_delta=True))
    reader = QuantizedCodec(CodecConfig(backend=decode_backend))
    blob = writer.encode(x, seed=SEED, sigma=0.8)
    same_side = writer.decode(blob)
    other_side = reader.decode(blob)
    # The decoders add back c * eps, each with its own backend's noise: Philox is bit-identical, but
    # Box-Muller's log and cos come from different math libraries (float32 rounding scaled by the
    # radius, at most 5.7), and a compiled kernel may fuse the multiply-add.
    noise = describe_blob(blob)["noise_scale"] * seeded_noise(x.shape, SEED).abs()
    bound = FLOAT32_SLACK * (same_side.abs() + noise + abs(describe_blob(blob)["noise_scale"]) * BOX_MULLER_RADIUS)
    assert bool(((same_side - other_side).abs() <= bound).all())
    assert rms(other_side, x) <= 0.016 * (1 + 1e-4)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_latents_are_refused(bad):
    x = torch.randn(4, 3, 8)
    x[1, 2, 3] = bad
    with pytest.raises(InvalidLatentError, match="NaN or infinite"):
        QuantizedCodec().encode(x, seed=SEED, sigma=0.5)


@pytest.mark.parametrize("sigma", [float("nan"), -0.5, float("inf")])
def test_bad_sigma_is_refused(sigma):
    with pytest.raises(InvalidLatentError, match="sigma"):
        QuantizedCodec().encode(torch.randn(4, 4), seed=SEED, sigma=sigma)


def test_sigma_mode_needs_sigma():
    with pytest.raises(InvalidLatentError, match="sigma"):
        QuantizedCodec(CodecConfig(budget_mode="sigma")).encode(torch.randn(4, 4), seed=SEED)


def test_a_stored_blob_with_any_flipped_byte_is_never_decoded():
    # The codec checks structure; the integrity frame a stored blob travels in catches every flip.
    codec = QuantizedCodec()
    blob = codec.encode(noisy_latent((16, 3, 8, 8), 0.5), seed=SEED, sigma=0.5)
    stored = frame(blob)
    for position in range(0, len(stored), max(1, len(stored) // 97)):
        damaged = bytearray(stored)
        damaged[position] ^= 0x40
        with pytest.raises(CorruptBlobError):
            codec.decode(unframe(bytes(damaged)))
    assert torch.equal(codec.decode(unframe(stored)), codec.decode(blob))


def test_truncated_or_extended_blobs_are_refused():
    codec = QuantizedCodec()
    blob = codec.encode(noisy_latent((16, 3, 8, 8), 0.5), seed=SEED, sigma=0.5)
    for cut in (1, 10, len(blob) // 2, len(blob) - 1):
        with pytest.raises(CorruptBlobError):
            codec.decode(blob[:cut])
    with pytest.raises(CorruptBlobError):
        codec.decode(blob + b"\0")


def test_quantized_blob_is_not_readable_as_lossless_and_lossless_blob_is_readable_by_quantized():
    x = torch.randn(4, 4, 4)
    quantized = QuantizedCodec().encode(x)
    with pytest.raises(CorruptBlobError, match="flexcache"):
        LosslessCodec().decode(quantized)
    assert torch.equal(QuantizedCodec().decode(LosslessCodec().encode(x)), x)


def test_build_codec_from_config_and_name():
    assert isinstance(build_codec(CodecConfig()), QuantizedCodec)
    assert isinstance(build_codec(dataclasses.replace(CodecConfig(), name="lossless")), LosslessCodec)
    assert isinstance(build_codec("flexcache"), QuantizedCodec)
    with pytest.raises(ConfigError):
        build_codec("zzz")


# -- only damage in the blob is a CorruptBlobError: a caller's device or a failing backend is not -------


@pytest.mark.parametrize("codec", [QuantizedCodec(), LosslessCodec()], ids=["quantized", "lossless"])
@pytest.mark.parametrize("device", ["cuda:99", "cdua", "meta"])
def test_a_device_the_machine_lacks_is_refused_before_the_blob_is_read(codec, device):
    from flexcache.errors import InvalidDeviceError

    blob = codec.encode(noisy_latent((4, 3, 8, 8), 0.5), seed=SEED, sigma=0.5)
    for given in (blob, b"not even a blob"):
        with pytest.raises(InvalidDeviceError):
            codec.decode(given, device=device)


def test_a_missing_backend_while_decoding_is_not_a_corrupt_blob(monkeypatch):
    from flexcache.codec import latent
    from flexcache.errors import BackendUnavailableError

    blob = QuantizedCodec().encode(noisy_latent((4, 3, 8, 8), 0.5), seed=SEED, sigma=0.5)
    missing = BackendUnavailableError("lossless algorithm 'ans' needs nvCOMP on a CUDA GPU")

    def failing(*args, **kwargs):
        raise missing

    monkeypatch.setattr(latent.lossless, "decompress", failing)
    with pytest.raises(BackendUnavailableError) as info:
        QuantizedCodec().decode(blob)
    assert info.value is missing


def test_an_error_from_the_kernels_is_not_a_corrupt_blob(monkeypatch):
    from flexcache.codec import latent

    blob = QuantizedCodec().encode(noisy_latent((4, 3, 8, 8), 0.5), seed=SEED, sigma=0.5)
    refused = ConfigError("the triton backend runs on CUDA tensors")

    def failing(*args, **kwargs):
        raise refused

    monkeypatch.setattr(latent.ops, "decode", failing)
    with pytest.raises(ConfigError) as info:
        QuantizedCodec().decode(blob)
    assert info.value is refused


def _with_params(blob: bytes, **changes) -> bytes:
    from flexcache.codec.latent import _QUANT_PARAMS

    fields = ["bits", "flags", "frame_axis", "kind", "block", "noise_scale", "sigma", "budget", "rms", "relative",
              "scales_nbytes", "packed_nbytes"]
    at = read_header(blob).header_nbytes
    values = dict(zip(fields, _QUANT_PARAMS.unpack_from(blob, at)))
    for name, change in changes.items():
        values[name] = change(values[name])
    return blob[:at] + _QUANT_PARAMS.pack(*values.values()) + blob[at + _QUANT_PARAMS.size:]


@pytest.mark.parametrize("changes", [
    {"frame_axis": lambda v: 7},
    {"block": lambda v: v * 2},
    {"scales_nbytes": lambda v: v - 8, "packed_nbytes": lambda v: v + 8},  # same total: only the layout can tell
], ids=["frame-axis", "block", "layout"])
def test_parameters_that_cannot_describe_the_shape_are_corrupt(changes):
    blob = QuantizedCodec().encode(noisy_latent((4, 3, 8, 8), 0.5), seed=SEED, sigma=0.5)
    assert describe_blob(blob)["codec"] == "flexcache"
    with pytest.raises(CorruptBlobError, match="blob"):
        QuantizedCodec().decode(_with_params(blob, **changes))

