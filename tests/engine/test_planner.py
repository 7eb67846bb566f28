"""Tests for flexcache.engine.planner: similarity -> skip depth, checkpoints, Plan."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from flexcache.config import (
    DEFAULT_CHECKPOINT_FRACTIONS,
    NIRVANA_SIMILARITY_TABLE,
    TOYWORLD_SIMILARITY_TABLE,
    USE_SIMILARITY_TABLE,
    PlannerConfig,
)
from flexcache.engine.planner import Plan, SimilarityPlanner, checkpoint_steps

# similarity -> expected skip steps for N=50 and N=20 under the NIRVANA table.
NIRVANA_CASES = [
    (-1.0, 0.0, 0, 0),
    (0.0, 0.0, 0, 0),
    (0.5, 0.0, 0, 0),
    (0.6499, 0.0, 0, 0),
    (0.65, 0.10, 5, 2),
    (0.70, 0.10, 5, 2),
    (0.7499, 0.10, 5, 2),
    (0.75, 0.20, 10, 4),
    (0.80, 0.20, 10, 4),
    (0.85, 0.30, 15, 6),
    (0.8999, 0.30, 15, 6),
    (0.90, 0.40, 20, 8),
    (0.93, 0.40, 20, 8),
    (0.95, 0.50, 25, 10),
    (0.99, 0.50, 25, 10),
    (1.0, 0.50, 25, 10),
]


@pytest.mark.parametrize(("similarity", "fraction", "steps50", "steps20"), NIRVANA_CASES)
def test_nirvana_table(similarity, fraction, steps50, steps20):
    planner = SimilarityPlanner(PlannerConfig(similarity_table="nirvana"))
    assert planner.config.similarity_table == NIRVANA_SIMILARITY_TABLE
    assert planner.skip_fraction(similarity) == fraction
    assert planner.skip_steps(similarity, 50) == steps50
    assert planner.skip_steps(similarity, 20) == steps20


def test_skip_steps_is_monotonic_in_similarity():
    planner = SimilarityPlanner()
    sims = [i / 200 for i in range(-200, 201)]
    for n in (2, 3, 10, 20, 50, 100):
        steps = [planner.skip_steps(s, n) for s in sims]
        assert steps == sorted(steps)
        assert all(0 <= s <= n - 1 for s in steps)


@pytest.mark.parametrize("n", [2, 3, 4, 7])
def test_hit_skips_at_least_one_and_never_all_steps(n):
    planner = SimilarityPlanner(PlannerConfig(similarity_table="nirvana"))
    for similarity in (0.65, 0.75, 0.85, 0.9, 0.95, 1.0):
        steps = planner.skip_steps(similarity, n)
        assert 1 <= steps <= n - 1
    assert planner.skip_steps(0.64, n) == 0
    assert planner.skip_steps(1.0, 2) == 1


def test_custom_table_from_planner_config():
    config = PlannerConfig(similarity_table=((0.5, 0.25), (0.8, 0.6)), checkpoint_fractions=(0.25, 0.6))
    planner = SimilarityPlanner(config)
    assert planner.config is config
    assert planner.skip_steps(0.49, 40) == 0
    assert planner.skip_steps(0.5, 40) == 10
    assert planner.skip_steps(0.79, 40) == 10
    assert planner.skip_steps(0.8, 40) == 24
    assert planner.skip_steps(1.0, 40) == 24
    # a threshold of 0.65 means nothing here: the NIRVANA table is not consulted
    assert planner.skip_fraction(0.65) == 0.25
    assert planner.checkpoint_steps(40) == (10, 24)


def test_custom_single_row_table():
    planner = SimilarityPlanner(PlannerConfig(similarity_table=((-1.0, 0.3),)))
    assert planner.skip_steps(-1.0, 10) == 3
    assert planner.skip_steps(0.2, 10) == 3


# -- checkpoint steps --------------------------------------------------------------


def test_checkpoint_steps_default_n50():
    assert checkpoint_steps(50, DEFAULT_CHECKPOINT_FRACTIONS) == (5, 10, 15, 20, 25)
    assert SimilarityPlanner().checkpoint_steps(50) == (5, 10, 15, 20, 25)


def test_checkpoint_steps_default_n20():
    assert SimilarityPlanner().checkpoint_steps(20) == (2, 4, 6, 8, 10)


def test_checkpoint_steps_match_skip_steps_for_default_tables():
    # With the default config every K a hit may resume from is a stored checkpoint.
    for table in ("toyworld", "nirvana"):
        planner = SimilarityPlanner(PlannerConfig(similarity_table=table))
        for n in (10, 20, 30, 50, 100):
            checkpoints = set(planner.checkpoint_steps(n))
            for threshold, _ in planner.config.similarity_table:
                assert planner.skip_steps(threshold, n) in checkpoints
            for _, _, fraction in planner.config.region_table:
                assert min(n - 1, max(1, round(fraction * n))) in checkpoints


def test_the_default_full_prompt_table_is_the_toy_world_calibration():
    planner = SimilarityPlanner(PlannerConfig(similarity_table="toyworld"))  # MiniLM's cosines
    assert planner.config.similarity_table == TOYWORLD_SIMILARITY_TABLE
    assert planner.skip_steps(0.85, 20) == 0  # NIRVANA would skip 6 here
    assert planner.skip_steps(0.89, 20) == 4
    assert planner.skip_steps(1.0, 20) == 10
    default = SimilarityPlanner()  # the default (multilingual) embedder's calibration of the same rule
    assert default.config.similarity_table == USE_SIMILARITY_TABLE
    assert default.skip_steps(0.86, 20) == 0 and default.skip_steps(0.87, 20) == 4


@pytest.mark.parametrize("n", [2, 3, 4, 5, 6, 7, 9, 11])
def test_checkpoint_steps_tiny_n_stay_in_range_and_unique(n):
    steps = checkpoint_steps(n, DEFAULT_CHECKPOINT_FRACTIONS)
    assert len(steps) >= 1
    assert all(1 <= s <= n - 1 for s in steps)
    assert len(set(steps)) == len(steps)
    assert list(steps) == sorted(steps)


def test_checkpoint_steps_tiny_exact_values():
    assert checkpoint_steps(2, DEFAULT_CHECKPOINT_FRACTIONS) == (1,)
    assert checkpoint_steps(3, DEFAULT_CHECKPOINT_FRACTIONS) == (1, 2)
    assert checkpoint_steps(10, DEFAULT_CHECKPOINT_FRACTIONS) == (1, 2, 3, 4, 5)


def test_checkpoint_steps_clamps_high_fractions():
    assert checkpoint_steps(4, (0.1, 0.9, 0.99)) == (1, 3)
    assert checkpoint_steps(100, (0.25, 0.5, 0.75)) == (25, 50, 75)


# -- Plan --------------------------------------------------------------------------


def _hit_plan(signature) -> Plan:
    return Plan(
        prompt="a cat surfing a wave", tenant="t1", signature=signature, hit=True, skip_steps=8,
        similarity=0.93, source_record=42, source_prompt="a cat surfing", seed=1234,
        checkpoint_steps=(2, 4, 6, 8, 10), embedding=torch.ones(4),
    )


def test_plan_as_miss_clears_hit_fields(signature):
    plan = _hit_plan(signature)
    miss = plan.as_miss()
    assert miss.hit is False
    assert miss.skip_steps == 0
    assert miss.source_record is None
    assert miss.source_prompt is None
    # request fields are kept so the full run can still fill the cache
    assert miss.prompt == plan.prompt
    assert miss.tenant == plan.tenant
    assert miss.signature == plan.signature
    assert miss.seed == 1234
    assert miss.checkpoint_steps == (2, 4, 6, 8, 10)
    assert miss.similarity == 0.93
    assert miss.embedding is plan.embedding
    assert miss.num_steps == signature.num_steps == 20


def test_plan_as_miss_leaves_original_untouched(signature):
    plan = _hit_plan(signature)
    plan.as_miss()
    assert plan.hit is True
    assert plan.skip_steps == 8
    assert plan.source_record == 42
    assert plan.source_prompt == "a cat surfing"
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.hit = False  # type: ignore[misc]


def test_plan_equality_ignores_embedding(signature):
    a = _hit_plan(signature)
    b = dataclasses.replace(a, embedding=torch.zeros(4))
    assert a == b
    assert a.as_miss() != a
