"""FlexCache engine: plan / fetch / insert / stats, bad input, tenants, threads."""

from __future__ import annotations

import dataclasses
import threading

import pytest
import torch

from flexcache import (
    CapacityError,
    ConfigError,
    CorruptBlobError,
    FlexCacheError,
    GenerationSignature,
    InvalidLatentError,
    InvalidPlanError,
    InvalidPromptError,
)

PROMPT = "a golden retriever chasing a frisbee in a sunlit park"
NEAR = "a golden retriever chases a frisbee in a sunny park"
UNRELATED = "a rocket lifting off from a launch pad at night"


def latents_for(plan, scale=1.0):
    return {step: torch.randn(plan.signature.latent_shape) * scale + step for step in plan.checkpoint_steps}


def fill(cache, prompt, signature, tenant="default"):
    plan = cache.plan(prompt, signature, tenant=tenant).as_miss()
    data = latents_for(plan)
    keys = cache.insert(plan, data)
    assert len(keys) == len(data), "the insert stored nothing: a later miss would prove nothing"
    return plan, data


def test_identical_prompt_hits_deepest_checkpoint_and_returns_stored_latent(make_cache, signature):
    cache = make_cache(codec={"name": "lossless"})
    _, stored = fill(cache, PROMPT, signature)
    plan = cache.plan(PROMPT, signature)
    assert plan.hit
    assert plan.skip_steps == max(plan.checkpoint_steps) == 10  # 50% of 20 steps
    assert plan.similarity == pytest.approx(1.0, abs=1e-5)
    latent = cache.fetch(plan)
    assert torch.equal(latent, stored[10])
    stats = cache.stats()
    assert (stats["requests"], stats["hits"], stats["steps_saved"], stats["steps_total"]) == (2, 1, 10, 40)
    assert stats["entries"] == 5 and stats["records"] == 1
    assert stats["bytes_stored"] > 5 * 4 * 3 * 8 * 8 * 4


def test_near_duplicate_hits_at_a_shallower_or_equal_depth(make_cache, signature):
    cache = make_cache()
    fill(cache, PROMPT, signature)
    plan = cache.plan(NEAR, signature)
    assert plan.hit
    assert 0.65 <= plan.similarity < 1.0
    assert plan.skip_steps == cache.planner.skip_steps(plan.similarity, 20)
    assert plan.source_prompt == PROMPT


def test_unrelated_prompt_misses(make_cache, signature):
    cache = make_cache()
    fill(cache, PROMPT, signature)
    assert cache.plan(PROMPT, signature).hit  # the entry is there to be found
    plan = cache.plan(UNRELATED, signature)
    assert not plan.hit and plan.skip_steps == 0
    assert plan.similarity is not None and plan.similarity < 0.65


@pytest.mark.parametrize("change", [
    {"num_steps": 30},
    {"height": 128, "latent_shape": (4, 3, 16, 8)},
    {"num_frames": 17, "latent_shape": (4, 5, 8, 8)},
    {"model_id": "other-model"},
    {"extra": (("guidance_scale", "7.0"),)},
])
def test_different_signature_is_a_miss(make_cache, signature, change):
    cache = make_cache()
    fill(cache, PROMPT, signature)
    assert cache.plan(PROMPT, signature).hit  # the same prompt under the same signature is served
    other = dataclasses.replace(signature, **change)
    plan = cache.plan(PROMPT, other)
    assert not plan.hit


def test_plan_uses_deepest_available_step_at_most_k(make_cache, signature):
    cache = make_cache()
    plan = cache.plan(PROMPT, signature)
    cache.insert(plan, {2: torch.randn(4, 3, 8, 8), 6: torch.randn(4, 3, 8, 8)})
    again = cache.plan(PROMPT, signature)
    assert again.hit and again.skip_steps == 6


def test_tenants_never_cross(make_cache, signature):
    cache = make_cache()
    fill(cache, PROMPT, signature, tenant="alice")
    assert not cache.plan(PROMPT, signature, tenant="bob").hit
    assert cache.plan(PROMPT, signature, tenant="alice").hit
    assert cache.clear(tenant="bob") == 0
    assert cache.clear(tenant="alice") == 5
    assert not cache.plan(PROMPT, signature, tenant="alice").hit


@pytest.mark.parametrize("prompt", ["", "   ", None, 42])
def test_bad_prompt_is_refused(make_cache, signature, prompt):
    cache = make_cache()
    with pytest.raises(InvalidPromptError):
        cache.plan(prompt, signature)
    assert not cache.plan(PROMPT, signature).hit  # still usable


