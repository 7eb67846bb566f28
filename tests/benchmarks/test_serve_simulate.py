"""Simulated serving: the sanity cases of the serving benchmark."""

from __future__ import annotations

import pytest

from flexcache.benchmarks.serve.profiles import get_profile
from flexcache.benchmarks.serve.simulate import SYSTEMS, simulate, summarize
from flexcache.benchmarks.serve.sized import AccountedTier, SizedCodec
from flexcache.benchmarks.serve.workload import TraceRequest
from flexcache.engine.planner import checkpoint_steps

PROFILE = get_profile("wan2.1-1.3b-480p")
SIZES = {step: 100_000 + step for step in checkpoint_steps(PROFILE.steps, (0.1, 0.2, 0.3, 0.4, 0.5))}
UNRELATED = [
    "a golden retriever chasing a frisbee in a sunlit park",
    "macro shot of rain drops on a spider web",
    "an astronaut floating inside a space station",
    "stock market numbers scrolling on a screen",
    "a chef flipping pancakes in a restaurant kitchen",
    "a volcano erupting at night",
]
SPACED = 10 * PROFILE.seconds_full  # arrivals far enough apart that every request finds the previous ones done


def _run(trace, name, embedder, budget=10**9, workers=2):
    result = simulate(trace, PROFILE, SYSTEMS[name], budget_bytes=budget, workers=workers, embedder=embedder,
                      entry_sizes=SIZES)
    return summarize(result, workers=workers, gpu_price_per_hour=3.0, storage_price_per_gb_month=0.11,
                     offered_rph=1.0)


def test_a_zero_budget_makes_every_system_nocache(embedder):
    trace = [TraceRequest(i * 5.0, "default", UNRELATED[i % 2]) for i in range(8)]
    baseline = _run(trace, "nocache", embedder, budget=0)
    for name in SYSTEMS:
        assert _run(trace, name, embedder, budget=0) == baseline


def test_exact_repeats_resume_from_the_deepest_checkpoint(embedder):
    trace = [TraceRequest(i * SPACED, "default", UNRELATED[i % 3]) for i in range(9)]
    for name in ("nirvana", "flexcache"):
        row = _run(trace, name, embedder)
        assert row["hit_rate"] == pytest.approx(6 / 9)  # every repeat, never a first sight
        assert row["steps_saved_frac"] == pytest.approx(6 * max(SIZES) / (9 * PROFILE.steps))


def test_unrelated_prompts_serve_like_nocache(embedder):
    trace = [TraceRequest(i * SPACED, "default", prompt) for i, prompt in enumerate(UNRELATED)]
    baseline = _run(trace, "nocache", embedder)
    for name in ("nirvana", "flexcache", "flexcache-no-compression"):
        row = _run(trace, name, embedder)
        assert row["hit_rate"] == 0
        assert row["throughput_rph"] == pytest.approx(baseline["throughput_rph"], rel=1e-3)  # plan() overhead only
        assert row["throughput_rph"] < baseline["throughput_rph"]


def test_the_same_trace_gives_the_same_figures(embedder):
    trace = [TraceRequest(i * 30.0, "default", UNRELATED[i % 4]) for i in range(12)]
    assert _run(trace, "flexcache", embedder) == _run(trace, "flexcache", embedder)


def test_entries_are_accounted_at_their_size_but_not_held():
    tier = AccountedTier(10**9)
    codec = SizedCodec({5: 50_000})
    import torch

    blob = codec.encode(torch.zeros(2, 3), sigma=5.0)
    assert len(blob) == 50_000
    tier.put("k", blob)
    assert tier.bytes_used == 50_000 and len(tier.get("k")) == AccountedTier.KEEP
    assert torch.equal(codec.decode(tier.get("k")), torch.zeros(2, 3))
    assert tier.remove("k") and tier.bytes_used == 0


