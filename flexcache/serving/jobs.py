"""The worker processes of `flexcache serve` and the jobs they run.

Each worker is a process with its own pipeline and its own `FlexCache`: a
local memory tier, then the shared Redis tier every worker points at (entries
one worker computes are hits for the others). The `JobManager` in the server
process assigns each job to one idle worker over that worker's own queue, so
it always knows which jobs a worker holds: when a worker dies, its job is run
again on another (once), or failed with a clear status; a replacement worker
is started. Workers send their cache's `stats()` with every result, which the
server's ``/metrics`` exports per worker.
"""

from __future__ import annotations

import collections
import io
import logging
import multiprocessing
import os
import secrets
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

TOYWORLD = "toyworld"
STATUSES = ("queued", "running", "done", "failed")


@dataclass
class WorkerConfig:
    """What every worker is built from."""

    cache: dict[str, Any]  # a CacheConfig as a dict (its Redis tier shared by all workers)
    model: str = TOYWORLD  # the toy world, or a diffusers model id (a GPU machine with its weights)
    steps: int = 20
    guidance: float = 3.0
    threads: int = 1


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

    def public(self) -> dict[str, Any]:
        """What a client sees: never whether it was a hit, K or the source."""
        return {"id": self.id, "status": self.status, "error": self.error, "media_type": self.media_type,
                "created": self.created, "finished": self.finished}


