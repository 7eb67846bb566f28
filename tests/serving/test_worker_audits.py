"""A `flexcache serve` worker's audits: which scorer it builds, and that audits run only while no job waits."""

from __future__ import annotations

import logging
import queue
import threading

import pytest
import torch

from flexcache.errors import ScorerError
from flexcache.serving.worker import TOYWORLD, audit_setup, next_job


def test_a_waiting_job_comes_before_any_audit():
    tasks = queue.Queue()
    tasks.put({"id": "a"})
    assert next_job(tasks, lambda: pytest.fail("an audit ran while a job waited")) == {"id": "a"}


def test_while_no_job_waits_audits_run_one_at_a_time_until_one_comes():
    tasks, ran = queue.Queue(), []

    def run_one_audit():
        ran.append(1)
        if len(ran) == 3:  # a job arrives during the third audit
            tasks.put({"id": "b"})
        return 1

    assert next_job(tasks, run_one_audit) == {"id": "b"} and len(ran) == 3


def test_with_no_audit_queued_the_worker_waits_for_its_next_job():
    tasks, drained, got = queue.Queue(), threading.Event(), []

    def run_one_audit():
        drained.set()
        return 0

    thread = threading.Thread(target=lambda: got.append(next_job(tasks, run_one_audit)))
    thread.start()
    assert drained.wait(60)
    tasks.put(None)  # the stop message
    thread.join(60)
    assert got == [None]


def test_the_toy_world_is_audited_with_its_reader_unless_the_config_names_another(make_cache):
    assert audit_setup(make_cache(), TOYWORLD) == (None, None)  # audit_rate 0: no audits
    scorer, to_video = audit_setup(make_cache(quality={"audit_rate": 0.1}), TOYWORLD)
    assert scorer.name == "toyworld"
    clip = torch.ones(1, 3, 8, 16, 16) * 2  # the model's clip, overshooting [-1, 1] as denoisers do
    video = to_video(type("Output", (), {"frames": clip})())
    assert video.shape == (1, 8, 3, 16, 16) and float(video.max()) == 1.0
    pytest.importorskip("torchmetrics")
    scorer, _ = audit_setup(make_cache(quality={"audit_rate": 0.1, "audit_scorer": "reference"}), TOYWORLD)
    assert scorer.name == "reference" and scorer.needs_reference


def test_another_model_without_a_scorer_is_not_audited_and_a_broken_chosen_scorer_stops_the_worker(
        make_cache, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="flexcache.serving.worker"):
        assert audit_setup(make_cache(quality={"audit_rate": 0.1}), "Wan-AI/Wan2.1-T2V-1.3B-Diffusers") == (None, None)
    assert "set quality.audit_scorer" in caplog.text
    with pytest.raises(ScorerError, match="CLIP"):
        audit_setup(make_cache(quality={"audit_rate": 0.1, "audit_scorer": "clip",
                                        "audit_scorer_model": str(tmp_path / "missing")}), TOYWORLD)


@pytest.mark.redis
@pytest.mark.slow
def test_a_serve_worker_audits_its_hits_between_jobs(redis_url, redis_prefix):
    from flexcache.serving import JobManager, WorkerConfig, worker_cache_config
    from tests.serving.waiting import wait

    base = {"embedder": {"device": "cpu"}, "index": {"device": "cpu"}, "name": "audited",
            "quality": {"audit_rate": 1.0}}
    cache = worker_cache_config(base, redis_url, memory_bytes=64 << 20, redis_bytes=256 << 20,
                                redis_prefix=redis_prefix)
    manager = JobManager(WorkerConfig(cache, steps=10, health_interval_s=0.5), workers=1)
    try:
        assert manager.wait_ready(1, timeout=240)
        prompt = "a red circle drifting left over a white plain background"
        for _ in range(2):  # a miss, then a hit of the same text
            job = manager.submit(prompt, seed=None, steps=None, tenant=None, user=None)
            wait(lambda: manager.get(job.id).status in ("done", "failed"), 240, "the job")
            assert manager.get(job.id).status == "done"

        def audits():
            (stats,) = [s for s in manager.worker_stats.values() if s]
            return stats["audits"]

        # The worker is idle now: it runs the queued audit, and its next report says so.
        wait(lambda: audits()["audits"] + audits()["failed"] >= 1, 240, "the audit")
        assert audits()["audits"] == 1 and audits()["failed"] == 0 and audits()["seconds"] > 0
    finally:
        manager.close()
