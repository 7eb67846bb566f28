"""`flexcache calibrate` on the toy world, small: the rules file, its fit, resuming, bad input."""

from __future__ import annotations

import json

import pytest

from flexcache import CacheConfig, FlexCache, GenerationSignature
from flexcache.errors import CalibrationError, RulesSignatureError
from flexcache.quality.calibrate import _fit_band, _inherit_and_make_monotone, calibrate, read_prompts, upper_bound
from flexcache.quality.pairs import Pair
from flexcache.quality.rules import load_rules, save_rules

# One anchor with a rewording, edits and the same setting: every band of the full rule gets pairs.
PROMPTS = [
    "a red circle moving left on a white plain background",
    "on a plain white background, a red circle slides left",
    "a red circle moving right on a white plain background",
    "a blue circle moving left on a white plain background",
    "a red square moving left on a white plain background",
    "a red circle moving left on a purple striped background",
    "a green triangle moving up on a gray checker background",
    "a green triangle moving down on a gray checker background",
]
SMALL = dict(steps=6, fractions=(0.34, 0.67), budget_runs=40, pairs_per_band=3, min_pairs=2, show_progress=False)


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    out = tmp_path_factory.mktemp("cal") / "rules.yaml"
    rules = calibrate("toyworld", PROMPTS, out=out, **SMALL)
    return out, rules


def test_a_calibration_writes_rules_bound_to_the_settings_it_ran(calibrated):
    out, rules = calibrated
    loaded = load_rules(out)
    assert loaded == rules
    assert rules.signature["num_steps"] == 6 and rules.signature["model_id"] == "flexcache/toyworld-wan-v2"
    assert rules.report["runs"] <= SMALL["budget_runs"]
    for table in (rules.similarity_table,):
        assert [row[0] for row in table] == sorted(row[0] for row in table)
        assert [row[1] for row in table] == sorted(row[1] for row in table)  # deeper only where more similar
    full = rules.report["rules"]["full"]
    assert full["bands"] and all(set(b["by_fraction"]) == {"0.34", "0.67"} for b in full["bands"])
    assert out.with_name("rules.yaml.progress.jsonl").exists()


def test_a_cache_serves_the_rules_to_their_signature(calibrated):
    out, rules = calibrated
    cache = FlexCache(CacheConfig.from_dict({"embedder": {"device": "cpu"}, "index": {"device": "cpu"},
                                             "planner": {"rules_file": str(out)}}))
    signature = GenerationSignature.from_dict(rules.signature)
    assert cache.planners.for_signature(signature).label == "rules file rules.yaml"
    cache.close()


def test_a_failing_scorer_names_the_pair_and_a_rerun_resumes(tmp_path):
    calls = {"n": 0}

    def flaky(video, prompt):
        calls["n"] += 1
        if calls["n"] == 6:
            raise RuntimeError("scorer model crashed")
        return 1.0

    out = tmp_path / "rules.yaml"
    with pytest.raises(CalibrationError, match="crashed") as caught:
        calibrate("toyworld", PROMPTS, scorer=flaky, out=out, **SMALL)
    assert "Progress so far is saved" in str(caught.value)
    saved = out.with_name("rules.yaml.progress.jsonl").read_text().splitlines()
    assert len(saved) > 2 and "header" in json.loads(saved[0])
    with out.with_name("rules.yaml.progress.jsonl").open("a") as handle:
        handle.write('{"key": "resumed|0|1|whole|0.34", "val')  # a line a crash cut short
    calls["n"] = 100  # no more failures
    rules = calibrate("toyworld", PROMPTS, scorer=flaky, out=out, **SMALL)
    assert rules.report["runs"] < rules.report["runs_planned"]  # saved runs were not run again


def test_too_few_prompts_say_what_the_budget_needs(tmp_path):
    with pytest.raises(CalibrationError, match="distinct prompts"):
        calibrate("toyworld", ["a red circle moving left on a white plain background"], **SMALL)
    unrelated = ["a red circle moving left on a white plain background", "a green triangle moving up on a gray checker background"]
    with pytest.raises(CalibrationError, match="--budget-runs"):
        calibrate("toyworld", unrelated, **{**SMALL, "min_pairs": 3})
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing here\n\n")
    assert read_prompts(empty) == []
    with pytest.raises(CalibrationError):
        calibrate("toyworld", empty, **SMALL)


def test_a_progress_file_of_another_calibration_is_refused(calibrated):
    out, _ = calibrated
    with pytest.raises(CalibrationError, match="another calibration"):
        calibrate("toyworld", PROMPTS, out=out, **{**SMALL, "steps": 7})
    # another budget or band size is the same calibration: its saved runs are reused, none is run again
    again = calibrate("toyworld", PROMPTS, out=out, **{**SMALL, "pairs_per_band": 2})
    assert again.report["runs"] <= 4  # at most the diversity runs at another seed, whose videos are not kept