def clip_to_gif(clip, scale: int = 8) -> bytes:
    """A toy-world clip (3, frames, size, size) in [-1, 1] as an animated GIF."""
    import numpy as np
    from PIL import Image

    frames = ((clip.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 3, 0).cpu().numpy()
    images = [Image.fromarray(np.kron(frame, np.ones((scale, scale, 1), dtype=np.uint8))) for frame in frames]
    out = io.BytesIO()
    images[0].save(out, format="GIF", save_all=True, append_images=images[1:], duration=125, loop=0)
    return out.getvalue()


def _build_pipeline(config: WorkerConfig):
    """(pipeline, encode(prompt) -> call kwargs, to_video(output) -> (bytes, media type))."""
    import torch

    if config.model == TOYWORLD:
        from flexcache.toyworld.model import WEIGHTS, PromptEncoder, pipeline_kwargs, toyworld_pipeline

        pipe = toyworld_pipeline(WEIGHTS)
        encoder = PromptEncoder()

        def kwargs_for(prompt: str, steps: int) -> dict[str, Any]:
            return {"negative_prompt": "", **pipeline_kwargs(encoder([prompt]), steps=steps, guidance=config.guidance)}

        def to_video(output) -> tuple[bytes, str]:
            return clip_to_gif(output.frames[0]), "image/gif"
    else:  # a real model: weights from the Hugging Face cache or hub; needs its GPU
        from diffusers import DiffusionPipeline
        from diffusers.utils import export_to_video

        pipe = DiffusionPipeline.from_pretrained(config.model, torch_dtype=torch.bfloat16)
        pipe.to("cuda" if torch.cuda.is_available() else "cpu")

        def kwargs_for(prompt: str, steps: int) -> dict[str, Any]:
            return {"num_inference_steps": steps, "guidance_scale": config.guidance}

        def to_video(output) -> tuple[bytes, str]:
            import tempfile

            with tempfile.NamedTemporaryFile(suffix=".mp4") as f:
                export_to_video(output.frames[0], f.name, fps=16)
                return open(f.name, "rb").read(), "video/mp4"
    pipe.set_progress_bar_config(disable=True)
    return pipe, kwargs_for, to_video


def worker_main(worker: int, config: WorkerConfig, tasks, results) -> None:
    """One worker process: build the cache and pipeline, then run jobs until a None arrives."""
    import torch

    torch.set_num_threads(config.threads)
    try:
        from flexcache import CacheConfig, FlexCache
        from flexcache.integrations.diffusers import enable_flexcache, last_call_report

        cache = FlexCache(CacheConfig.from_dict(config.cache))
        pipe, kwargs_for, to_video = _build_pipeline(config)
        enable_flexcache(pipe, cache, model_id=config.model)
    except Exception:  # noqa: BLE001 - the manager reports it and starts no job here
        results.put(("broken", worker, traceback.format_exc()))
        return
    results.put(("ready", worker, os.getpid()))
    own_prompts: set[str] = set()
    remote_hits = 0
    while True:
        job = tasks.get()
        if job is None:
            break
        results.put(("started", worker, job["id"]))
        try:
            generator = torch.Generator().manual_seed(job["seed"])
            with torch.inference_mode():
                output = pipe(prompt=job["prompt"], generator=generator, flexcache_tenant=job["tenant"],
                              flexcache_user=job["user"], **kwargs_for(job["prompt"], job["steps"]))
            report = last_call_report(pipe)
            # A hit on an entry this worker did not insert came through the shared tier from another worker.
            remote_hits += bool(report.hit and report.source_prompt not in own_prompts)
            if report.inserted:
                own_prompts.add(job["prompt"])
            video, media_type = to_video(output)
            results.put(("done", worker, job["id"], {"video": video, "media_type": media_type},
                         {**cache.stats(), "cross_worker_hits": remote_hits}))
        except Exception as exc:  # noqa: BLE001 - a failed job is a result, not a crash
            results.put(("failed", worker, job["id"], f"{type(exc).__name__}: {exc}",
                         {**cache.stats(), "cross_worker_hits": remote_hits}))
    cache.close()


class NoWorkerError(RuntimeError):
    """No worker process is alive to take a job."""


@dataclass
class _Worker:
    index: int
    process: Any
    tasks: Any
    ready: bool = False
    current: str | None = None
    retired: bool = False


class JobManager:
    """Jobs, the worker processes, and what goes between them. Thread-safe.

    Args:
        config: how each worker is built.
        workers: how many worker processes.
        respawn: start a replacement when a worker dies.
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
        self.counters = {"submitted": 0, "retried": 0, "worker_deaths": 0}
        self._next_worker = 0
        self._stop = threading.Event()
        for _ in range(workers):
            self._start_worker()
        self._threads = [threading.Thread(target=self._read_results, name="flexcache-serve-results", daemon=True),
                         threading.Thread(target=self._watch_workers, name="flexcache-serve-watch", daemon=True)]
        for thread in self._threads:
            thread.start()

    # -- workers ----------------------------------------------------------------------

    def _start_worker(self) -> None:
        index = self._next_worker
        self._next_worker += 1
        tasks = self._context.Queue()
        process = self._context.Process(target=worker_main, args=(index, self.config, tasks, self._results),
                                        name=f"flexcache-worker-{index}", daemon=True)
        process.start()
        self._workers[index] = _Worker(index, process, tasks)

    def alive_workers(self) -> list[int]:
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
            time.sleep(0.05)
        return False

    def _watch_workers(self) -> None:
        while not self._stop.wait(0.2):
            with self._lock:
                for worker in list(self._workers.values()):
                    if worker.retired or worker.process.is_alive():
                        continue
                    worker.retired = True
                    self.counters["worker_deaths"] += 1
                    logger.warning("flexcache serve: worker %d died (exit code %s)", worker.index,
                                   worker.process.exitcode)
                    if worker.current is not None:
                        self._requeue(worker.current, f"worker {worker.index} died running it")
                    if self.respawn:
                        self._start_worker()
                if not self.alive_workers():  # nothing will ever run what waits: fail it now
                    while self._pending:
                        self._fail(self._pending.popleft(), "no worker is alive to run it")
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
                      steps or self.config.steps, tenant, user)
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
            worker.tasks.put({"id": job.id, "prompt": job.prompt, "seed": job.seed, "steps": job.steps,
                              "tenant": job.tenant, "user": job.user})

    def _read_results(self) -> None:
        import queue

        while not self._stop.is_set():
            try:
                message = self._results.get(timeout=0.2)
            except queue.Empty:
                continue
            except (EOFError, OSError):
                return
            kind, index = message[0], message[1]
            with self._lock:
                worker = self._workers.get(index)
                if kind == "ready" and worker is not None:
                    worker.ready = True
                elif kind == "broken":
                    logger.error("flexcache serve: worker %d could not start:\n%s", index, message[2])
                    if worker is not None:
                        worker.retired = True
                        worker.process.join(timeout=1)
                elif kind == "started":
                    job = self.jobs.get(message[2])
                    if job is not None and job.status == "queued":
                        job.status = "running"
                elif kind in ("done", "failed"):
                    job = self.jobs.get(message[2])
                    if job is not None and job.status != "done":
                        if kind == "done":
                            job.status, job.video, job.media_type = "done", message[3]["video"], message[3]["media_type"]
                            job.error, job.finished = None, time.time()
                        else:
                            self._fail(job.id, message[3])
                    self.worker_stats[index] = message[4]
                    if worker is not None and worker.current == message[2]:
                        worker.current = None
                self._dispatch()

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            workers = list(self._workers.values())
            for worker in workers:
                if worker.process.is_alive():
                    worker.tasks.put(None)
        for worker in workers:
            worker.process.join(timeout=10)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join(timeout=5)
        for thread in self._threads:
            thread.join(timeout=5)
