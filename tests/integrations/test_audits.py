"""Audits through pipeline calls on the toy world: queued, run uncached later, never the call's problem."""

from __future__ import annotations

import torch

from flexcache import enable_flexcache, last_call_report, run_pending_audits
from flexcache.toyworld.model import MODEL_ID, PromptEncoder, pipeline_kwargs, toyworld_pipeline

PROMPT = "a red circle moving left on a white plain background"
AUDITS = {"audit_rate": 1.0, "audit_min_audits": 2, "audit_window": 2}


def serve(make_cache, scorer, quality=AUDITS):
    cache = make_cache(planner={"lookup": "full", "similarity_table": [[0.9, 0.4]]}, quality=quality)
    pipe = toyworld_pipeline()
    pipe.set_progress_bar_config(disable=True)
    enable_flexcache(pipe, cache, model_id=MODEL_ID, audit_scorer=scorer, audit_video=lambda out: out.frames)
    kwargs = pipeline_kwargs(PromptEncoder()([PROMPT]), steps=10)
    outputs = []
    for _ in range(3):  # a miss, then two hits of rule full@0.9
        outputs.append(pipe(prompt=PROMPT, generator=torch.Generator().manual_seed(5), **kwargs).frames)
    return cache, pipe, outputs


def test_a_rule_whose_hits_score_worse_steps_down_after_its_audits(make_cache):
    scores = iter([1.0, 0.0] * 10)  # each audit scores the uncached run first, then the served one
    cache, pipe, _ = serve(make_cache, lambda video, prompt: next(scores))
    assert last_call_report(pipe).rule == "full@0.9"
    assert run_pending_audits(pipe) == 2
    assert cache.planners.configured.caps() == {"full@0.9": 0.3}
    audits = cache.stats()["audits"]
    assert audits["audits"] == 2 and audits["step_downs"] == 1 and audits["seconds"] > 0
    pipe(prompt=PROMPT, generator=torch.Generator().manual_seed(5),
         **pipeline_kwargs(PromptEncoder()([PROMPT]), steps=10))
    assert last_call_report(pipe).skip_steps == 3  # now 30 % of 10 steps


def test_the_uncached_run_starts_from_the_noise_a_miss_would_have_used(make_cache):
    seen = []

    def scorer(video, prompt):
        seen.append(video.clone())
        return 1.0

    _, pipe, outputs = serve(make_cache, scorer, {**AUDITS, "audit_min_audits": 2})
    run_pending_audits(pipe, limit=1)
    uncached, served = seen
    assert torch.allclose(uncached, outputs[0], atol=1e-4)  # the first call was that miss
    assert torch.allclose(served, outputs[1])


def test_a_failing_scorer_never_fails_the_call_and_keeps_the_depth(make_cache):
    def broken(video, prompt):
        raise RuntimeError("scorer down")

    cache, pipe, outputs = serve(make_cache, broken)
    assert len(outputs) == 3 and last_call_report(pipe).hit
    assert run_pending_audits(pipe) == 2
    assert cache.stats()["audits"]["failed"] == 2 and not cache.planners.configured.caps()


def test_nothing_is_queued_at_rate_zero_or_without_a_scorer(make_cache):
    cache, pipe, _ = serve(make_cache, lambda video, prompt: 1.0, {"audit_rate": 0.0})
    assert run_pending_audits(pipe) == 0 and cache.stats()["audits"]["sampled"] == 0
    plain = toyworld_pipeline()
    assert run_pending_audits(plain) == 0
