"""Audits through pipeline calls on the toy world: queued, run uncached later, never the call's problem."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
import torch

from flexcache import enable_flexcache, last_call_report, run_pending_audits
from flexcache.config import QualityConfig
from flexcache.integrations.audits import AuditQueue, UnreadableOutput, default_video
from flexcache.quality.audits import Auditor
from flexcache.toyworld.model import MODEL_ID, PromptEncoder, pipeline_kwargs, toyworld_pipeline

PROMPT = "a red circle moving left on a white plain background"
AUDITS = {"audit_rate": 1.0, "audit_min_audits": 2, "audit_window": 2}


@pytest.fixture(scope="module")
def toy():
    """One toy-world pipeline and its call arguments for the module (each test enables its own cache)."""
    pipe = toyworld_pipeline()
    pipe.set_progress_bar_config(disable=True)
    return pipe, pipeline_kwargs(PromptEncoder()([PROMPT]), steps=10)


def serve(make_cache, toy, scorer, quality=AUDITS, seeds=(5, 5, 5), any_seed=False, audit_video=None, **extra):
    cache = make_cache(planner={"lookup": "full", "similarity_table": [[0.9, 0.4]]}, quality=quality)
    pipe, kwargs = toy
    enable_flexcache(pipe, cache, model_id=MODEL_ID, audit_scorer=scorer,
                     audit_video=audit_video or (lambda out: out.frames))
    outputs = []
    for seed in seeds:  # a miss, then hits of rule full@0.9
        outputs.append(pipe(prompt=PROMPT, generator=torch.Generator().manual_seed(seed), flexcache_any_seed=any_seed,
                            **kwargs, **extra).frames)
    return cache, pipe, outputs


def test_a_rule_whose_hits_score_worse_steps_down_after_its_audits(make_cache, toy):
    scores = iter([1.0, 0.0] * 10)  # each audit scores the uncached run first, then the served one
    cache, pipe, _ = serve(make_cache, toy, lambda video, prompt: next(scores))
    assert last_call_report(pipe).rule == "full@0.9"
    assert run_pending_audits(pipe) == 2
    assert cache.planners.configured.caps() == {"full@0.9": 0.3}
    audits = cache.stats()["audits"]
    assert audits["audits"] == 2 and audits["step_downs"] == 1 and audits["seconds"] > 0
    pipe(prompt=PROMPT, generator=torch.Generator().manual_seed(5), **toy[1])
    assert last_call_report(pipe).skip_steps == 3  # now 30 % of 10 steps


def test_audits_queued_before_a_step_down_do_not_step_the_rule_down_again(make_cache, toy):
    # Four hits wait; the first two step the rule down; the other two measured the old depth.
    scores = iter([1.0, 0.0] * 10)
    cache, pipe, _ = serve(make_cache, toy, lambda video, prompt: next(scores), seeds=(5,) * 5)
    assert run_pending_audits(pipe) == 4
    audits = cache.stats()["audits"]
    assert audits["step_downs"] == 1 and audits["stale"] == 2 and audits["audits"] == 2
    assert cache.planners.configured.caps() == {"full@0.9": 0.3}


def test_the_uncached_run_starts_from_the_noise_of_the_hits_source(make_cache, toy):
    seen = []

    def scorer(video, prompt):
        seen.append(video.clone())
        return 1.0

    # The miss draws seed 5; the hit asks with seed 6 and resumes from seed 5's entry (any seed may serve).
    _, pipe, outputs = serve(make_cache, toy, scorer, seeds=(5, 6), any_seed=True)
    assert last_call_report(pipe).hit
    run_pending_audits(pipe, limit=1)
    uncached, served = seen
    assert torch.allclose(uncached, outputs[0], atol=1e-4)  # the source's full run: the pair calibration measures
    assert torch.allclose(served, outputs[1])


def test_the_audit_run_neither_calls_the_callers_callback_nor_draws_from_its_generator(make_cache, toy):
    steps_seen = []

    def on_step_end(pipe, index, timestep, callback_kwargs):
        steps_seen.append(index)
        return callback_kwargs

    cache, pipe, _ = serve(make_cache, toy, lambda video, prompt: 1.0, seeds=(5, 5), callback_on_step_end=on_step_end)
    called = len(steps_seen)
    assert called > 0
    assert run_pending_audits(pipe) == 1 and cache.stats()["audits"]["audits"] == 1
    assert len(steps_seen) == called
    assert last_call_report(pipe).hit  # the audit's run is not this thread's last call


def test_a_failing_scorer_never_fails_the_call_and_keeps_the_depth(make_cache, toy):
    def broken(video, prompt):
        raise RuntimeError("scorer down")

    cache, pipe, outputs = serve(make_cache, toy, broken)
    assert len(outputs) == 3 and last_call_report(pipe).hit
    assert run_pending_audits(pipe) == 2
    assert cache.stats()["audits"]["failed"] == 2 and not cache.planners.configured.caps()


def test_an_output_the_reader_cannot_read_is_skipped_before_the_uncached_run(make_cache, toy):
    cache, pipe, _ = serve(make_cache, toy, lambda video, prompt: 1.0, audit_video=lambda out: default_video(out.frames[0]))
    assert run_pending_audits(pipe) == 2
    audits = cache.stats()["audits"]
    assert audits["skipped"] == {"unreadable_output": 2} and audits["seconds"] == 0 and audits["failed"] == 0
    with pytest.raises(UnreadableOutput, match="audit_video"):
        default_video(SimpleNamespace(frames=[["a PIL image"]]))
    assert default_video(SimpleNamespace(frames=torch.zeros(1, 2, 4, 4, 3).numpy())).shape == (1, 2, 3, 4, 4)


def test_nothing_is_queued_at_rate_zero_or_without_a_scorer(make_cache, toy, caplog):
    cache, pipe, _ = serve(make_cache, toy, lambda video, prompt: 1.0, {"audit_rate": 0.0})
    assert run_pending_audits(pipe) == 0 and cache.stats()["audits"]["sampled"] == 0
    with caplog.at_level(logging.WARNING, logger="flexcache.audits"):
        cache, pipe, _ = serve(make_cache, toy, None)
    assert run_pending_audits(pipe) == 0 and cache.stats()["audits"]["sampled"] == 0
    assert "no audit_scorer" in caplog.text


def test_a_rules_file_measured_with_another_scorer_is_not_audited_in_its_units():
    plan = SimpleNamespace(hit=True, rules="rules file wan.yaml", rule="full@0.9")
    calibrated = SimpleNamespace(rules=SimpleNamespace(scorer="clip", tolerance=0.01))

    def queue(quality, scorer_name="toyworld"):
        auditor = Auditor(QualityConfig(audit_rate=1.0, **quality))
        cache = SimpleNamespace(auditor=auditor, planners=SimpleNamespace(find=lambda label: calibrated))
        scorer = SimpleNamespace(name=scorer_name, score=None)
        return AuditQueue(cache, scorer), auditor

    mismatched, auditor = queue({})
    assert mismatched._tolerance(plan) is None and auditor.stats()["skipped"] == {"scorer_mismatch": 1}
    assert queue({}, "clip")[0]._tolerance(plan) == 0.01  # the file's own scorer: its tolerance
    assert queue({"audit_tolerance": 0.05})[0]._tolerance(plan) == 0.05  # the operator states the units


def test_a_full_queue_drops_its_oldest_audit(make_cache, toy):
    seen = []

    def scorer(video, prompt):
        seen.append(video.clone())
        return 1.0

    cache, pipe, outputs = serve(make_cache, toy, scorer, {**AUDITS, "audit_queue": 1}, seeds=(5, 6, 7),
                                 any_seed=True)
    assert run_pending_audits(pipe) == 1
    assert cache.stats()["audits"]["dropped"] == 1
    assert torch.allclose(seen[1], outputs[2])  # the newest hit was audited
