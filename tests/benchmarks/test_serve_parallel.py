"""The simulator at service scale: jobs in forked workers, prefilled splits and gate words, same figures."""

from __future__ import annotations

import pytest
import torch

from flexcache.benchmarks.serve import run as run_module
from flexcache.benchmarks.serve.parallel import beside, can_fork, run_jobs
from flexcache.benchmarks.serve.profiles import get_profile
from flexcache.benchmarks.serve.simulate import SYSTEMS, MemoizedEmbedder, gate_words, simulate
from flexcache.benchmarks.serve.workload import TraceRequest
from flexcache.engine.containment import content_words
from flexcache.engine.planner import checkpoint_steps

PROFILE = get_profile("wan2.1-1.3b-480p")
SIZES = {step: 100_000 + step for step in checkpoint_steps(PROFILE.steps, (0.1, 0.2, 0.3, 0.4, 0.5))}
PROMPTS = [
    "a red fox running through snow in a pine forest",
    "a red fox running through deep snow in a pine forest, golden hour",
    "a sailboat on a calm lake at dawn",
    "the the sailboat on a calm lake at dawn",  # a split the engine normalises once more: left to plan
    "一只熊猫在竹林里吃竹子",
    "a chef slicing onions in a busy kitchen",
    "a chef slicing red onions in a busy kitchen, 4k",
]
needs_fork = pytest.mark.skipif(not can_fork(), reason="workers are forked (Linux)")


def _trace(count: int = 28) -> list[TraceRequest]:
    # Two users, arrivals close enough that hits wait for their sources: every kind of plan, cross-user ones too.
    return [TraceRequest(i * 40.0, "default", PROMPTS[(3 * i) % len(PROMPTS)], user=f"u{i % 2}")
            for i in range(count)]


@needs_fork
def test_jobs_in_workers_give_each_result_in_order_and_count_every_request():
    offset = 10  # a closure: jobs are never pickled

    def job(value):
        def run(tick):
            for _ in range(value):
                tick()
            return value + offset
        return run

    served = []
    results = run_jobs([job(3), job(1), job(5)], processes=2, weights=[1, 3, 2], on_progress=served.append)
    assert results == [13, 11, 15]
    assert sum(served) == 9
    assert run_jobs([job(2)], processes=1) == [12]
    assert beside(lambda a, b: a * b + offset, 2, b=3).result() == 16


def test_prefilled_splits_and_gate_words_leave_every_figure_as_it_was(embedder):
    """Plans handed the prefill's splits, and a gate reading prefilled words, decide as plans that split alone."""
    trace = _trace()
    memo = MemoizedEmbedder(embedder)
    memo.prefill([r.prompt for r in trace], words=True)
    assert memo.parts_of(PROMPTS[0]) is not None
    assert memo.parts_of("一只熊猫在竹林里吃竹子") is None  # unsplittable: plan finds that out itself
    assert memo.parts_of("a prompt never prefilled") is None
    for name in ("flexcache", "flexcache-undefended", "nirvana"):
        plain = simulate(trace, PROFILE, SYSTEMS[name], budget_bytes=10**9, workers=2, embedder=embedder,
                         entry_sizes=SIZES)
        memoized = simulate(trace, PROFILE, SYSTEMS[name], budget_bytes=10**9, workers=2, embedder=memo,
                            entry_sizes=SIZES)
        assert memoized == plain
        assert plain.hits > 0


@needs_fork
def test_a_prefill_shared_among_workers_gives_every_vector_a_prefill_here_gives(embedder):
    prompts = [r.prompt for r in _trace()]
    here, shared = MemoizedEmbedder(embedder), MemoizedEmbedder(embedder)
    here.prefill(prompts, batch_size=4, words=True)
    shared.prefill(prompts, batch_size=4, words=True, processes=2)  # batches of 4: many jobs
    assert list(shared._vectors) == list(here._vectors)
    assert all(torch.equal(shared._vectors[text], vector) for text, vector in here._vectors.items())
    assert {"fox", "onions"} <= set(here._vectors)  # the gate's words came too


def test_gate_words_hold_every_word_the_containment_gate_reads():
    texts = PROMPTS + ["猫がソファで寝ている", "Кошка спит на диване", "Ein Hund läuft über die Straße", "🐼!!!"]
    for text in texts:
        assert set(content_words(text)) <= set(gate_words(text))


@needs_fork
def test_the_bench_gives_the_same_json_on_one_process_and_on_two(embedder, monkeypatch):
    monkeypatch.setattr(run_module, "measure_entry_sizes", lambda *args, **kwargs: SIZES)
    monkeypatch.setattr(run_module, "build_embedder", lambda config: embedder)
    results = []
    for processes in (1, 2):
        monkeypatch.setattr(run_module, "default_processes", lambda: processes)
        result = run_module.run_serve_bench(_trace(), PROFILE, systems=("nocache", "nirvana", "flexcache"),
                                            budget_bytes=10**9, workers=2, progress=False)
        results.append({k: v for k, v in result.items() if k not in ("wall_seconds", "machine")})
    assert results[0] == results[1]
    assert results[0]["systems"]["flexcache"]["hit_rate"] > 0
