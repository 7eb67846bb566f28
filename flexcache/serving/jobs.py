"""The jobs of `flexcache serve` and the worker processes that run them (`serving.worker`).

Each worker is a process with its own pipeline and its own `FlexCache`: its
local tiers, then the shared Redis tier every worker points at (entries one
worker computes are hits for the others). The `JobManager` in the server
process assigns each job to one idle worker over that worker's own queue, so
it always knows which jobs a worker holds: when a worker dies, its job is run
again on another (once), or failed with a clear status; a replacement worker
is started in its slot. A worker that fails to start (its cache or pipeline
cannot be built, or it dies before it is ready) is not replaced: the failure
is logged with its traceback and named in `health()`, and once no worker is
alive because of such failures the manager is `fatal` (`flexcache serve`
exits non-zero). Workers send their cache's `stats()` and `health()` with
every result and every few seconds; ``/metrics`` and ``/healthz`` report them
per worker.
"""

from __future__ import annotations

import collections
import logging
import multiprocessing
import os
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from flexcache.serving.worker import WorkerConfig, worker_main

logger = logging.getLogger(__name__)

STATUSES = ("queued", "running", "done", "failed")
START_ERRORS_KEPT = 20  # start-up failures the server remembers (and names in /healthz)


@dataclass
class Job:
    id: str
    prompt: str
    seed: int
    steps: int
    tenant: str | None
    user: str | None
    status: str = "queued"
    worker: int | None = None
    attempts: int = 0
    error: str | None = None
    video: bytes | None = field(default=None, repr=False)
    media_type: str | None = None
    created: float = field(default_factory=time.time)
    finished: float | None = None
    any_seed: bool = False  # the server drew `seed` (the client gave none): any cached entry may serve the job

    def public(self) -> dict[str, Any]:
        """What a client sees: never whether it was a hit, K or the source."""
        return {"id": self.id, "status": self.status, "error": self.error, "media_type": self.media_type,
                "created": self.created, "finished": self.finished}


class NoWorkerError(RuntimeError):
    """No worker process is alive to take a job."""


@dataclass
class _Worker:
    index: int
    slot: int  # which of the `workers` places it fills (a replacement takes the slot, and its disk directory)
    process: Any
    tasks: Any
    ready: bool = False
    current: str | None = None
    retired: bool = False