@pytest.mark.parametrize("seed", [-1, 2**64, 1.5, "3"])
def test_bad_seed_is_refused(make_cache, signature, seed):
    with pytest.raises(InvalidPlanError, match="seed"):
        make_cache().plan(PROMPT, signature, seed=seed)


@pytest.mark.parametrize("tenant", ["", " x", 3])
def test_bad_tenant_is_refused(make_cache, signature, tenant):
    with pytest.raises(InvalidPromptError):
        make_cache().plan(PROMPT, signature, tenant=tenant)


@pytest.mark.parametrize("bad", [
    {5: torch.randn(4, 3, 8, 9)},                      # wrong shape
    {5: torch.randn(2, 4, 3, 8, 8)},                   # batch of 2
    {5: torch.randn(4, 3, 8, 8, dtype=torch.float64)}, # wrong dtype
    {5: torch.randint(0, 5, (4, 3, 8, 8))},            # integer latent
    {5: torch.full((4, 3, 8, 8), float("nan"))},       # NaN
    {5: torch.randn(4, 3, 8, 8).index_fill_(0, torch.tensor([1]), float("inf"))},
    {0: torch.randn(4, 3, 8, 8)},                      # step out of range
    {20: torch.randn(4, 3, 8, 8)},
    {5: "not a tensor"},
])
def test_bad_latents_are_refused_atomically(make_cache, signature, bad):
    cache = make_cache()
    plan = cache.plan(PROMPT, signature)
    good = {2: torch.randn(4, 3, 8, 8)}
    with pytest.raises(InvalidLatentError):
        cache.insert(plan, {**good, **bad})
    assert cache.stats()["entries"] == 0  # nothing half-stored
    cache.insert(plan, good)
    assert cache.stats()["entries"] == 1


def test_leading_batch_of_one_is_accepted(make_cache, signature):
    cache = make_cache()
    plan = cache.plan(PROMPT, signature)
    cache.insert(plan, {4: torch.randn(1, 4, 3, 8, 8)})
    assert cache.fetch(cache.plan(PROMPT, signature)).shape == (4, 3, 8, 8)


def test_insert_from_hit_plan_and_fetch_from_miss_plan_are_refused(make_cache, signature):
    cache = make_cache()
    miss, _ = fill(cache, PROMPT, signature)
    with pytest.raises(InvalidPlanError):
        cache.fetch(miss)
    hit = cache.plan(PROMPT, signature)
    with pytest.raises(InvalidLatentError, match="did not compute steps"):  # a resumed run has no steps <= K
        cache.insert(hit, latents_for(hit))
    strict = make_cache(planner={"cache_resumed": False})
    fill(strict, PROMPT, signature)
    hit = strict.plan(NEAR, signature)
    assert hit.hit and hit.run_checkpoints
    with pytest.raises(InvalidPlanError, match="cache_resumed"):
        strict.insert(hit, {step: torch.randn(signature.latent_shape) for step in hit.run_checkpoints})
    assert strict.stats()["entries"] == len(hit.checkpoint_steps)


def test_a_resumed_run_caches_its_later_checkpoints_under_its_own_prompt(make_cache, signature):
    cache = make_cache(codec={"name": "lossless"})
    source, _ = fill(cache, PROMPT, signature)
    hit = cache.plan(NEAR, signature, seed=7, any_seed=True)  # seed 7 seeds a full run only
    assert hit.hit and 0 < hit.skip_steps < max(hit.checkpoint_steps)
    assert hit.source_seed == source.seed
    later = {step: torch.randn(signature.latent_shape) for step in hit.run_checkpoints}
    assert set(later) == {s for s in hit.checkpoint_steps if s > hit.skip_steps}
    keys = cache.insert(hit, later)
    assert len(keys) == len(later) and cache.stats()["resumed_inserts"] == len(later)
    # An exact repeat of the resumed prompt now resumes from its own, deepest checkpoint.
    again = cache.plan(NEAR, signature)
    assert again.hit and again.source_prompt == NEAR and again.skip_steps == max(hit.checkpoint_steps)
    assert torch.equal(cache.fetch(again), later[again.skip_steps])
    assert again.source_seed == source.seed  # its noise is the source's: the codec codes against that seed


