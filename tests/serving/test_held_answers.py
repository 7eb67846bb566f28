"""Latency padding in `flexcache serve`: the manager holds a padded answer; the worker is free at once."""

from __future__ import annotations

import flexcache.serving.jobs as jobs
from flexcache.serving import JobManager, WorkerConfig
from flexcache.serving.jobs import Job


class _Timers:
    """Stands in for threading.Timer: records what would run when, runs it on demand."""

    def __init__(self):
        self.pending = []

    def __call__(self, delay, function, args=()):
        timers = self

        class Timer:
            daemon = False

            def start(self):
                timers.pending.append((delay, function, args))

        return Timer()


def test_a_padded_answer_is_held_by_the_manager_not_the_worker(monkeypatch):
    manager = JobManager(WorkerConfig({"embedder": {"device": "cpu"}}, steps=10), workers=0)
    timers = _Timers()
    monkeypatch.setattr(jobs.threading, "Timer", timers)
    try:
        held, plain = Job("held", "a cat", 1, 10, None, None), Job("plain", "a dog", 2, 10, None, None)
        for job in (held, plain):
            job.status = "running"
            manager.jobs[job.id] = job
        video = {"video": b"gif", "media_type": "image/gif"}
        manager._on_message(("done", 0, "held", {**video, "hold_s": 4.5}, {"worker": 0}))
        manager._on_message(("done", 0, "plain", {**video, "hold_s": 0.0}, {"worker": 0}))
        assert manager.get("plain").status == "done"
        assert manager.get("held").status == "running"  # answered no sooner than a full run would be
        [(delay, finish, args)] = timers.pending
        assert delay == 4.5
        finish(*args)
        assert manager.get("held").status == "done" and manager.get("held").video == b"gif"
    finally:
        manager.close()
