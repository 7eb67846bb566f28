"""The budget sweep, its plots, the quick preset and `--profile measure`."""

from __future__ import annotations

import json
import time

import pytest

from flexcache.benchmarks.serve.profiles import get_profile
from flexcache.benchmarks.serve.run import run_serve_bench
from flexcache.benchmarks.serve.simulate import MemoizedEmbedder
from flexcache.benchmarks.serve.workload import TraceRequest

PROMPTS = ["a red fox running through snow", "a sailboat on a calm lake at dawn",
           "a red fox running through deep snow", "a sailboat on a calm lake at sunrise"]
# Four topics, each asked again and again: no two near-duplicates under any embedder.
TOPICS = ["a red fox running through snow", "a sailboat on a calm lake at dawn",
          "a rocket lifting off from a launch pad at night", "a chef slicing onions in a busy kitchen"]
PNG = b"\x89PNG\r\n\x1a\n"


def test_the_memoized_embedder_returns_the_first_vectors_and_embeds_each_text_once(embedder):
    calls = []

    class Counting:
        dim = embedder.dim

        def embed(self, texts):
            calls.append(list(texts))
            return embedder.embed(texts)

    memo = MemoizedEmbedder(Counting())
    first = memo.embed(PROMPTS[:2])
    again = memo.embed([PROMPTS[1], PROMPTS[2], PROMPTS[1]])
    assert calls == [PROMPTS[:2], [PROMPTS[2]]]
    assert (again[0] == first[1]).all() and (again[2] == first[1]).all()
    assert memo.dim == embedder.dim


def test_a_small_budget_costs_nirvana_hits_that_compression_keeps(tmp_path):
    """At a budget that holds a few raw latents, NIRVANA evicts what flexcache still holds compressed."""
    profile = get_profile("ltx-video")
    trace = [TraceRequest(i * 3 * profile.seconds_full, "default", TOPICS[i % 4]) for i in range(16)]
    # Two raw checkpoints (of five per prompt), but every topic's compressed entries.
    budget = 2 * profile.latent_bytes + 1000
    result = run_serve_bench(trace, profile, systems=("nocache", "nirvana", "flexcache"), budget_bytes=budget,
                             sweep_bytes=(budget, 10**12), workers=1, progress=False)
    sweep = result["sweep"]
    assert [p["budget_bytes"] for p in sweep["nirvana"]] == [budget, 10**12]
    assert sweep["nocache"][0] | {"budget_bytes": 0} == sweep["nocache"][1] | {"budget_bytes": 0}
    assert sweep["nirvana"][0]["hit_rate"] < sweep["nirvana"][1]["hit_rate"]
    assert sweep["flexcache"][0]["hit_rate"] == sweep["flexcache"][1]["hit_rate"] > sweep["nirvana"][0]["hit_rate"]
    assert result["systems"]["nirvana"] == {k: v for k, v in sweep["nirvana"][0].items() if k != "budget_bytes"}

    from flexcache.benchmarks.serve.plots import write_sweep_plots

    paths = write_sweep_plots(result, tmp_path / "serve")
    assert [p.name for p in paths] == ["serve-throughput.png", "serve-hit-rate.png"]
    assert all(p.read_bytes().startswith(PNG) for p in paths)


@pytest.mark.slow
def test_the_quick_preset_writes_results_and_plots(tmp_path, capsys):
    """What CI runs of the serving benchmark: the `--quick` preset end to end (about a minute)."""
    from flexcache.cli import main

    out = tmp_path / "quick.json"
    assert main(["bench", "serve", "--quick", "--no-progress", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["settings"]["requests"] == 120 and len(result["sweep"]["flexcache"]) == 4
    assert result["systems"]["flexcache"]["hit_rate"] > 0
    assert (tmp_path / "quick-throughput.png").read_bytes().startswith(PNG)
    assert (tmp_path / "quick-hit-rate.png").read_bytes().startswith(PNG)
    assert "| 1 GB | 4 GB | 16 GB | 64 GB |" in capsys.readouterr().out


def test_measure_times_the_toy_world_pipeline():
    from flexcache.benchmarks.serve.profiles import measure_toyworld_profile
    from flexcache.toyworld.model import DEFAULT_STEPS

    started = time.perf_counter()
    profile = measure_toyworld_profile(repeats=1)
    took = time.perf_counter() - started
    assert profile.steps == DEFAULT_STEPS and profile.latent_shape == (3, 8, 16, 16)
    assert profile.latent_dtype == "float32" and profile.cfg_passes == 2
    # In seconds, whatever this machine's speed: a step it timed fits in the time the call took.
    assert 0 < profile.seconds_per_step <= took and 0 < profile.text_encoder_s <= took
    assert profile.seconds_full > profile.steps * profile.seconds_per_step
