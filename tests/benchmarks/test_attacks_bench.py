"""The attack suite, small: each attack succeeds undefended and fails under the defaults (`bench attacks`)."""

from __future__ import annotations

import pytest

from flexcache.benchmarks.attacks import (
    TIMING_ATTACKS,
    format_attacks_table,
    run_attacks_bench,
)


@pytest.fixture(scope="module")
def engine_result():
    return run_attacks_bench(size="small", modes=("engine",), defences=("none", "min_askers", "depth_cap", "defaults"),
                             attacks=TIMING_ATTACKS)


@pytest.mark.parametrize("attack", TIMING_ATTACKS)
def test_each_attack_succeeds_undefended_and_fails_under_the_defaults_through_the_engine_api(engine_result, attack):
    summary = engine_result["attacks"][attack]
    assert summary["success_rate_undefended"] >= 0.5
    assert summary["success_rate_defended"] <= 0.05


def test_each_defence_alone_stops_what_it_is_for(engine_result):
    by_mode = {attack: engine_result["attacks"][attack]["by_mode"]["engine"] for attack in TIMING_ATTACKS}
    # corroboration (min_askers) defeats the read-side attacks; the depth cap defeats poisoning
    assert by_mode["prompt_stealing"]["min_askers"]["success_rate"] == 0
    assert by_mode["covert_channel"]["min_askers"]["success_rate"] == 0
    assert by_mode["poisoning"]["depth_cap"]["success_rate"] == 0
    assert by_mode["covert_channel"]["depth_cap"]["success_rate"] >= 0.5  # a shallow hit still signals
    assert "| poisoning |" in format_attacks_table(engine_result)


def test_the_summary_states_trials_and_an_upper_bound_on_defended_success(engine_result):
    for attack in TIMING_ATTACKS:
        summary = engine_result["attacks"][attack]
        defended = summary["by_mode"]["engine"]["defaults"]
        assert summary["trials_defended"] == defended["trials"] > 0
        # 0 successes in a few trials still leaves a bound well above 0
        assert summary["success_rate_defended"] <= summary["success_upper_95_defended"] <= 1.0
        assert summary["success_upper_95_defended"] > 0.05
    assert "95 % upper bound" in format_attacks_table(engine_result)


def test_poisoning_through_pipeline_calls_marks_victims_undefended_and_not_under_the_defaults():
    # Timing-read attacks through pipeline calls depend on this machine's clock and load: `bench attacks` runs them.
    result = run_attacks_bench(size="small", modes=("pipeline",), defences=("none", "defaults"), attacks=("poisoning",))
    rows = result["attacks"]["poisoning"]["by_mode"]["pipeline"]
    assert rows["none"]["success_rate"] >= 0.5
    assert rows["defaults"]["success_rate"] <= 0.05