class JobManager:
    """Jobs, the worker processes, and what goes between them. Thread-safe.

    Create it from the thread that will outlive the workers (the main thread):
    on Linux a worker is killed when the thread that started it ends.

    Args:
        config: how each worker is built.
        workers: how many worker processes.
        respawn: start a replacement when a worker that was ready dies.
        max_attempts: runs a job gets when workers die running it.
    """

    def __init__(self, config: WorkerConfig, workers: int = 2, *, respawn: bool = True, max_attempts: int = 2,
                 max_jobs: int = 10_000) -> None:
        self.config, self.respawn, self.max_attempts, self.max_jobs = config, respawn, max_attempts, max_jobs
        self._context = multiprocessing.get_context("spawn")
        self._results = self._context.Queue()
        self._lock = threading.RLock()
        self.jobs: collections.OrderedDict[str, Job] = collections.OrderedDict()
        self._pending: collections.deque[str] = collections.deque()
        self._workers: dict[int, _Worker] = {}
        self.worker_stats: dict[int, dict[str, Any]] = {}
        self.counters = {"submitted": 0, "retried": 0, "worker_deaths": 0, "start_failures": 0}
        # worker index -> why it could not start (the last START_ERRORS_KEPT)
        self.start_errors: collections.OrderedDict[int, str] = collections.OrderedDict()
        self.fatal_event = threading.Event()  # set once no worker is alive and none will start
        self._next_worker = 0
        self._stop = threading.Event()
        self._closing = False
        for slot in range(workers):
            self._start_worker(slot)
        self._threads = [threading.Thread(target=self._read_results, name="flexcache-serve-results", daemon=True),
                         threading.Thread(target=self._watch_workers, name="flexcache-serve-watch", daemon=True)]
        for thread in self._threads:
            thread.start()

    # -- workers ----------------------------------------------------------------------

    def _start_worker(self, slot: int) -> None:
        index = self._next_worker
        self._next_worker += 1
        tasks = self._context.Queue()
        process = self._context.Process(target=worker_main, args=(index, slot, self.config, tasks, self._results,
                                                                  os.getpid()),
                                        name=f"flexcache-worker-{index}", daemon=True)
        process.start()
        self._workers[index] = _Worker(index, slot, process, tasks)

    def alive_workers(self) -> list[int]:
        """Workers that run, starting ones included."""
        with self._lock:
            return [i for i, w in self._workers.items() if not w.retired and w.process.is_alive()]

    def ready_workers(self) -> list[int]:
        with self._lock:
            return [i for i, w in self._workers.items() if w.ready and not w.retired and w.process.is_alive()]

    def worker_pids(self) -> dict[int, int]:
        with self._lock:
            return {i: w.process.pid for i, w in self._workers.items() if not w.retired}

    def wait_ready(self, count: int | None = None, timeout: float = 300.0) -> bool:
        deadline = time.monotonic() + timeout
        wanted = len(self.alive_workers()) if count is None else count
        while time.monotonic() < deadline:
            if len(self.ready_workers()) >= wanted:
                return True
            if self.fatal_event.is_set():
                return False
            time.sleep(0.05)
        return False

    @property
    def fatal(self) -> str | None:
        """Why the server cannot serve (no worker alive, the last ones failed to start), or None."""
        if not self.fatal_event.is_set():
            return None
        with self._lock:
            causes = "; ".join(f"worker {index}: {error}" for index, error in sorted(self.start_errors.items()))
        return f"no worker could start ({causes})"

    def health(self) -> dict[str, Any]:
        """``{"status": "ok" | "degraded" | "no worker alive", "reasons": [...], "workers_alive", "workers_ready"}``.

        Degraded while a worker could not start, none is ready yet, or a ready
        worker's cache reports itself degraded (`FlexCache.health`: the shared
        tier, the event follower, the setting classifier, store callbacks).
        """
        with self._lock:
            alive, ready = self.alive_workers(), self.ready_workers()
            reasons = [f"worker {index} could not start: {error}" for index, error in sorted(self.start_errors.items())]
            if alive and not ready:
                reasons.append(f"no worker is ready yet ({len(alive)} starting)")
            for index in ready:
                health = (self.worker_stats.get(index) or {}).get("health")
                if health is None:
                    reasons.append(f"worker {index} has not reported its health yet")
                else:
                    reasons += [f"worker {index}: {reason}" for reason in health.get("reasons", ())]
        status = "no worker alive" if not alive else "degraded" if reasons else "ok"
        return {"status": status, "reasons": reasons, "workers_alive": len(alive), "workers_ready": len(ready)}

    def _start_failed(self, index: int, error: str) -> None:
        if index not in self.start_errors:
            self.counters["start_failures"] += 1
        self.start_errors[index] = error
        while len(self.start_errors) > START_ERRORS_KEPT:
            self.start_errors.popitem(last=False)

    def _watch_workers(self) -> None:
        while not self._stop.wait(0.2):
            with self._lock:
                if self._closing:
                    continue
                for worker in list(self._workers.values()):
                    if worker.retired or worker.process.is_alive():
                        continue
                    worker.retired = True
                    if not worker.ready:  # a start-up failure: a replacement would fail the same way
                        self._start_failed(worker.index, f"died while starting (exit code {worker.process.exitcode})")
                        continue
                    self.counters["worker_deaths"] += 1
                    logger.warning("flexcache serve: worker %d died (exit code %s)", worker.index,
                                   worker.process.exitcode)
                    if worker.current is not None:
                        self._requeue(worker.current, f"worker {worker.index} died running it")
                    if self.respawn:
                        self._start_worker(worker.slot)
                if not self.alive_workers():  # nothing will ever run what waits: fail it now
                    while self._pending:
                        self._fail(self._pending.popleft(), "no worker is alive to run it")
                    # Workers that failed to start are not replaced: nothing will come back.
                    if self.start_errors and (self.respawn or not any(w.ready for w in self._workers.values())):
                        self.fatal_event.set()
                self._dispatch()

    def _requeue(self, job_id: str, why: str) -> None:
        job = self.jobs.get(job_id)
        if job is None or job.status in ("done", "failed"):
            return
        if job.attempts >= self.max_attempts:
            self._fail(job_id, f"{why}; it was run {job.attempts} times and is not run again")
            return
        job.status, job.worker = "queued", None
        self.counters["retried"] += 1
        self._pending.appendleft(job_id)

    def _finish(self, job_id: str, result: dict) -> None:
        with self._lock:
            job = self.jobs.get(job_id)
            if job is not None and job.status != "done":
                self._finish_locked(job, result)

    @staticmethod
    def _finish_locked(job: "Job", result: dict) -> None:
        job.status, job.video, job.media_type = "done", result["video"], result["media_type"]
        job.error, job.finished = None, time.time()

    def _fail(self, job_id: str, why: str) -> None:
        job = self.jobs[job_id]
        job.status, job.error, job.finished = "failed", why, time.time()

    # -- jobs -------------------------------------------------------------------------

    def submit(self, prompt: str, *, seed: int | None, steps: int | None, tenant: str | None,
               user: str | None) -> Job:
        with self._lock:
            if not self.alive_workers():
                raise NoWorkerError("no worker process is alive")
            job = Job(secrets.token_hex(12), prompt, secrets.randbits(32) if seed is None else seed,
                      steps or self.config.steps, tenant, user, any_seed=seed is None)
            self.jobs[job.id] = job
            while len(self.jobs) > self.max_jobs:  # finished jobs are forgotten oldest first
                oldest = next(iter(self.jobs))
                if self.jobs[oldest].status not in ("done", "failed"):
                    break
                del self.jobs[oldest]
            self.counters["submitted"] += 1
            self._pending.append(job.id)
            self._dispatch()
            return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self.jobs.get(job_id)

    def status_counts(self) -> dict[str, int]:
        with self._lock:
            counts = dict.fromkeys(STATUSES, 0)
            for job in self.jobs.values():
                counts[job.status] += 1
            return counts

    def _dispatch(self) -> None:
        for index in self.ready_workers():
            worker = self._workers[index]
            if worker.current is not None or not self._pending:
                continue
            job = self.jobs[self._pending.popleft()]
            job.worker, worker.current = index, job.id
            job.attempts += 1
            worker.tasks.put({"id": job.id, "prompt": job.prompt, "seed": job.seed, "any_seed": job.any_seed,
                              "steps": job.steps, "tenant": job.tenant, "user": job.user})

    def _read_results(self) -> None:
        import queue

        while not self._stop.is_set():
            try:
                message = self._results.get(timeout=0.2)
            except queue.Empty:
                continue
            except (EOFError, OSError):
                return
            self._on_message(message)

    def _on_message(self, message: tuple) -> None:
        """One worker message: readiness, health, a job started, done or failed."""
        kind, index = message[0], message[1]
        with self._lock:
            worker = self._workers.get(index)
            if kind == "ready" and worker is not None:
                worker.ready = True
                self.worker_stats[index] = message[3]
            elif kind == "broken":
                logger.error("flexcache serve: worker %d could not start:\n%s", index, message[2])
                self._start_failed(index, message[3])
                if worker is not None:
                    worker.retired = True
                    worker.process.join(timeout=1)
            elif kind == "health":
                self.worker_stats[index] = message[2]
            elif kind == "started":
                job = self.jobs.get(message[2])
                if job is not None and job.status == "queued":
                    job.status = "running"
            elif kind in ("done", "failed"):
                job = self.jobs.get(message[2])
                if job is not None and job.status != "done":
                    if kind == "done":
                        hold = float(message[3].get("hold_s") or 0.0)
                        if hold > 0:  # latency padding: the answer waits, the worker takes its next job
                            timer = threading.Timer(hold, self._finish, (job.id, message[3]))
                            timer.daemon = True
                            timer.start()
                        else:
                            self._finish_locked(job, message[3])
                    else:
                        self._fail(job.id, message[3])
                self.worker_stats[index] = message[4]
                if worker is not None and worker.current == message[2]:
                    worker.current = None
            self._dispatch()

    def close(self) -> None:
        """Stop every worker (each finishes its job and closes its cache), then the manager's threads."""
        with self._lock:
            self._closing = True  # no replacement from here on
            workers = list(self._workers.values())
            for worker in workers:
                if worker.process.is_alive():
                    worker.tasks.put(None)
        for worker in workers:
            worker.process.join(timeout=10)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join(timeout=5)
        # Only now: a worker the watch thread started dies with that thread (Linux parent-death signal).
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
