"""The stronger attacks of `bench attacks` (output readers with sybils, a text poisoner), small and seeded.

No assertion here reads a clock: the engine API reports the steps a request ran, and the attackers'
verdicts come from clips.
"""

from __future__ import annotations

import random

import pytest
import torch

from flexcache.benchmarks.attacks import (
    DEFENCES,
    OUTPUT_ATTACKS,
    UNDEFENDED,
    EngineService,
    PipelineService,
    Request,
    World,
    channel_row,
    lower_bound,
    run_attack,
    sybil_count,
    upper_bound,
)
from flexcache.benchmarks.attacks.output_attacks import (
    SAME_RUN_FRACTION,
    relative_distance,
)
from flexcache.core import SharingConfig
from flexcache.integrations.diffusers import last_call_report

SMALL = {"output_victims": 2, "output_candidates": 3, "output_bits": 6, "poison_targets": 2, "victims_per_target": 2,
         "seed_batch": 16, "seed_batches": 1}
# The defence meant to stop each attack on its own.
STOPPED_BY = {"prompt_stealing_output": "min_askers", "covert_channel_output": "min_askers",
              "text_poisoning": "containment_gate"}
TOY_PROMPT = "a red circle drifting left over a white plain background"


def undefended_but(**settings) -> SharingConfig:
    return SharingConfig.undefended(**settings)


@pytest.fixture(scope="module")
def world():
    return World()


@pytest.fixture(scope="module")
def rows(world):
    out = {}
    for attack in OUTPUT_ATTACKS:
        for defence in ("none", STOPPED_BY[attack]):
            service = EngineService(world, DEFENCES[defence], denoise=True)
            try:
                out[attack, defence] = run_attack(attack, service, world, random.Random(f"7-{attack}"), SMALL)
                out[attack, defence]["sharing"] = service.cache.stats()["sharing"]
            finally:
                service.close()
    return out


@pytest.mark.slow
@pytest.mark.parametrize("attack", OUTPUT_ATTACKS)
def test_each_new_attack_returns_well_formed_rows(rows, attack):
    for defence in ("none", STOPPED_BY[attack]):
        row = rows[attack, defence]
        assert row["trials"] > 0
        assert 0.0 <= row["success_rate"] <= row["success_upper_95"] <= 1.0
        if "successes" in row:
            assert row["success_rate"] == row["successes"] / row["trials"]
        else:  # a channel: its advantage
            assert row["success_rate"] == max(0.0, row["true_positive_rate"] - row["false_positive_rate"])


@pytest.mark.slow
@pytest.mark.parametrize("attack", OUTPUT_ATTACKS)
def test_each_new_attack_succeeds_undefended(rows, attack):
    assert rows[attack, "none"]["success_rate"] > 0  # not a strawman


@pytest.mark.slow
@pytest.mark.parametrize("attack", OUTPUT_ATTACKS)
def test_the_defence_meant_for_each_new_attack_does_not_help_it(rows, attack):
    assert rows[attack, STOPPED_BY[attack]]["success_rate"] <= rows[attack, "none"]["success_rate"]


@pytest.mark.slow
@pytest.mark.parametrize("attack", ["prompt_stealing_output", "covert_channel_output"])
def test_the_sybil_attackers_stay_within_what_corroboration_refuses(rows, attack):
    # min_askers - 1 identities: never served another user's entry on their own.
    assert rows[attack, "none"]["identities"] == sybil_count() == SharingConfig().min_askers - 1
    assert rows[attack, "min_askers"]["sharing"]["cross_user_hits"] == 0
    assert rows[attack, "min_askers"]["success_rate"] == 0


@pytest.mark.slow
def test_the_text_poisoner_changes_one_attribute_and_asks_with_its_sybils(rows):
    row = rows["text_poisoning", "none"]
    assert sum(row["attributes_changed"].values()) == row["targets"] == SMALL["poison_targets"]
    assert row["sybils"] == sybil_count()


