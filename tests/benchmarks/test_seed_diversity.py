"""Seed diversity on the trained toy world: another seed served from the first seed's entry (CPU, small)."""

from __future__ import annotations

import pytest

from flexcache.benchmarks.seed_diversity import format_seed_diversity, seed_diversity


@pytest.fixture(scope="module")
def world():
    from flexcache.toyworld.model import PromptEncoder, toyworld_pipeline

    pipe = toyworld_pipeline()
    pipe.set_progress_bar_config(disable=True)
    return pipe, PromptEncoder()


def test_an_identical_prompt_served_from_another_seeds_entry_brings_back_that_seeds_video(world):
    pipe, encoder = world
    result = seed_diversity(pipe, encoder, pairs=3, skips=(0, 4, 8), steps=10, guidance=3.0)
    identical = result["cases"]["identical"]
    assert identical["0/10"] == 1.0
    # Euler is deterministic: the same prompt resumed from seed A's own x_K is seed A's video.
    assert identical["4/10"] < 0.05 and identical["8/10"] < 0.05
    assert result["uncached_distance"]["identical"] > 0.01  # two seeds do make two videos
    near = result["cases"]["near-duplicate"]
    assert near["8/10"] <= near["4/10"] + 0.05 < 1.0  # deeper keeps less of the other seed's variation
    assert "| identical |" in format_seed_diversity(result)
