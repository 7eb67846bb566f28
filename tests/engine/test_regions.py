"""Region hits: masks stored with entries, the region rules, composition and the failure paths."""

from __future__ import annotations

import pytest
import torch

from flexcache.engine.records import decode_entry_meta, encode_entry_meta
from flexcache.engine.regions import (
    MAX_MASK_CELLS,
    catch_up_steps,
    compose_start,
    decode_mask,
    encode_mask,
    object_cells,
    region_sigmas,
    regenerated_cells,
)
from flexcache.errors import ConfigError, CorruptBlobError, InvalidLatentError

STRICT_FULL = [[0.999, 0.1]]
BACKGROUND_RULE = ["background", 0.9, 0.3]
OBJECT_RULE = ["object", 0.9, 0.4]
GRID = (3, 8, 8)  # the latent grid of the signature (4, 3, 8, 8)


def _cache(make_cache, region_table=(BACKGROUND_RULE, OBJECT_RULE), **planner):
    return make_cache(codec={"name": "lossless"},
                      planner={"similarity_table": STRICT_FULL, "part_table": [], "region_table": list(region_table),
                               **planner})


def _object_mask() -> torch.Tensor:
    mask = torch.zeros(GRID)
    mask[:, 3:5, 3:5] = 1.0  # the object: the centre 2x2 cells of every frame
    return mask


def _fill(cache, signature, prompt, parts, *, seed=1, masks=True):
    plan = cache.plan(prompt, signature, seed=seed, parts=parts)
    assert not plan.hit
    latents = {step: torch.full(signature.latent_shape, float(seed)) for step in plan.checkpoint_steps}
    keys = cache.insert(plan, latents, {step: 0.5 for step in latents},
                        {step: _object_mask() for step in latents} if masks else None)
    assert len(keys) == len(latents), "the insert stored nothing: a later miss would prove nothing"
    return plan


PARK = ("golden retriever chasing a frisbee", "sunlit park")
KITE = ("child flying a red kite", "sunlit park")


def test_mask_blob_round_trips_and_is_small():
    mask = torch.rand(4, 8, 8)
    blob = encode_mask(mask)
    assert len(blob) < 400
    assert torch.allclose(decode_mask(blob), mask, atol=1 / 255 / 2 + 1e-6)


@pytest.mark.parametrize("damage", ["flip", "truncate", "magic"])
def test_damaged_mask_blob_is_detected(damage):
    blob = bytearray(encode_mask(torch.rand(2, 4, 4)))
    if damage == "flip":
        blob[12] ^= 0x40
    elif damage == "truncate":
        blob = blob[:-5]
    else:
        blob[:4] = b"XXXX"
    with pytest.raises(CorruptBlobError):
        decode_mask(bytes(blob))


def test_large_mask_grids_are_pooled_to_a_few_kb():
    blob = encode_mask(torch.rand(21, 60, 104))  # Wan2.1 480p token grid
    mask = decode_mask(blob)
    assert mask.numel() <= MAX_MASK_CELLS and mask.shape[0] == 21
    assert len(blob) < 20_000


def test_region_schedule_starts_at_one_and_catches_up():
    sigmas = torch.linspace(1.0, 0.0, 21)
    own = region_sigmas(sigmas, 8, catch_up_steps(20, 8, 0.5))
    assert own.numel() == sigmas[8:].numel()
    assert float(own[0]) == 1.0
    assert torch.equal(own[6:], sigmas[14:])  # caught up after 6 of the 12 steps left
    assert bool((own[1:] <= own[:-1]).all())
    with pytest.raises(ValueError):
        region_sigmas(sigmas, 8, 13)


def test_regenerated_cells_and_composition():
    first = torch.zeros(2, 2, 2, dtype=torch.bool)
    first[:, 0, 0] = True
    second = torch.zeros_like(first)
    second[:, 1, 1] = True
    assert torch.equal(regenerated_cells("object", first), first)
    assert torch.equal(regenerated_cells("background", first), ~first)
    assert torch.equal(regenerated_cells("composed", first, second), first & ~second)
    kept, noise, other = torch.zeros(1, 2, 2, 2), torch.ones(1, 2, 2, 2), torch.full((1, 2, 2, 2), 5.0)
    start = compose_start(kept, noise, first.float().unsqueeze(0), object_latent=other,
                          object_region=second.float().unsqueeze(0))
    assert float(start[0, 0, 0, 0]) == 1.0 and float(start[0, 0, 1, 1]) == 5.0 and float(start[0, 0, 0, 1]) == 0.0


