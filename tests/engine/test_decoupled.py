"""Decoupled look-up: the object part and the background part are each searched on their own."""

from __future__ import annotations

import pytest
import torch

from flexcache.engine.records import decode_entry_meta, encode_entry_meta
from flexcache.errors import InvalidPromptError

# The full-prompt table alone never hits below 0.999, so every hit here comes from the part rules.
STRICT_FULL = [[0.999, 0.1]]
SAME_BACKGROUND_RULE = [-1.0, 0.9, 0.2]
BOTH_PARTS_RULE = [0.9, 0.9, 0.4]


def _cache(make_cache, lookup="decoupled", part_table=(SAME_BACKGROUND_RULE, BOTH_PARTS_RULE)):
    return make_cache(codec={"name": "lossless"},
                      planner={"lookup": lookup, "similarity_table": STRICT_FULL, "part_table": list(part_table)})


def _fill(cache, signature, prompt, parts=None, seed=1):
    plan = cache.plan(prompt, signature, seed=seed, parts=parts)
    assert not plan.hit
    latents = {step: torch.randn(signature.latent_shape, generator=torch.Generator().manual_seed(step))
               for step in plan.checkpoint_steps}
    keys = cache.insert(plan, latents)
    assert len(keys) == len(latents), "the insert stored nothing: a later miss would prove nothing"
    return plan


def test_same_background_hits_shallow_and_both_parts_deeper(make_cache, signature):
    cache = _cache(make_cache)
    _fill(cache, signature, "a golden retriever chasing a frisbee in a sunlit park",
          parts=("golden retriever chasing a frisbee", "sunlit park"))
    other_object = cache.plan("a child flying a red kite in a sunlit park", signature,
                              parts=("child flying a red kite", "sunlit park"))
    assert other_object.hit and other_object.via_parts
    assert other_object.skip_steps == 4  # 0.2 of 20: the same-background rule
    assert other_object.background_similarity == pytest.approx(1.0, abs=1e-5)
    assert other_object.object_similarity < 0.9
    both = cache.plan("in a sunlit park, a golden retriever chases a frisbee", signature,
                      parts=("golden retriever chases a frisbee", "sunlit park"))
    assert both.hit and both.via_parts and both.skip_steps == 8  # 0.4 of 20: both parts match
    assert cache.fetch(other_object) is not None and cache.fetch(both) is not None
    stats = cache.stats()
    assert stats["decoupled_hits"] == 2 and stats["hits"] == 2 and stats["lookup"] == "decoupled"


def test_full_lookup_ignores_parts(make_cache, signature):
    cache = _cache(make_cache, lookup="full")
    plan = _fill(cache, signature, "a golden retriever chasing a frisbee in a sunlit park",
                 parts=("golden retriever chasing a frisbee", "sunlit park"))
    assert plan.parts is None and plan.part_embeddings is None
    again = cache.plan("a child flying a red kite in a sunlit park", signature)
    assert not again.hit and again.object_similarity is None
    assert cache.index.partitions == 1  # no part partitions under full look-up
    assert cache.plan("a golden retriever chasing a frisbee in a sunlit park", signature).hit  # the entry is there


def test_missing_backgrounds_match_each_other_only(make_cache, signature):
    cache = _cache(make_cache, part_table=([0.3, 0.9, 0.3],))
    _fill(cache, signature, "a close-up of a blooming red rose", parts=("close-up of a blooming red rose", ""))
    tulip = cache.plan("a close-up of a blooming red tulip", signature,
                       parts=("close-up of a blooming red tulip", ""))
    assert tulip.hit and tulip.background_similarity == 1.0
    in_garden = cache.plan("a close-up of a blooming red tulip in a garden", signature,
                           parts=("close-up of a blooming red tulip", "garden"))
    assert not in_garden.hit  # (the tulip hit above shows the entry is there)


def test_parts_come_from_the_splitter_by_default(make_cache, signature):
    cache = _cache(make_cache)
    plan = cache.plan("a golden retriever chasing a frisbee in a sunlit park", signature)
    assert plan.parts is not None and "park" in plan.parts[1] and "retriever" in plan.parts[0]


@pytest.mark.parametrize("parts", [("", "park"), 42, ("only one",)])
def test_bad_parts_are_refused(make_cache, signature, parts):
    cache = _cache(make_cache)
    with pytest.raises(InvalidPromptError):
        cache.plan("a dog in a park", signature, parts=parts)


def test_records_leave_every_part_index(make_cache, signature):
    cache = _cache(make_cache)
    _fill(cache, signature, "a dog running on a beach", parts=("dog running", "beach"))
    _fill(cache, signature, "a close-up of a rose", parts=("close-up of a rose", ""), seed=2)
    assert len(cache.index) == 2 + 2 + 1  # full prompts, object parts, one background part
    assert cache.clear() > 0
    assert len(cache.index) == 0


def test_entry_metadata_keeps_the_parts(make_cache, signature):
    cache = _cache(make_cache)
    _fill(cache, signature, "a dog running on a beach", parts=("dog running", "beach"))
    record = next(iter(cache._records.values()))
    entry = next(iter(record.entries.values()))
    restored, _ = decode_entry_meta(encode_entry_meta(record, entry), cache.index.dim)
    assert restored.parts == ("dog running", "beach")
    assert torch.equal(restored.object_embedding, record.object_embedding.cpu())
    assert torch.equal(restored.background_embedding, record.background_embedding.cpu())
    record.parts, record.object_embedding, record.background_embedding = None, None, None
    plain, _ = decode_entry_meta(encode_entry_meta(record, entry), cache.index.dim)
    assert plain.parts is None and plain.object_embedding is None  # entries written under full look-up
