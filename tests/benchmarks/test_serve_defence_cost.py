"""The price of the defences between users: flexcache beside flexcache-undefended, and latency padding."""

from __future__ import annotations

import dataclasses

import pytest

from flexcache.benchmarks.serve.profiles import get_profile
from flexcache.benchmarks.serve.simulate import (
    SYSTEMS,
    defence_cost,
    defence_costs,
    simulate,
    summarize,
    with_undefended,
)
from flexcache.benchmarks.serve.workload import TraceRequest
from flexcache.core import SharingConfig
from flexcache.engine.planner import checkpoint_steps

PROFILE = get_profile("wan2.1-1.3b-480p")
SIZES = {step: 100_000 + step for step in checkpoint_steps(PROFILE.steps, (0.1, 0.2, 0.3, 0.4, 0.5))}
PROMPT = "a red fox running through deep snow"
OTHER = "a chef flipping pancakes in a restaurant kitchen"
SPACED = 10 * PROFILE.seconds_full  # every earlier request is done by then


def test_any_flexcache_system_brings_flexcache_and_its_undefended_twin():
    assert with_undefended(["nocache", "nirvana"]) == ("nocache", "nirvana")
    assert with_undefended(["nocache", "flexcache"]) == ("nocache", "flexcache", "flexcache-undefended")
    assert with_undefended(["flexcache-no-policy"]) == ("flexcache", "flexcache-undefended", "flexcache-no-policy")
    assert with_undefended(["flexcache-undefended"]) == ("flexcache", "flexcache-undefended")
    assert with_undefended(["nocache+magcache", "flexcache+magcache", "flexcache-no-regions"]) == (
        "nocache+magcache", "flexcache+magcache", "flexcache-undefended+magcache",
        "flexcache", "flexcache-undefended", "flexcache-no-regions")


def test_the_ablations_keep_the_default_defences():
    ablations = [name for name in SYSTEMS if name.startswith("flexcache-no-")]
    assert ablations and all(SYSTEMS[name].sharing is None for name in ablations)
    assert SYSTEMS["flexcache"].sharing is None
    assert SYSTEMS["flexcache-undefended"].sharing == SharingConfig.undefended()


def test_defence_cost_is_one_minus_the_throughput_ratio_at_each_budget():
    def row(rph, hit_rate):
        return {"throughput_rph": rph, "hit_rate": hit_rate}

    rows = {
        2: {"nocache": row(50.0, 0.0), "flexcache": row(60.0, 0.2), "flexcache-undefended": row(80.0, 0.5),
            "flexcache+fbc": row(90.0, 0.2), "flexcache-undefended+fbc": row(120.0, 0.5),
            "flexcache+magcache": row(70.0, 0.1)},  # no undefended twin: no cost
        1: {"flexcache": row(40.0, 0.1), "flexcache-undefended": row(50.0, 0.25)},
    }
    costs = defence_costs(rows)
    assert set(costs) == {"flexcache", "flexcache+fbc"}
    assert [p["budget_bytes"] for p in costs["flexcache"]] == [1, 2]
    assert costs["flexcache"][0]["defence_cost"] == pytest.approx(0.2)
    assert costs["flexcache"][1] == {"budget_bytes": 2, "defence_cost": pytest.approx(0.25), "throughput_rph": 60.0,
                                     "undefended_throughput_rph": 80.0, "hit_rate": 0.2, "undefended_hit_rate": 0.5}
    assert costs["flexcache+fbc"][0]["defence_cost"] == pytest.approx(0.25)
    assert defence_cost(row(100.0, 0.5), row(100.0, 0.5))["defence_cost"] == 0.0


def _padding_spec(padding: bool):
    # Undefended but for the padding: the second user is served from the first one's entry at once.
    return dataclasses.replace(SYSTEMS["flexcache-undefended"],
                               sharing=SharingConfig.undefended(latency_padding=padding))


def _serve(trace, spec, embedder):
    return simulate(trace, PROFILE, spec, budget_bytes=10**9, workers=1, embedder=embedder, entry_sizes=SIZES)