def test_entry_larger_than_capacity_is_refused_and_cache_stays_usable(make_cache, signature):
    cache = make_cache(codec={"name": "lossless"}, store={"capacity_bytes": 1000})  # a latent: 1536 bytes + header
    plan = cache.plan(PROMPT, signature)
    with pytest.raises(CapacityError):
        cache.insert(plan, latents_for(plan))
    assert cache.stats()["entries"] == 0
    small = dataclasses.replace(signature, latent_shape=(2, 2, 4, 4))
    plan = cache.plan(PROMPT, small)
    cache.insert(plan, {3: torch.randn(2, 2, 4, 4)})
    assert cache.plan(PROMPT, small).hit


def test_unknown_policy_is_a_config_error(make_cache):
    with pytest.raises(ConfigError, match="policy"):
        make_cache(policy="mru")


@pytest.mark.parametrize("policy", ["lru", "lcbfu"])
def test_capacity_is_respected_and_evictions_keep_index_consistent(make_cache, signature, policy):
    one = 4 * 3 * 8 * 8 * 4 + 64  # a blob: payload + header
    cache = make_cache(codec={"name": "lossless"}, policy=policy, store={"capacity_bytes": 12 * one})
    prompts = [f"a {color} balloon floating over a {place}" for color, place in
                [("red", "desert"), ("blue", "harbour"), ("green", "forest"), ("yellow", "city"),
                 ("purple", "glacier")]]
    for prompt in prompts:
        fill(cache, prompt, signature)
        assert cache.stats()["bytes_stored"] <= cache.stats()["capacity_bytes"]
    stats = cache.stats()
    assert stats["evictions"] == 25 - stats["entries"] > 0
    # Every record the index can return still has an entry to fetch.
    for prompt in prompts:
        plan = cache.plan(prompt, signature)
        if plan.hit:
            assert cache.fetch(plan) is not None


def test_lcbfu_keeps_deep_popular_entries(make_cache, signature):
    one = 4 * 3 * 8 * 8 * 4 + 64  # payload + header (52 bytes): room for exactly 6
    cache = make_cache(codec={"name": "lossless"}, policy="lcbfu", store={"capacity_bytes": 6 * one})
    fill(cache, PROMPT, signature)
    for _ in range(3):
        assert cache.fetch(cache.plan(PROMPT, signature)) is not None
    fill(cache, UNRELATED, signature)
    kept = {(cache._records[e.record_id].prompt, e.step) for e in cache.entries()}
    # K x (hits + 1): shallow entries go first, ties to the least recently used;
    # the first prompt's step 10 (score 40) outlives everything shallower.
    assert kept == {(PROMPT, 6), (PROMPT, 8), (PROMPT, 10), (UNRELATED, 6), (UNRELATED, 8), (UNRELATED, 10)}


def test_corrupt_blob_is_a_miss_and_is_dropped(make_cache, signature):
    cache = make_cache()
    fill(cache, PROMPT, signature)
    plan = cache.plan(PROMPT, signature)
    assert plan.hit
    key = next(e.key for e in cache.entries() if e.step == plan.skip_steps)
    blob = bytearray(cache.tier.get(key))
    blob[-3] ^= 0xFF
    cache.tier.put(key, bytes(blob))
    assert cache.fetch(plan) is None
    stats = cache.stats()
    assert stats["corrupt_blobs"] == 1 and stats["entries"] == 4 and stats["hits"] == 0
    # The next plan resumes from the deepest intact step instead.
    again = cache.plan(PROMPT, signature)
    assert again.hit and again.skip_steps == 8
    assert cache.fetch(again) is not None


def test_fetch_after_eviction_returns_none(make_cache, signature):
    cache = make_cache()
    fill(cache, PROMPT, signature)
    plan = cache.plan(PROMPT, signature)
    assert plan.hit
    cache.clear()
    assert cache.fetch(plan) is None
    assert cache.stats()["fetch_misses"] == 1
    assert not plan.as_miss().hit


def test_duplicate_insert_keeps_one_record(make_cache, signature):
    cache = make_cache(codec={"name": "lossless"})
    first, data = fill(cache, PROMPT, signature)
    second = cache.plan(PROMPT, dataclasses.replace(signature))
    cache.insert(second.as_miss(), latents_for(second))
    stats = cache.stats()
    assert stats["records"] == 1 and stats["entries"] == 5 and stats["duplicate_inserts"] == 5
    assert torch.equal(cache.fetch(cache.plan(PROMPT, signature)), data[10])  # first writer wins


