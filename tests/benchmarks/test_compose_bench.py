"""`flexcache bench compose` on one toy-world pair: evaluations are counted, and FlexCache adds to a method's savings."""

from __future__ import annotations

import importlib.util

import pytest

from flexcache.benchmarks import compose_bench
from flexcache.benchmarks.compose_bench import format_compose_table, run_compose_bench, summarize


CACHE_DIT = importlib.util.find_spec("cache_dit") is not None


@pytest.fixture(scope="module")
def result():
    settings = {"none": (0.0,), "fbc": (0.2,), "cachedit": (0.4,)}
    original = compose_bench.SETTINGS
    compose_bench.SETTINGS = settings
    methods = ("none", "fbc", "cachedit") if CACHE_DIT else ("none", "fbc")
    try:
        return run_compose_bench(pairs=1, steps=10, methods=methods, cases=("identical",))
    finally:
        compose_bench.SETTINGS = original


def test_block_evaluations_are_counted_per_request(result):
    rows = {(r["method"], r["mode"]): r for r in result["rows"]}
    uncached = rows["none", "alone"]
    # 4 blocks x 10 steps x 2 passes (classifier-free guidance): every block runs when nothing is cached.
    assert uncached["block_evaluations"] == 80 and uncached["attention_evaluations"] == 80
    assert rows["none", "fresh-prompt miss"]["block_evaluations"] == 80  # a miss runs every step
    hit = rows["none", "with flexcache"]
    assert hit["steps_skipped"] > 0 and hit["block_evaluations"] == 8 * (10 - hit["steps_skipped"])
    assert rows["fbc", "alone"]["block_evaluations"] < 80  # FirstBlockCache skipped some blocks


def test_the_composition_never_evaluates_more_than_flexcache_alone(result):
    points = {(p["method"], p["mode"]): p for p in result["summary"]["points"]}
    assert points["fbc", "alone"]["block_evaluations_saved"] > 0
    composed = points["fbc", "with flexcache"]
    assert composed["block_evaluations_saved"] >= points["none", "with flexcache"]["block_evaluations_saved"]
    assert 0 < composed["block_fraction_per_step_run"] <= 1
    assert "| fbc | 0.2 | with flexcache |" in format_compose_table(result)


@pytest.mark.skipif(not CACHE_DIT, reason="cache-dit is not installed (the cache-dit extra)")
def test_cache_dit_is_counted_alone_and_with_flexcache(result):
    rows = {(r["method"], r["mode"]): r for r in result["rows"]}
    none_hit = rows["none", "with flexcache"]
    assert rows["cachedit", "alone"]["block_evaluations"] < 80  # DBCache reused the residual at some steps
    composed = rows["cachedit", "with flexcache"]
    assert composed["steps_skipped"] == none_hit["steps_skipped"] > 0
    assert composed["block_evaluations"] < none_hit["block_evaluations"]  # and on the resumed run too


def test_an_operating_point_needs_the_adherence_floor():
    rows = [{"method": "none", "setting": 0.0, "case": "c", "mode": "alone", "block_evaluations": 100.0,
             "attention_evaluations": 100.0, "adherence": 1.0, "steps_skipped": 0.0},
            {"method": "x", "setting": 1.0, "case": "c", "mode": "alone", "block_evaluations": 50.0,
             "attention_evaluations": 50.0, "adherence": 0.99, "steps_skipped": 0.0},
            {"method": "x", "setting": 2.0, "case": "c", "mode": "alone", "block_evaluations": 20.0,
             "attention_evaluations": 20.0, "adherence": 0.9, "steps_skipped": 0.0}]
    best = summarize(rows, 10)["operating_points"]["x alone"]
    assert best["setting"] == 1.0 and best["block_evaluations_saved"] == pytest.approx(0.5)
