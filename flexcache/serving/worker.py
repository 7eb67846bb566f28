"""One worker process of `flexcache serve`: its pipeline, its `FlexCache`, its jobs.

A worker builds its cache and pipeline, says ``ready`` (or ``broken``, with the
traceback, when either fails), then runs the jobs its queue brings until a
None arrives. Each result carries the cache's `stats()` and `health()`; a
heartbeat thread sends them every `health_interval_s` as well, so the server
knows a worker's health between jobs.

A worker dies with the server: on Linux the kernel kills it when its parent
dies (``PR_SET_PDEATHSIG``), and everywhere the heartbeat thread exits the
process once its parent is gone (a worker on a GPU would otherwise keep its
memory).
"""

from __future__ import annotations

import io
import logging
import os
import signal
import threading
import traceback
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

TOYWORLD = "toyworld"
WATCHDOG_S = 0.5  # how often a worker checks that its parent still lives


@dataclass
class WorkerConfig:
    """What every worker is built from."""

    cache: dict[str, Any]  # a CacheConfig as a dict (its Redis tier shared by all workers; `worker_cache_config`)
    model: str = TOYWORLD  # the toy world, or a diffusers model id (a GPU machine with its weights)
    steps: int = 20
    guidance: float = 3.0
    threads: int = 1
    health_interval_s: float = 2.0  # how often an idle or busy worker reports its cache's stats and health


def worker_store(cache: dict[str, Any], slot: int) -> dict[str, Any]:
    """`cache` with each disk tier in its own subdirectory ``worker-<slot>`` of the configured path.

    A disk directory belongs to one process; a replacement worker takes the
    slot, and the directory, of the one it replaces.

    Example:
        >>> worker_store({"store": {"tiers": [{"kind": "disk", "capacity_bytes": 8, "path": "/ssd/fc"}]}}, 1)
        {'store': {'tiers': [{'kind': 'disk', 'capacity_bytes': 8, 'path': '/ssd/fc/worker-1'}]}}
    """
    store = cache.get("store") or {}
    tiers = [{**tier, "path": os.path.join(tier["path"], f"worker-{slot}")} if tier.get("kind") == "disk" else tier
             for tier in store.get("tiers") or ()]
    return {**cache, "store": {**store, "tiers": tiers}}


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


def audit_setup(cache, model: str) -> tuple[Any, Any]:
    """(scorer, output reader) the worker audits with (``quality``), or (None, None) when it does not audit.

    The scorer is ``quality.audit_scorer``, else the one every rules file names, else ``toyworld``
    for the toy world; another model with neither is not audited (a warning says so).

    Raises:
        ConfigError: ``quality.audit_scorer`` names a scorer that cannot be built here.
    """
    quality = cache.config.quality
    if quality.audit_rate <= 0:
        return None, None
    name = quality.audit_scorer
    if name is None:
        named = {p.rules.scorer for p in cache.planners.planners() if p.rules is not None}
        name = named.pop() if len(named) == 1 else ("toyworld" if model == TOYWORLD and not named else None)
        if name is None:
            logger.warning("flexcache serve: quality.audit_rate is %g but no scorer is set (rules files name %s): "
                           "set quality.audit_scorer; no hit is audited", quality.audit_rate, sorted(named) or "none")
            return None, None
    import torch

    from flexcache.quality.scorers import build_scorer, from_toyworld

    try:
        scorer = build_scorer(name, model_path=quality.audit_scorer_model if name == "clip" else None,
                              device="cuda" if torch.cuda.is_available() and name != "toyworld" else "cpu")
    except Exception as exc:
        if quality.audit_scorer is not None:  # the operator's own choice: the worker does not start without it
            raise
        logger.warning("flexcache serve: the rules files' scorer %r cannot be built here (%s: %s); no hit is "
                       "audited: set quality.audit_scorer", name, type(exc).__name__, exc)
        return None, None
    # The toy world's output is its clip (B, 3, F, H, W) in [-1, 1]; a diffusers model's frames are read as they are.
    to_video = (lambda output: from_toyworld(output.frames.clamp(-1, 1))) if model == TOYWORLD else None
    return scorer, to_video


def next_job(tasks, run_one_audit) -> Any:
    """The next job from `tasks`; while none waits, queued audits run one at a time (they yield to any job).

    Args:
        tasks: the worker's queue.
        run_one_audit: runs at most one queued audit; returns how many ran (0: none was queued).
    """
    import queue

    while True:
        try:
            return tasks.get_nowait()
        except queue.Empty:
            pass
        if not run_one_audit():
            return tasks.get()  # audits are queued only by this worker's jobs: nothing to do until one comes


