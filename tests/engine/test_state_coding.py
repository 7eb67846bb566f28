"""Predictive coding of solver state (bundle version 2): same budget per tensor, fewer bytes, old bundles still read."""

from __future__ import annotations

import json
import struct

import pytest
import torch

from flexcache.codec import build_codec
from flexcache.core import CodecConfig
from flexcache.core.errors import CorruptBlobError
from flexcache.engine import SolverState
from flexcache.engine.solver_bundle import (
    MODEL_OUTPUT_BUDGET_SCALE,
    PLAIN_BUNDLE_VERSION,
    decode_state,
    encode_bundle,
    encode_state,
    split_bundle,
)
from flexcache.engine.state_coding import coding_order
from flexcache.kernels.noise import seeded_noise

SHAPE = (4, 3, 16, 16)
SEED = 11
SIGMA = 0.6


def _smooth(generator: torch.Generator) -> torch.Tensor:
    field = torch.randn(SHAPE, generator=generator)
    for dim in (2, 3):  # neighbouring values alike, as in a latent
        field = (field + field.roll(1, dim) + field.roll(-1, dim)) / 3
    return field / field.std()


def _trajectory_state(generator: torch.Generator) -> tuple[torch.Tensor, SolverState]:
    """x_K and a UniPC-shaped state built as a flow run's: x0 predictions near x_K's implied x0, a sample before K."""
    x0 = _smooth(generator)
    eps = seeded_noise(SHAPE, SEED)
    x_k = (1 - SIGMA) * x0 + SIGMA * eps
    newest = x0 + 0.2 * _smooth(generator)
    older = newest + 0.1 * _smooth(generator)
    earlier = 0.65
    last_sample = (1 - earlier) * older + earlier * eps
    tensors = {"model_outputs.0": older, "model_outputs.1": newest, "last_sample": last_sample}
    return x_k, SolverState("UniPCMultistepScheduler", {"lower_order_nums": 2}, tensors, frozenset({"last_sample"}))


def _budget(name: str) -> float:
    config = CodecConfig()
    return config.sigma_budget * SIGMA * (1.0 if name == "last_sample" else MODEL_OUTPUT_BUDGET_SCALE)


def _round_trip(codec, x_k, state, predicted: bool):
    latent_blob = codec.encode(x_k, seed=SEED, sigma=SIGMA)
    coded = encode_state(codec, state, seed=SEED, sigma=SIGMA, frame_axis=1,
                         latent_blob=latent_blob if predicted else None)
    bundle = encode_bundle(latent_blob, state.solver, state.scalars, coded)
    blob, (solver, scalars, read) = split_bundle(bundle)
    latent = codec.decode(blob)
    return bundle, read, decode_state(codec, read, latent), len(latent_blob)


def test_model_outputs_newest_first_and_trajectory_points_last():
    _, state = _trajectory_state(torch.Generator().manual_seed(0))
    assert coding_order(state) == ["model_outputs.1", "model_outputs.0", "last_sample"]


def test_predicted_state_keeps_each_tensors_budget_in_fewer_bytes():
    codec = build_codec("flexcache")
    x_k, state = _trajectory_state(torch.Generator().manual_seed(1))
    plain_bundle, plain, _, latent_bytes = _round_trip(codec, x_k, state, predicted=False)
    bundle, read, tensors, _ = _round_trip(codec, x_k, state, predicted=True)
    assert bundle[4] != PLAIN_BUNDLE_VERSION and plain_bundle[4] == PLAIN_BUNDLE_VERSION
    assert set(read.predictions) == set(state.tensors) and not plain.predictions
    for name, original in state.tensors.items():
        error = float(torch.sqrt(torch.mean((tensors[name].double() - original.double()) ** 2)))
        assert error <= _budget(name) * (1 + 1e-4), name
        assert tensors[name].dtype == original.dtype and tensors[name].shape == original.shape
    state_bytes, plain_state_bytes = len(bundle) - latent_bytes, len(plain_bundle) - latent_bytes
    assert state_bytes < 0.6 * plain_state_bytes