def test_the_fit_keeps_depths_up_to_the_first_that_fails():
    pairs = [Pair(i, i + 10) for i in range(6)]
    measured = {"full": {i + 10: 1.0 for i in range(6)}, "spread": {}, "resumed": {}}
    for pair in pairs:
        measured["resumed"][(pair.source, pair.target, "whole", 0.2)] = {"score": 1.0}
        measured["resumed"][(pair.source, pair.target, "whole", 0.4)] = {"score": 0.8}  # drop 0.2
        measured["resumed"][(pair.source, pair.target, "whole", 0.6)] = {"score": 1.0}  # fine again: not kept
    row = _fit_band("full", 0, (0.8,), pairs, "whole", measured, fractions=(0.2, 0.4, 0.6), min_pairs=4,
                    tolerance=0.02, confidence=0.9, min_diversity=0.0, needs_reference=False)
    assert row["fitted"] == 0.2 and row["by_fraction"]["0.4"]["mean_drop"] == pytest.approx(0.2)
    few = _fit_band("full", 0, (0.8,), pairs[:3], "whole", measured, fractions=(0.2,), min_pairs=4,
                    tolerance=0.02, confidence=0.9, min_diversity=0.0, needs_reference=False)
    assert few["fitted"] == 0.0 and not few["enough_pairs"]


def test_a_diversity_floor_keeps_same_text_hits_shallow():
    pairs = [Pair(i, i) for i in range(4)]
    measured = {"full": {i: 1.0 for i in range(4)}, "spread": {(i, i): 10.0 for i in range(4)}, "resumed": {}}
    for i in range(4):
        measured["resumed"][(i, i, "whole", 0.2)] = {"score": 1.0, "to_source": 6.0}
        measured["resumed"][(i, i, "whole", 0.4)] = {"score": 1.0, "to_source": 1.0}
    kwargs = dict(fractions=(0.2, 0.4), min_pairs=4, tolerance=0.02, confidence=0.9, needs_reference=False)
    assert _fit_band("full", 0, (0.9999,), pairs, "whole", measured, min_diversity=0.0, **kwargs)["fitted"] == 0.4
    assert _fit_band("full", 0, (0.9999,), pairs, "whole", measured, min_diversity=0.5, **kwargs)["fitted"] == 0.2


def test_bands_inherit_from_below_and_never_exceed_a_band_above():
    bands = [{"fitted": 0.3, "enough_pairs": True, "inherited": False},
             {"fitted": 0.0, "enough_pairs": False, "inherited": False},
             {"fitted": 0.1, "enough_pairs": True, "inherited": False},
             {"fitted": 0.5, "enough_pairs": True, "inherited": False}]
    _inherit_and_make_monotone(bands)
    assert [b["fitted"] for b in bands] == [0.1, 0.1, 0.1, 0.5] and bands[1]["inherited"]


def test_the_upper_bound_covers_the_mean():
    drops = [0.0, 0.0, 0.2, 0.0, 0.1, 0.0]
    assert upper_bound(drops, 0.9) >= sum(drops) / len(drops)
    assert upper_bound([0.0, 0.0, 0.0], 0.9) == 0.0
    assert upper_bound([0.1], 0.9) == float("inf")


def test_held_out_pairs_are_judged_per_band_and_other_settings_are_refused(calibrated, tmp_path):
    from flexcache.quality.evaluate import evaluate_rules

    _, calibrated_rules = calibrated
    # rows of its own, whatever the small calibration fitted: evaluation is judged here, not the fit
    rules = calibrated_rules.replace(similarity_table=((0.7, 0.34), (0.9999, 0.67)),
                                     region_table=(("background", 0.7, 0.34),), region_method="restart")
    out = save_rules(rules, tmp_path / "rows.yaml")
    result = evaluate_rules(out, PROMPTS, pairs_per_band=2, show_progress=False)
    assert set(result["rules_eval"]) == {"full", "region_background"}
    assert set(result["rules_eval"]["full"]) == {"0.7+", "0.9999+"}
    for bands in result["rules_eval"].values():
        for row in bands.values():
            assert {"fraction", "adherence", "adherence_full_steps"} <= set(row)
    settings = {**rules.report["settings"], "settings": {**rules.report["settings"]["settings"], "steps": 7}}
    other = save_rules(rules.replace(report={**rules.report, "settings": settings}), tmp_path / "other.yaml")
    with pytest.raises(RulesSignatureError, match="7 steps"):
        evaluate_rules(other, PROMPTS, pairs_per_band=2, show_progress=False)