class _Heartbeat:
    """The worker's watchdog and reporter: exits the process when the parent is gone; sends the
    cache's stats and health every `interval` seconds once the cache exists."""

    def __init__(self, worker: int, parent_pid: int, results, interval: float) -> None:
        self.worker, self.parent_pid, self.results, self.interval = worker, parent_pid, results, interval
        self.cache = None
        self.remote_hits = 0
        self._stop = threading.Event()
        self._sending = threading.Lock()  # snapshots go out in the order they were taken: stats never go back
        self._thread = threading.Thread(target=self._run, name="flexcache-worker-heartbeat", daemon=True)
        self._thread.start()

    def send(self, *message: Any) -> None:
        """Put `message` with the cache's stats and health (and the cross-worker hits) appended."""
        with self._sending:
            snapshot = {**self.cache.stats(), "health": self.cache.health(), "cross_worker_hits": self.remote_hits}
            self.results.put((*message, snapshot))

    def _run(self) -> None:
        waited = 0.0
        while not self._stop.wait(WATCHDOG_S):
            if os.getppid() != self.parent_pid:  # reparented: the server is gone, and so is this worker
                os._exit(1)
            waited += WATCHDOG_S
            if self.cache is None or waited < self.interval:
                continue
            waited = 0.0
            try:
                self.send("health", self.worker)
            except Exception:  # noqa: BLE001 - a report that failed is sent again next time
                logger.debug("flexcache serve: worker %d could not report its health", self.worker, exc_info=True)

    def stop(self) -> None:
        self._stop.set()


def worker_main(worker: int, slot: int, config: WorkerConfig, tasks, results, parent_pid: int) -> None:
    """One worker process: build the cache and pipeline, then run jobs until a None arrives."""
    from flexcache.benchmarks.serve.live import parent_death_signal

    parent_death_signal()(signal.SIGKILL)  # Linux: the kernel kills this worker when the server dies
    if os.getppid() != parent_pid:  # the server died before that was set
        return
    heartbeat = _Heartbeat(worker, parent_pid, results, config.health_interval_s)
    import torch

    torch.set_num_threads(config.threads)
    try:
        from flexcache import CacheConfig, FlexCache
        from flexcache.integrations.diffusers import enable_flexcache, last_call_report, run_pending_audits

        cache = FlexCache(CacheConfig.from_dict(worker_store(config.cache, slot)))
        pipe, kwargs_for, to_video = _build_pipeline(config)
        audit_scorer, audit_video = audit_setup(cache, config.model)
        # Latency padding holds the answer in the manager, not this worker: its GPU takes the next job.
        enable_flexcache(pipe, cache, model_id=config.model, pad_in_call=False, audit_scorer=audit_scorer,
                         audit_video=audit_video)
    except Exception as exc:  # noqa: BLE001 - the manager reports it and starts no job here
        results.put(("broken", worker, traceback.format_exc(), f"{type(exc).__name__}: {exc}"))
        return
    heartbeat.cache = cache
    heartbeat.send("ready", worker, os.getpid())
    own_prompts: set[str] = set()
    while True:
        job = next_job(tasks, lambda: run_pending_audits(pipe, limit=1))  # audits when idle
        if job is None:
            break
        results.put(("started", worker, job["id"]))
        try:
            generator = torch.Generator().manual_seed(job["seed"])
            with torch.inference_mode():
                # A seed the client gave is honoured (only its entries serve it fully); one the server drew is not
                # the client's choice, so any entry may serve the job.
                output = pipe(prompt=job["prompt"], generator=generator, flexcache_tenant=job["tenant"],
                              flexcache_user=job["user"], flexcache_any_seed=job["any_seed"],
                              **kwargs_for(job["prompt"], job["steps"]))
            report = last_call_report(pipe)
            # A hit on an entry this worker did not insert came through the shared tier from another worker.
            heartbeat.remote_hits += bool(report.hit and report.source_prompt not in own_prompts)
            if report.inserted:
                own_prompts.add(job["prompt"])
            video, media_type = to_video(output)
            heartbeat.send("done", worker, job["id"], {"video": video, "media_type": media_type,
                                                       "hold_s": report.padded_seconds})
        except Exception as exc:  # noqa: BLE001 - a failed job is a result, not a crash
            heartbeat.send("failed", worker, job["id"], f"{type(exc).__name__}: {exc}")
    heartbeat.stop()
    cache.close()