def test_latency_padding_delays_cross_user_answers_but_frees_the_worker(embedder):
    trace = [
        TraceRequest(0.0, "default", PROMPT, user="alice"),
        TraceRequest(SPACED, "default", PROMPT, user="bob"),  # alice's entry: a cross-user hit
        TraceRequest(SPACED + 1.0, "default", OTHER, user="carol"),  # queued behind bob's compute only
        TraceRequest(3 * SPACED, "default", PROMPT, user="alice"),  # her own entry: never padded
    ]
    padded, unpadded = (_serve(trace, _padding_spec(padding), embedder) for padding in (True, False))
    assert padded.latency_padding and not unpadded.latency_padding
    for result in (padded, unpadded):
        assert (result.hits, result.cross_user_hits, result.own_hits) == (2, 1, 1)
    assert padded.padded_requests == 1 and unpadded.padded_requests == 0
    # bob is answered when a full run would have been; his compute, and so carol's wait, are unchanged.
    full_run = unpadded.latencies[0]
    assert unpadded.latencies[1] < full_run
    assert padded.latencies[1] == pytest.approx(full_run)
    assert padded.unpadded_latencies == unpadded.latencies
    assert padded.latencies[2:] == unpadded.latencies[2:]
    assert padded.gpu_seconds == unpadded.gpu_seconds and padded.makespan == unpadded.makespan

    rows = [summarize(result, workers=1, gpu_price_per_hour=3.0, storage_price_per_gb_month=0.11, offered_rph=1.0)
            for result in (padded, unpadded)]
    assert rows[0]["throughput_rph"] == rows[1]["throughput_rph"]
    assert rows[0]["cost_per_1k_videos"] == rows[1]["cost_per_1k_videos"]
    assert rows[0]["p50_latency_s"] > rows[1]["p50_latency_s"] == rows[0]["unpadded_p50_latency_s"]
    assert rows[0]["cross_user_hits"] == 1 and rows[0]["own_hits"] == 1
    assert rows[0]["sharing"]["cross_user_candidates"] >= 1  # the guard's counters, as the engine keeps them


def test_every_run_is_inserted_as_text_conditioned(embedder, monkeypatch):
    """The simulated service encodes each prompt itself: its entries are marked text-conditioned."""
    from flexcache import FlexCache

    real_insert = FlexCache.insert
    flags = []

    def insert(self, plan, latents, sigmas=None, masks=None, solver_states=None, text_conditioned=False):
        flags.append(text_conditioned)
        return real_insert(self, plan, latents, sigmas, masks, solver_states)

    monkeypatch.setattr(FlexCache, "insert", insert)
    trace = [TraceRequest(i * SPACED, "default", prompt) for i, prompt in enumerate((PROMPT, OTHER, PROMPT))]
    result = _serve(trace, SYSTEMS["flexcache"], embedder)
    # The two full runs; the hit, an exact repeat, resumed from the deepest checkpoint and passes none after it.
    assert result.hits == 1 and flags == [True, True]


def test_bench_serve_runs_the_undefended_twin_and_reports_the_defence_cost(tmp_path, capsys):
    import json

    from flexcache.benchmarks.serve.workload import write_trace
    from flexcache.cli import main

    trace = tmp_path / "trace.jsonl"
    users = ["ann", "ben", "cid", "dee", "eve", "fay"]
    write_trace(trace, [TraceRequest(i * 60.0, "default", (PROMPT, OTHER)[i % 2], user=users[i % len(users)])
                        for i in range(12)])
    out = tmp_path / "serve.json"
    assert main(["bench", "serve", "--trace", str(trace), "--profile", "ltx-video", "--systems",
                 "nocache,flexcache-no-regions", "--workers", "1", "--sweep-gb", "1", "--no-progress",
                 "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    systems = result["systems"]
    assert list(systems) == ["nocache", "flexcache", "flexcache-undefended", "flexcache-no-regions"]
    sweep = {name: {p["budget_bytes"]: p for p in points} for name, points in result["sweep"].items()}
    costs = result["defence_cost"]["flexcache"]
    assert [p["budget_bytes"] for p in costs] == [10**9, 16 * 10**9]
    for point in costs:
        budget = point["budget_bytes"]
        defended = sweep["flexcache"][budget] if budget in sweep["flexcache"] else systems["flexcache"]
        undefended = (sweep["flexcache-undefended"][budget] if budget in sweep["flexcache-undefended"]
                      else systems["flexcache-undefended"])
        assert point["defence_cost"] == pytest.approx(1 - defended["throughput_rph"] / undefended["throughput_rph"])
        assert (point["hit_rate"], point["undefended_hit_rate"]) == (defended["hit_rate"], undefended["hit_rate"])
    assert systems["flexcache-undefended"]["cross_user_hits"] > 0  # each prompt is asked by three users
    assert systems["flexcache"]["sharing"] is not None and systems["nocache"]["sharing"] is None
    printed = capsys.readouterr().out
    assert "Defence cost" in printed and "| flexcache | 16 |" in printed and "cross-user hits" in printed