def test_object_cells_threshold_and_dilation():
    soft = torch.zeros(1, 5, 5)
    soft[0, 2, 2] = 0.8
    assert int(object_cells(soft, threshold=0.5, dilation=0).sum()) == 1
    assert int(object_cells(soft, threshold=0.5, dilation=1).sum()) == 9
    assert int(object_cells(soft, threshold=0.9, dilation=1).sum()) == 0


def test_same_background_gets_a_region_hit_with_the_object_regenerated(make_cache, signature):
    cache = _cache(make_cache)
    _fill(cache, signature, "a golden retriever chasing a frisbee in a sunlit park", PARK, seed=3)
    # seed 7 is the caller's: any_seed lets it resume from seed 3's entry, its own noise in the region
    plan = cache.plan("a child flying a red kite in a sunlit park", signature, parts=KITE, seed=7, any_seed=True,
                      regions=True)
    assert plan.hit and plan.region == "object" and plan.skip_steps == 6  # 0.3 of 20
    assert plan.region_method == "restart" and plan.uniform_from == 6 + 7  # half of the 14 steps left
    assert all(step >= plan.uniform_from for step in plan.run_checkpoints)
    start = cache.fetch_start(plan)
    assert start.region is not None and start.region.shape == (1, 3, 8, 8)
    region = start.region.expand(signature.latent_shape) > 0.5
    assert torch.all(start.latent[~region] == 3.0)  # the background is the cached latent
    from flexcache.kernels import seeded_noise

    assert torch.equal(start.latent[region], seeded_noise(signature.latent_shape, 7)[region])  # fresh noise
    assert cache.stats()["region_hits"] == 1


def test_same_object_regenerates_the_background(make_cache, signature):
    cache = _cache(make_cache)
    _fill(cache, signature, "a golden retriever chasing a frisbee in a sunlit park", PARK)
    plan = cache.plan("a golden retriever chasing a frisbee on a snowy mountain", signature,
                      parts=("golden retriever chasing a frisbee", "snowy mountain"), regions=True)
    assert plan.hit and plan.region == "background" and plan.skip_steps == 8
    start = cache.fetch_start(plan)
    centre = start.region[0, :, 3:5, 3:5]  # inside the (dilated) object cells
    assert float(centre.max()) == 0.0 and float(start.region[0, :, 0, 0].min()) == 1.0


def test_object_and_background_from_two_entries_compose(make_cache, signature):
    cache = _cache(make_cache, region_table=(["background", 0.9, 0.3], ["object", 0.9, 0.3]))
    _fill(cache, signature, "a golden retriever chasing a frisbee on a snowy mountain",
          ("golden retriever chasing a frisbee", "snowy mountain"), seed=2)
    _fill(cache, signature, "a child flying a red kite in a sunlit park", KITE, seed=5)
    plan = cache.plan("a golden retriever chasing a frisbee in a sunlit park", signature, parts=PARK, regions=True)
    assert plan.hit and plan.region == "composed" and plan.object_record is not None
    start = cache.fetch_start(plan)
    assert float(start.latent[0, 0, 3, 3]) == 2.0  # the object cells come from the object's entry
    assert float(start.latent[0, 0, 0, 0]) == 5.0  # far from both objects: the background's entry
    assert float(start.region.max()) == 0.0  # both masks are the same here: nothing left to regenerate


def test_entries_without_masks_serve_whole_latent_rules_only(make_cache, signature):
    cache = _cache(make_cache)
    _fill(cache, signature, "a golden retriever chasing a frisbee in a sunlit park", PARK, masks=False)
    plan = cache.plan("a child flying a red kite in a sunlit park", signature, parts=KITE, regions=True)
    assert not plan.hit
    whole = cache.plan("a golden retriever chasing a frisbee in a sunlit park", signature, parts=PARK)
    assert whole.hit and whole.region is None  # the entry serves, as a whole latent


def test_a_caller_that_cannot_run_regions_gets_none(make_cache, signature):
    cache = _cache(make_cache)
    _fill(cache, signature, "a golden retriever chasing a frisbee in a sunlit park", PARK)
    assert not cache.plan("a child flying a red kite in a sunlit park", signature, parts=KITE, regions=False).hit
    region = cache.plan("a child flying a red kite in a sunlit park", signature, parts=KITE, regions=True)
    assert region.hit and region.region == "object"  # the same request from a caller that can run regions
    off = _cache(make_cache, regions=False)
    _fill(off, signature, "a golden retriever chasing a frisbee in a sunlit park", PARK)
    assert not off.plan("a child flying a red kite in a sunlit park", signature, parts=KITE).hit
    assert off.plan("a golden retriever chasing a frisbee in a sunlit park", signature, parts=PARK).hit