@pytest.mark.parametrize("conditioning, depth", [(None, 10), ("a blue square drifting up", 2)])
def test_the_engine_service_marks_runs_of_its_own_encoding_text_conditioned(world, conditioning, depth):
    # Under the depth cap alone, only an entry whose content is not known to follow its text is capped.
    service = EngineService(world, undefended_but(cross_user_max_fraction=0.1), denoise=False)
    try:
        service.request(TOY_PROMPT, "writer", seed=1, conditioning=conditioning)
        steps, _ = service.request(TOY_PROMPT, "reader", seed=2)
    finally:
        service.close()
    assert steps == world.signature.num_steps - depth


@pytest.mark.parametrize("conditioning, depth", [(None, 10), ("a blue square drifting up", 2)])
def test_the_pipeline_service_marks_calls_with_its_own_embeddings_text_conditioned(world, conditioning, depth):
    service = PipelineService(world, undefended_but(cross_user_max_fraction=0.1))
    try:
        service.request(TOY_PROMPT, "writer", seed=1, conditioning=conditioning)
        service.request(TOY_PROMPT, "reader", seed=2)
        report = last_call_report(world.pipe)
    finally:
        service.close()
    assert report.hit and report.skip_steps == depth


@pytest.mark.parametrize("make", [lambda w: EngineService(w, UNDEFENDED, denoise=True),
                                  lambda w: PipelineService(w, UNDEFENDED)], ids=["engine", "pipeline"])
def test_concurrent_requests_are_all_planned_before_any_is_stored(world, make):
    service = make(world)
    try:
        # Concurrent: neither resumes from the other, so two seeds give two layouts.
        (_, first), (_, second) = service.requests([Request(TOY_PROMPT, "u1", 1), Request(TOY_PROMPT, "u2", 2)])
        apart = relative_distance(first, second)
        # One after the other: the second resumes from the first's entry (steps 10..20 from the same x_10).
        (_, third), = service.requests([Request(TOY_PROMPT, "u3", 3)])
        hits = service.cache.stats()["hits"]
    finally:
        service.close()
    assert hits == 1
    # The resumed run matches its source up to the codec's error; two seeds differ by far more.
    assert min(relative_distance(third, first), relative_distance(third, second)) < SAME_RUN_FRACTION * apart


def test_upper_bound_is_the_exact_one_sided_bound():
    assert upper_bound(0, 20) == pytest.approx(1 - 0.05 ** (1 / 20), abs=1e-9)  # closed form at 0 successes
    assert upper_bound(1, 10) == pytest.approx(0.3942, abs=1e-4)
    assert lower_bound(9, 10) == pytest.approx(1 - 0.3942, abs=1e-4)
    assert upper_bound(3, 3) == 1.0 and upper_bound(0, 0) == 1.0
    assert upper_bound(0, 100) < upper_bound(0, 20) < upper_bound(0, 5)


def test_channel_bound_covers_the_advantage():
    row = channel_row([1, 0] * 10, [1, 0] * 10)
    assert row["success_rate"] == 1.0 and row["success_upper_95"] == 1.0
    silent = channel_row([1, 0] * 10, [0, 0] * 10)
    assert silent["success_rate"] == 0.0 < silent["success_upper_95"] < 0.4


def test_relative_distance_is_zero_for_one_clip_only():
    clip = torch.linspace(-1, 1, 3 * 8 * 16 * 16).reshape(3, 8, 16, 16)
    assert relative_distance(clip, clip.clone()) == 0.0
    assert relative_distance(clip, -clip) == pytest.approx(2.0)


def test_bench_attacks_names_the_attacks_it_takes(capsys):
    from flexcache.cli import main

    assert main(["bench", "attacks", "--attacks", "prompt_stealing,mind_reading", "--size", "small"]) == 2
    assert "--attacks takes some of prompt_stealing" in capsys.readouterr().err
