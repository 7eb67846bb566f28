"""The serving benchmark takes prompts in any script: trace loading, the simulator and `bench serve`."""

from __future__ import annotations

import json

import pytest

from flexcache.benchmarks.serve.profiles import get_profile
from flexcache.benchmarks.serve.simulate import SYSTEMS, MemoizedEmbedder, simulate
from flexcache.benchmarks.serve.workload import InvalidTraceError, TraceRequest, read_trace, write_trace
from flexcache.engine.planner import checkpoint_steps

PROFILE = get_profile("wan2.1-1.3b-480p")
SIZES = {step: 100_000 + step for step in checkpoint_steps(PROFILE.steps, (0.1, 0.2, 0.3, 0.4, 0.5))}
SPACED = 10 * PROFILE.seconds_full  # each request finds the previous ones done
PROMPTS = [
    "一只熊猫在竹林里吃竹子，阳光透过树叶",
    "🐼🎋",
    "!!!",
    "Кошка спит на диване",
    "a panda 在竹林里 eating bamboo",
]


def test_a_trace_in_any_script_loads(tmp_path):
    path = tmp_path / "trace.jsonl"
    lines = [json.dumps({"t": float(i), "tenant": "default", "prompt": p}, ensure_ascii=False)
             for i, p in enumerate(PROMPTS)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert [r.prompt for r in read_trace(path)] == PROMPTS
    path.write_text(json.dumps({"t": 0, "tenant": "default", "prompt": " \u3000"}) + "\n", encoding="utf-8")
    with pytest.raises(InvalidTraceError, match="non-empty"):  # only an empty prompt is refused
        read_trace(path)


def test_the_simulator_serves_unsplittable_prompts_and_their_repeats_hit(embedder):
    # A repeat keeps its prompt's seed: an exact repeat then hits whatever the seed rules.
    trace = [TraceRequest(i * SPACED, "default", PROMPTS[i % len(PROMPTS)], seed=i % len(PROMPTS))
             for i in range(2 * len(PROMPTS))]
    result = simulate(trace, PROFILE, SYSTEMS["flexcache"], budget_bytes=10**9, workers=1, embedder=embedder,
                      entry_sizes=SIZES)
    assert result.hits == len(PROMPTS)  # every second sight resumes, no first sight does
    assert result.decoupled_hits == 0  # unsplittable prompts have no parts to hit through


def test_prefill_embeds_an_unsplittable_prompt_alone(embedder):
    memo = MemoizedEmbedder(embedder)
    memo.prefill(["一只熊猫在竹林里吃竹子", "a red fox in a snowy forest"])
    assert "一只熊猫在竹林里吃竹子" in memo._vectors
    assert {"red fox", "snowy forest"} <= set(memo._vectors)  # a splittable prompt still brings its parts
    assert len(memo._vectors) == 4


def test_bench_serve_runs_a_trace_with_a_chinese_prompt(tmp_path):
    from flexcache.cli import main

    trace = tmp_path / "trace.jsonl"
    write_trace(trace, [TraceRequest(i * 60.0, "default", PROMPTS[i % 2], seed=i % 2) for i in range(4)])
    out = tmp_path / "serve.json"
    assert main(["bench", "serve", "--trace", str(trace), "--profile", "ltx-video", "--systems",
                 "nocache,flexcache", "--workers", "1", "--no-progress", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["systems"]["flexcache"]["hit_rate"] > 0