def test_no_background_part_never_keeps_a_background(make_cache, signature):
    cache = _cache(make_cache, region_table=(BACKGROUND_RULE,))
    _fill(cache, signature, "a golden retriever chasing a frisbee", ("golden retriever chasing a frisbee", ""))
    plan = cache.plan("a child flying a red kite", signature, parts=("child flying a red kite", ""), regions=True)
    assert not plan.hit  # both without a setting: no background to keep
    # With a setting on both sides the same rule keeps it: the miss above is the missing setting's.
    _fill(cache, signature, "a golden retriever chasing a frisbee in a sunlit park", PARK, seed=2)
    kite = cache.plan("a child flying a red kite in a sunlit park", signature, parts=KITE, regions=True)
    assert kite.hit and kite.region == "object"


def test_a_corrupt_mask_gives_no_region_hit_and_no_garbage(make_cache, signature, caplog):
    cache = _cache(make_cache)
    _fill(cache, signature, "a golden retriever chasing a frisbee in a sunlit park", PARK)
    for entry in cache._entries.values():
        entry.mask = entry.mask[:-1] + bytes([entry.mask[-1] ^ 1])
    plan = cache.plan("a child flying a red kite in a sunlit park", signature, parts=KITE, regions=True)
    assert plan.hit and plan.region == "object"
    assert cache.fetch_start(plan) is None and cache.fetch(plan) is None
    stats = cache.stats()
    assert stats["corrupt_masks"] == 1 and stats["hits"] == 0
    again = cache.plan("a child flying a red kite in a sunlit park", signature, parts=KITE, regions=True)
    # that entry serves no region hit any more (the others' masks are checked when they are used)
    assert not (again.hit and again.region is not None and again.skip_steps == plan.skip_steps)


def test_masks_travel_in_entry_metadata(make_cache, signature):
    cache = _cache(make_cache)
    _fill(cache, signature, "a golden retriever chasing a frisbee in a sunlit park", PARK)
    entry = next(iter(cache._entries.values()))
    record = cache._records[entry.record_id]
    _, decoded = decode_entry_meta(encode_entry_meta(record, entry), cache.index.dim)
    assert decoded.mask == entry.mask and decoded.sigma == 0.5
    assert torch.allclose(decode_mask(decoded.mask), _object_mask())


def test_bad_masks_are_refused(make_cache, signature):
    cache = _cache(make_cache)
    plan = cache.plan("a golden retriever chasing a frisbee in a sunlit park", signature, parts=PARK)
    latents = {step: torch.zeros(signature.latent_shape) for step in plan.checkpoint_steps}
    with pytest.raises(InvalidLatentError, match="mask"):
        cache.insert(plan, latents, masks={plan.checkpoint_steps[0]: torch.zeros(4, 4)})
    nan = torch.zeros(GRID)
    nan[0, 0, 0] = float("nan")
    with pytest.raises(InvalidLatentError, match="mask"):
        cache.insert(plan, latents, masks={plan.checkpoint_steps[0]: nan})
    assert cache.stats()["entries"] == 0


@pytest.mark.parametrize("planner", [
    {"region_table": [["setting", 0.9, 0.3]]},
    {"region_table": [["object", 0.9, 1.5]]},
    {"region_method": "inpaint"},
    {"region_threshold": 0.0},
    {"region_dilation": -1},
    {"region_catch_up": 0.0},
])
def test_bad_region_config_is_a_config_error(planner):
    from flexcache.config import CacheConfig

    with pytest.raises(ConfigError):
        CacheConfig.from_dict({"planner": planner})


def test_metadata_of_earlier_versions_has_no_mask_and_serves_whole_latents_only(make_cache, signature):
    import json

    cache = _cache(make_cache)
    _fill(cache, signature, "a golden retriever chasing a frisbee in a sunlit park", PARK)
    entry = next(iter(cache._entries.values()))
    data = json.loads(encode_entry_meta(cache._records[entry.record_id], entry))
    del data["mask"], data["sigma"]  # what a release before region hits wrote
    _, old = decode_entry_meta(json.dumps(data).encode(), cache.index.dim)
    assert old.mask is None and old.sigma is None