def test_bench_serve_replays_a_trace_and_writes_every_field(tmp_path, capsys):
    import json

    from flexcache.benchmarks.serve.workload import write_trace
    from flexcache.cli import main

    trace = tmp_path / "trace.jsonl"
    write_trace(trace, [TraceRequest(i * 60.0, "default", UNRELATED[i % 3]) for i in range(9)])
    out = tmp_path / "serve.json"
    assert main(["bench", "serve", "--trace", str(trace), "--profile", "ltx-video", "--systems",
                 "nocache,nirvana,flexcache", "--workers", "1", "--no-progress", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result["systems"]) == {"nocache", "nirvana", "flexcache", "flexcache-undefended"}
    for row in result["systems"].values():
        for key in ("throughput_rph", "p50_latency_s", "p95_latency_s", "hit_rate", "steps_saved_frac",
                    "cost_per_1k_videos", "bytes_stored"):
            assert key in row
    assert result["systems"]["flexcache"]["hit_rate"] > 0
    assert "flexcache_vs_nirvana" in result["ratios"] and "| flexcache |" in capsys.readouterr().out
    assert main(["bench", "serve", "--systems", "nocache,magic"]) == 2


def _run_variant(trace, name, embedder, budget=10**9, workers=2):
    from flexcache.benchmarks.serve.simulate import parse_system

    spec, method = parse_system(name)
    return simulate(trace, PROFILE, spec, budget_bytes=budget, workers=workers, embedder=embedder,
                    entry_sizes=SIZES, in_request=method, name=name)


def test_an_in_request_method_scales_each_step_full_and_resumed(embedder):
    from flexcache.benchmarks.serve.in_request import get_method

    trace = [TraceRequest(i * SPACED, "default", UNRELATED[i % 3]) for i in range(9)]
    plain = _run_variant(trace, "flexcache", embedder)
    with_method = _run_variant(trace, "flexcache+magcache", embedder)
    assert with_method.name == "flexcache+magcache" and with_method.hits == plain.hits == 6
    full, source = get_method("magcache").step_fraction(PROFILE.name, resumed=False)
    resumed, _ = get_method("magcache").step_fraction(PROFILE.name, resumed=True)
    assert full == pytest.approx(1 / 2.68) and "Wan2.1" in source  # the public figure for Wan2.1
    assert resumed == pytest.approx(full * 0.36 / 0.40)  # the toy world's change on resumed runs
    steps_full = 3 * PROFILE.steps
    steps_resumed = plain.steps_total - plain.steps_saved - steps_full
    overhead = plain.gpu_seconds - (plain.steps_total - plain.steps_saved) * PROFILE.seconds_per_step
    expected = (steps_full * full + steps_resumed * resumed) * PROFILE.seconds_per_step + overhead
    assert with_method.gpu_seconds == pytest.approx(expected, rel=1e-9)


def test_variants_are_compared_like_for_like():
    from flexcache.benchmarks.serve.simulate import flexcache_ratios

    rows = {name: {"throughput_rph": rph, "cost_per_1k_videos": 1.0 / rph}
            for name, rph in (("nocache", 1.0), ("nirvana", 1.2), ("flexcache", 1.5), ("nocache+fbc", 2.0),
                              ("nirvana+fbc", 2.4), ("flexcache+fbc", 3.0))}
    ratios = flexcache_ratios(rows)
    assert ratios["flexcache+fbc_vs_nirvana+fbc"]["throughput"] == pytest.approx(1.25)
    assert ratios["flexcache+fbc_vs_nocache+fbc"]["throughput"] == pytest.approx(1.5)
    assert ratios["flexcache+fbc_vs_nocache"]["throughput"] == pytest.approx(3.0)
    assert ratios["flexcache_vs_nirvana"]["throughput"] == pytest.approx(1.25)


def test_an_unknown_system_or_method_names_the_choices():
    from flexcache.benchmarks.serve.simulate import parse_system
    from flexcache.core import ConfigError

    with pytest.raises(ConfigError, match="choose from nocache"):
        parse_system("lmcache+fbc")
    with pytest.raises(ConfigError, match="fbc, magcache, taylorseer"):
        parse_system("flexcache+teacache")


def test_the_report_says_which_methods_keep_the_adherence_floor():
    from flexcache.benchmarks.serve.in_request import get_method
    from flexcache.benchmarks.serve.run import format_serve_table

    records = {f"flexcache+{name}": get_method(name).describe(PROFILE.name) for name in ("fbc", "magcache")}
    assert records["flexcache+fbc"]["meets_adherence_floor"] is True
    assert records["flexcache+magcache"]["meets_adherence_floor"] is False  # 96.6 % on the toy world
    assert "setting 0.5" in records["flexcache+magcache"]["resumed_run"][1]
    result = {"workload": {"requests": 1, "unique_prompts": 1, "near_duplicate_share": 0.0,
                           "near_duplicate_threshold": 0.9},
              "systems": {}, "ratios": {}, "in_request": records}
    table = format_serve_table(result)
    assert "- magcache (setting 0.5)" in table and "BELOW the 98 % floor" in table
    assert "- fbc (setting 0.2)" in table and "96.6%" not in table.split("- magcache")[0]


def test_a_request_with_an_earlier_ones_setting_is_a_region_hit():
    """The simulated pipelines run region hits, as Wan behind enable_flexcache does (plan(regions=True))."""
    from flexcache.core import EmbedderConfig
    from flexcache.engine import build_embedder

    embedder = build_embedder(EmbedderConfig(device="cpu"))  # the default one, whose tables the systems carry
    trace = [TraceRequest(0.0, "default", "a golden retriever chasing a frisbee in a sunlit park"),
             TraceRequest(SPACED, "default", "a child flying a red kite in a sunlit park")]
    row = _run(trace, "flexcache-undefended", embedder)
    assert row["region_hits"] == 1 and row["hit_rate"] == pytest.approx(1 / 2)
    assert _run(trace, "flexcache-no-regions", embedder)["region_hits"] == 0


def test_audits_charge_a_full_run_per_sampled_hit_without_delaying_its_answer(embedder):
    trace = [TraceRequest(i * SPACED, "default", UNRELATED[0]) for i in range(4)]  # a miss, then three hits

    def run(rate):
        result = simulate(trace, PROFILE, SYSTEMS["flexcache"], budget_bytes=10**9, workers=1, embedder=embedder,
                          entry_sizes=SIZES, audit_rate=rate)
        return result, summarize(result, workers=1, gpu_price_per_hour=3.0, storage_price_per_gb_month=0.11,
                                 offered_rph=1.0)

    plain, plain_row = run(0.0)
    audited, audited_row = run(1.0)
    assert plain.hits == audited.hits == 3 and plain_row["audit_runs"] == 0
    assert audited_row["audit_runs"] == 3
    full = PROFILE.steps * PROFILE.seconds_per_step + PROFILE.text_encoder_s + PROFILE.vae_decode_s
    assert audited.audit_seconds == pytest.approx(3 * full)
    assert audited.gpu_seconds == pytest.approx(plain.gpu_seconds + 3 * full)
    assert audited.latencies == pytest.approx(plain.latencies)  # spaced arrivals: answers are not delayed
    assert audited_row["throughput_rph"] < plain_row["throughput_rph"]