def test_concurrent_plan_and_insert_lose_and_duplicate_nothing(make_cache, signature):
    cache = make_cache()
    subjects = ["cat", "horse", "robot", "dragon", "violinist", "surfer", "astronaut", "fox"]
    places = ["beach", "mountain", "city street", "library"]
    prompts = [f"a {s} in a {p} at dawn" for s in subjects for p in places]  # 32 distinct
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def worker(offset: int) -> None:
        try:
            barrier.wait()
            # Every worker inserts every prompt, each starting at its own offset.
            for i in range(len(prompts)):
                prompt = prompts[(i + offset) % len(prompts)]
                plan = cache.plan(prompt, signature)
                if plan.hit:
                    assert cache.fetch(plan) is not None
                plan = plan.as_miss()
                cache.insert(plan, {step: torch.randn(4, 3, 8, 8) for step in plan.checkpoint_steps})
        except BaseException as exc:  # surface in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k * 4,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    stats = cache.stats()
    assert stats["records"] == len(prompts)
    assert stats["entries"] == len(prompts) * 5
    assert stats["inserts"] == len(prompts) * 5
    assert stats["duplicate_inserts"] == 7 * len(prompts) * 5
    assert stats["requests"] == 8 * len(prompts)
    keys = [e.key for e in cache.entries()]
    assert len(keys) == len(set(keys))
    assert sum(len(cache.tier.get(k)) for k in keys) == stats["bytes_stored"]
    for prompt in prompts:
        plan = cache.plan(prompt, signature)
        assert plan.hit and plan.source_prompt == prompt


def test_errors_are_flexcache_errors():
    for error in (CapacityError, ConfigError, CorruptBlobError, InvalidLatentError, InvalidPlanError,
                  InvalidPromptError):
        assert issubclass(error, FlexCacheError)


def test_signature_key_is_stable_and_sensitive(signature):
    again = GenerationSignature(**{f.name: getattr(signature, f.name) for f in dataclasses.fields(signature)})
    assert signature.key() == again.key()
    assert signature.key() != dataclasses.replace(signature, num_steps=21).key()
    assert GenerationSignature.from_dict(signature.to_dict()) == signature
    with pytest.raises(InvalidLatentError):
        dataclasses.replace(signature, latent_shape=(4, 0, 8, 8))
    with pytest.raises(InvalidLatentError):
        dataclasses.replace(signature, latent_dtype="int8")


def test_default_codec_compresses_within_its_budget(make_cache, signature):
    from flexcache.codec.latent import describe_blob
    from flexcache.kernels.noise import seeded_noise

    cache = make_cache()
    plan = cache.plan(PROMPT, signature, seed=4242)
    noise = seeded_noise(signature.latent_shape, plan.seed)
    smooth = torch.randn(signature.latent_shape).cumsum(-1) / 4
    sigmas = {step: 1.0 - step / 20 for step in plan.checkpoint_steps}
    latents = {step: sigma * noise + (1 - sigma) * smooth for step, sigma in sigmas.items()}
    cache.insert(plan, latents, sigmas)
    raw = 5 * 4 * 3 * 8 * 8 * 4
    assert cache.stats()["bytes_stored"] < raw / 3
    for entry in cache.entries():
        blob = cache.tier.get(entry.key)
        info = describe_blob(blob)
        assert info["codec"] == "flexcache" and info["residual"] and info["sigma"] == pytest.approx(sigmas[entry.step])
        decoded = cache.codec.decode(blob)
        rms = float(torch.sqrt(torch.mean((decoded - latents[entry.step]) ** 2)))
        assert rms <= 0.02 * sigmas[entry.step] + 1e-7
        assert rms == pytest.approx(info["achieved_rms"], rel=1e-4, abs=1e-9)
    hit = cache.plan(PROMPT, signature)
    fetched = cache.fetch(hit)
    assert fetched.dtype == torch.float32 and fetched.shape == signature.latent_shape
    assert float(torch.sqrt(torch.mean((fetched - latents[10]) ** 2))) <= 0.02 * sigmas[10] + 1e-7


def test_default_codec_without_sigma_meets_relative_l2(make_cache, signature):
    cache = make_cache()
    plan = cache.plan(PROMPT, signature)
    latent = torch.randn(signature.latent_shape)
    cache.insert(plan, {6: latent})
    fetched = cache.fetch(cache.plan(PROMPT, signature))
    assert float((fetched - latent).norm() / latent.norm()) <= 0.01 + 1e-7
