"""A caller's seed is honoured by plan(): another seed is another video, unless the caller says any seed will do."""

from __future__ import annotations

import pytest
import torch

from flexcache import ConfigError

PROMPT = "a golden retriever chasing a frisbee in a sunlit park"
NEAR = "a golden retriever chases a frisbee in a sunny park"


def _fill(cache, signature, prompt=PROMPT, seed=1):
    plan = cache.plan(prompt, signature, seed=seed)
    assert not plan.hit and plan.seed == seed
    keys = cache.insert(plan, {step: torch.randn(signature.latent_shape) for step in plan.checkpoint_steps})
    assert len(keys) == len(plan.checkpoint_steps), "the insert stored nothing: a later miss would prove nothing"
    return plan


def _cache(make_cache, **planner):
    return make_cache(codec={"name": "lossless"}, planner={"lookup": "full", **planner})


def test_the_same_seed_resumes_at_the_rules_depth(make_cache, signature):
    cache = _cache(make_cache)
    _fill(cache, signature)
    plan = cache.plan(PROMPT, signature, seed=1)
    assert plan.hit and plan.skip_steps == 10 and plan.source_seed == 1


def test_another_seed_misses_by_default(make_cache, signature):
    cache = _cache(make_cache)
    _fill(cache, signature)
    assert cache.plan(PROMPT, signature, seed=1).hit  # the entry is there for its own seed
    other = cache.plan(PROMPT, signature, seed=2)
    assert not other.hit and other.seed == 2
    assert not cache.plan(NEAR, signature, seed=2).hit


def test_no_seed_or_any_seed_may_use_any_entry(make_cache, signature):
    cache = _cache(make_cache)
    _fill(cache, signature)
    assert cache.plan(PROMPT, signature).hit
    plan = cache.plan(PROMPT, signature, seed=2, any_seed=True)
    assert plan.hit and plan.seed == 2 and plan.source_seed == 1  # seed 2 would seed a full run only


def test_cross_seed_max_fraction_caps_another_seeds_entry(make_cache, signature):
    cache = _cache(make_cache, cross_seed_max_fraction=0.25)
    _fill(cache, signature)
    capped = cache.plan(PROMPT, signature, seed=2)
    assert capped.hit and capped.skip_steps == 4  # the deepest checkpoint within 25 % of 20 steps
    assert cache.plan(PROMPT, signature, seed=1).skip_steps == 10


def test_a_seed_prefers_its_own_entry_among_candidates(make_cache, signature):
    cache = _cache(make_cache)
    _fill(cache, signature, seed=1)
    _fill(cache, signature, NEAR, seed=2)
    plan = cache.plan(NEAR, signature, seed=2)
    assert plan.hit and plan.source_seed == 2
    plan = cache.plan(NEAR, signature, seed=1)
    assert plan.hit and plan.source_seed == 1  # its own seed's entry of the other prompt


@pytest.mark.parametrize("value", [-0.1, 1.0, "half"])
def test_cross_seed_max_fraction_is_validated(make_cache, value):
    with pytest.raises(ConfigError, match="cross_seed_max_fraction"):
        make_cache(planner={"cross_seed_max_fraction": value})