def test_a_tensor_the_references_determine_stores_no_residual():
    codec = build_codec("flexcache")
    x_k, state = _trajectory_state(torch.Generator().manual_seed(2))
    eps = seeded_noise(SHAPE, SEED)
    decoded_x_k = codec.decode(codec.encode(x_k, seed=SEED, sigma=SIGMA))
    # the flow relation x0 = (x_K - sigma eps) / (1 - sigma) on x_K as a hit decodes it: nothing left to code
    state.tensors["model_outputs.1"] = (decoded_x_k - SIGMA * eps) / (1 - SIGMA)
    _, read, tensors, _ = _round_trip(codec, x_k, state, predicted=True)
    assert not read.predictions["model_outputs.1"].residual and "model_outputs.1" not in read.parts
    error = float(torch.sqrt(torch.mean((tensors["model_outputs.1"] - state.tensors["model_outputs.1"]) ** 2)))
    assert error <= _budget("model_outputs.1")


def test_the_decoder_rebuilds_what_the_encoder_predicted_from():
    """Closed loop: decoding twice, or in another process, gives the same tensors (no drift from the encoder)."""
    codec = build_codec("flexcache")
    x_k, state = _trajectory_state(torch.Generator().manual_seed(3))
    bundle, _, first, _ = _round_trip(codec, x_k, state, predicted=True)
    blob, (_, _, read) = split_bundle(bundle)
    second = decode_state(codec, read, codec.decode(blob))
    for name in first:
        torch.testing.assert_close(first[name], second[name], rtol=0, atol=0)


def test_lossless_codec_codes_each_tensor_alone_and_exactly():
    codec = build_codec("lossless")
    x_k, state = _trajectory_state(torch.Generator().manual_seed(4))
    bundle, read, tensors, _ = _round_trip(codec, x_k, state, predicted=True)
    assert bundle[4] == PLAIN_BUNDLE_VERSION and not read.predictions
    for name, original in state.tensors.items():
        torch.testing.assert_close(tensors[name], original, rtol=0, atol=0)


def test_without_a_sigma_the_state_is_coded_alone():
    codec = build_codec("flexcache")
    x_k, state = _trajectory_state(torch.Generator().manual_seed(5))
    latent_blob = codec.encode(x_k, seed=SEED)
    coded = encode_state(codec, state, seed=SEED, sigma=None, frame_axis=1, latent_blob=latent_blob)
    assert not coded.predictions and set(coded.parts) == set(state.tensors)


def _rewrite_table(bundle: bytes, change) -> bytes:
    head = struct.Struct("<4sBIH")
    magic, version, table_nbytes, count = head.unpack_from(bundle)
    lengths_end = head.size + count * 8
    table = json.loads(bundle[lengths_end:lengths_end + table_nbytes])
    change(table)
    new_table = json.dumps(table, sort_keys=True, separators=(",", ":")).encode()
    return (head.pack(magic, version, len(new_table), count) + bundle[head.size:lengths_end] + new_table
            + bundle[lengths_end + table_nbytes:])


@pytest.mark.parametrize("damage", ["unknown reference", "coefficient rows", "order", "residual gone", "dtype"])
def test_a_damaged_prediction_is_a_corrupt_blob(damage):
    codec = build_codec("flexcache")
    x_k, state = _trajectory_state(torch.Generator().manual_seed(6))
    bundle, read, _, _ = _round_trip(codec, x_k, state, predicted=True)
    stored = next(name for name, p in read.predictions.items() if p.residual)

    def change(table):
        first = table["order"][0]
        if damage == "unknown reference":
            table["predict"][first]["refs"][-1] = "model_outputs.0"
        elif damage == "coefficient rows":
            table["predict"][first]["coef"] = table["predict"][first]["coef"][:1]
        elif damage == "order":
            table["order"] = table["order"][:-1]
        elif damage == "residual gone":
            table["predict"][stored]["residual"] = True
            table["parts"] = []
        else:
            table["predict"][first]["dtype"] = "not_a_dtype"

    damaged = _rewrite_table(bytes(bundle), change)
    with pytest.raises(CorruptBlobError):
        blob, (_, _, coded) = split_bundle(damaged)
        decode_state(codec, coded, codec.decode(blob))
