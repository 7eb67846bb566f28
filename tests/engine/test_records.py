"""Signatures and entry metadata: the weights fields round-trip, and signatures without them key as before."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from flexcache import GenerationSignature
from flexcache.core.errors import InvalidLatentError
from flexcache.engine.records import (
    CacheEntry,
    PromptRecord,
    decode_entry_meta,
    encode_entry_meta,
)


def _identified(signature):
    return dataclasses.replace(signature, weights="9d787fd3328d79528c16e5ae2cfb2ddf",
                               adapters=(("one", "weights=e10da027ebcf3af7;active=1;fused=0;scale=0.5"),
                                         ("two", "weights=16a541b4c06dd474;active=0;fused=0;scale=unused")))


def _meta(signature):
    record = PromptRecord(7, "default", "a prompt", signature, 3, torch.randn(8))
    entry = CacheEntry(7, 10, signature.num_steps, 100, "default.k")
    return encode_entry_meta(record, entry)


def test_weights_and_adapters_round_trip_through_entry_metadata(signature):
    identified = _identified(signature)
    decoded, _ = decode_entry_meta(_meta(identified), dim=8)
    assert decoded.signature == identified and decoded.signature.key() == identified.key()
    assert GenerationSignature.from_dict(json.loads(json.dumps(identified.to_dict()))) == identified


def test_a_signature_without_weights_keys_as_before_this_field_existed():
    """The key the release before the weights fields gave this signature: engine-API entries stay reachable."""
    old = GenerationSignature(model_id="test-model", scheduler="FlowMatchEulerDiscreteScheduler:abc", num_steps=20,
                              height=64, width=64, num_frames=9, latent_shape=(4, 3, 8, 8),
                              extra=(("guidance_scale", "5.0"),))
    assert old.key() == "4fd2e99b02b8e17844c055b529de5e73"
    assert "weights" not in old.to_dict() and "adapters" not in old.to_dict()


def test_entries_written_before_the_weights_fields_never_match_a_pipeline_signature(signature):
    legacy = json.loads(_meta(signature))
    assert "weights" not in legacy["signature"]  # what metadata of earlier versions holds
    decoded, _ = decode_entry_meta(json.dumps(legacy).encode(), dim=8)
    assert decoded.signature.weights == "" and decoded.signature.adapters == ()
    assert decoded.signature.key() != _identified(signature).key()


@pytest.mark.parametrize("adapters", [(("one",),), (("one", 1.0),), "one"])
def test_adapters_must_be_string_pairs(signature, adapters):
    with pytest.raises(InvalidLatentError, match="adapters must be"):
        dataclasses.replace(signature, adapters=adapters)


def test_weights_must_be_a_string(signature):
    with pytest.raises(InvalidLatentError, match="weights must be"):
        dataclasses.replace(signature, weights=None)
