"""Live serving: N real worker processes run the toy-world pipeline and share one Redis tier.

This is the fleet test of `flexcache bench serve --live`. Each worker is a
process with its own `FlexCache` (a local memory tier, then the shared Redis
tier, both of the system's byte budget) and its own toy-world `WanPipeline`;
entries a worker inserts reach Redis by write-behind and the other workers by
the cache's event stream, so a worker can resume from a latent that another
one computed. When Redis goes away the workers keep serving from their local
tiers (the Redis tier's circuit breaker turns its errors into misses).

Requests are handed out from one queue in trace order. A request is released
no earlier than its arrival time times `time_scale` (0, the default, releases
everything at once: throughput at saturation). Throughput is completed
requests per wall-clock hour from the moment every worker is ready; latency is
each request's service time in its worker (pipeline call, cache path
included). Everything runs on this machine's CPU cores, so the figures are this
machine's, not a GPU's; the `simulated` mode scales to GPU profiles.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import platform
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from flexcache.benchmarks.serve.simulate import (
    SYSTEMS,
    SystemSpec,
    flexcache_ratios,
    latency_percentiles,
)
from flexcache.benchmarks.serve.workload import TraceRequest
from flexcache.core import FlexCacheError

READY_TIMEOUT_S = 300.0  # a worker loads MiniLM and the pipeline; slow under load on 2 cores
RESULT_TIMEOUT_S = 300.0  # one request, worst case, before the run is declared stuck


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def parent_death_signal() -> Callable[[int], bool]:
    """A function that asks Linux to send this process a signal when its parent dies.

    ``set_signal(signum)`` calls ``prctl(PR_SET_PDEATHSIG, signum)`` and returns
    whether it took (False off Linux, or without libc's prctl). The kernel sends
    the signal when the *thread* that started the process exits, so start such
    processes from a thread that lives as long as they should (the main thread).
    Resolved here, in the parent, so a `preexec_fn` between fork and exec only
    makes the call.
    """
    prctl = None
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            prctl = ctypes.CDLL(None, use_errno=True).prctl

    def set_signal(signum: int) -> bool:
        return prctl is not None and prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0) == 0

    return set_signal


class LocalRedisServer:
    """A throwaway redis-server on a free loopback port (no persistence), stopped on exit.

    It also dies with this process, even one that is SIGKILLed (Linux: a parent-death
    signal, set when it is started from the main thread; see `parent_death_signal`).
    """

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise FlexCacheError("--live needs a Redis server: install redis-server (apt-get install "
                                 "redis-server) or pass --redis-url redis://HOST:PORT/DB")
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self._dir = tempfile.TemporaryDirectory(prefix="flexcache-live-redis-")
        set_signal, parent = parent_death_signal(), os.getpid()

        def die_with_parent() -> None:  # runs in the child between fork and exec
            set_signal(signal.SIGTERM)
            if os.getppid() != parent:  # the parent died before the signal was set
                os._exit(1)

        # From another thread the signal would fire when that thread ends, not this process.
        main_thread = threading.current_thread() is threading.main_thread()
        self._process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", self._dir.name], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=die_with_parent if main_thread else None)
        self.url = f"redis://127.0.0.1:{self.port}/0"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return
            if self._process.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise FlexCacheError(f"redis-server did not start on 127.0.0.1:{self.port}")

    @property
    def running(self) -> bool:
        return self._process.poll() is None

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._dir.cleanup()

    def __enter__(self) -> "LocalRedisServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


@dataclass
class LiveRow:
    index: int
    worker: int
    prompt: str
    ok: bool = True
    error: str | None = None
    hit: bool = False
    remote_hit: bool = False  # resumed from an entry another worker inserted
    via_parts: bool = False
    region: str | None = None  # a region hit: the part generated anew
    skip_steps: int = 0
    num_steps: int = 0
    seconds: float = 0.0
    adherence: float | None = None  # None: the prompt is not a toy-world description


@dataclass
class WorkerSetup:
    worker: int
    system: SystemSpec
    cache_name: str
    redis_url: str | None
    budget_bytes: int
    steps: int
    guidance: float
    threads: int = 1


@dataclass
class LiveSystemResult:
    name: str
    rows: list[LiveRow] = field(default_factory=list)
    wall_seconds: float = 0.0
    worker_stats: list[dict[str, Any]] = field(default_factory=list)
    redis_stopped_after: int | None = None


def _cache_config(setup: WorkerSetup):
    tiers = [{"kind": "memory", "capacity_bytes": setup.budget_bytes}]
    if setup.redis_url:
        tiers.append({"kind": "redis", "capacity_bytes": setup.budget_bytes, "url": setup.redis_url})
    return setup.system.cache_config(name=setup.cache_name, store={"tiers": tiers})


def _worker_main(setup: WorkerSetup, requests, results) -> None:
    """One worker process: build the cache and the pipeline, then serve requests until a None arrives."""
    torch.set_num_threads(setup.threads)  # N workers share the machine's cores
    try:
        from flexcache.engine import FlexCache
        from flexcache.integrations.diffusers import enable_flexcache, last_call_report
        from flexcache.toyworld.model import (
            MODEL_ID,
            WEIGHTS,
            PromptEncoder,
            initial_noise,
            pipeline_kwargs,
            toyworld_pipeline,
        )
        from flexcache.toyworld.reader import adherence
        from flexcache.toyworld.world import parse_prompt

        cache = FlexCache(_cache_config(setup)) if setup.system.cached and setup.budget_bytes > 0 else None
        encoder = PromptEncoder()
        pipe = toyworld_pipeline(WEIGHTS)
        pipe.set_progress_bar_config(disable=True)
        if cache is not None:
            cache.embedder.embed(["warm-up"])
            enable_flexcache(pipe, cache, model_id=MODEL_ID)
        bypass = {} if cache is None else {"flexcache_enabled": False}
        with torch.inference_mode():  # first call pays one-off costs; keep it out of the timings
            pipe(latents=initial_noise([0]), **bypass,
                 **pipeline_kwargs(encoder(["warm-up"]), steps=2, guidance=setup.guidance))
    except Exception:  # noqa: BLE001 - reported to the driver, which fails the run with it
        results.put(("failed", setup.worker, traceback.format_exc()))
        return
    results.put(("ready", setup.worker, None))
    own_prompts: set[str] = set()
    while True:
        item = requests.get()
        if item is None:
            break
        index, request = item
        row = LiveRow(index, setup.worker, request.prompt, num_steps=setup.steps)
        started = time.perf_counter()
        try:
            kwargs = pipeline_kwargs(encoder([request.prompt]), steps=setup.steps, guidance=setup.guidance)
            seed = request.seed if request.seed is not None else index
            with torch.inference_mode():
                if cache is None:
                    clip = pipe(latents=initial_noise([seed]), **kwargs).frames[0]
                else:
                    # A trace's seed is its user's choice; without one the bench seeds the run for repeatability
                    # only, so any entry may serve it.
                    clip = pipe(prompt=request.prompt, negative_prompt="", flexcache_tenant=request.tenant,
                                generator=torch.Generator().manual_seed(seed),
                                flexcache_any_seed=request.seed is None, **kwargs).frames[0]
                    report = last_call_report(pipe)
                    row.hit, row.skip_steps, row.via_parts = report.hit, report.skip_steps, report.via_parts
                    row.region = report.region
                    row.remote_hit = report.hit and report.source_prompt not in own_prompts
                    if report.inserted:
                        own_prompts.add(request.prompt)
            row.seconds = time.perf_counter() - started
            target = parse_prompt(request.prompt)
            if target is not None:
                row.adherence = adherence(clip.clamp(-1, 1), target)
        except Exception as exc:  # noqa: BLE001 - a failed request is a result, not a crash
            row.ok, row.error = False, f"{type(exc).__name__}: {exc}"
            row.seconds = time.perf_counter() - started
        results.put(("row", setup.worker, row))
    stats: dict[str, Any] = {"worker": setup.worker}
    if cache is not None:
        summary = cache.stats()
        stats.update({k: summary.get(k) for k in ("hits", "requests", "entries", "bytes_stored")})
        stats["tiers"] = {tier.name: tier.bytes_used for tier in cache.store.tiers}
        cache.close()
    results.put(("done", setup.worker, stats))


def _serve_system(trace: list[TraceRequest], spec: SystemSpec, *, workers: int, budget_bytes: int,
                  redis_url: str | None, steps: int, guidance: float, time_scale: float,
                  on_row, stop_redis=None, stop_redis_after: int | None = None) -> LiveSystemResult:
    context = multiprocessing.get_context("spawn")  # torch and threads do not survive fork
    requests, results = context.Queue(), context.Queue()
    name = f"live-{spec.name}-{uuid.uuid4().hex[:8]}"
    threads = max(1, (os.cpu_count() or 1) // workers)
    processes = [context.Process(target=_worker_main, daemon=True,
                                 args=(WorkerSetup(w, spec, name, redis_url, budget_bytes, steps, guidance,
                                                   threads), requests, results))
                 for w in range(workers)]
    for process in processes:
        process.start()
    result = LiveSystemResult(spec.name)
    try:
        ready = 0
        while ready < workers:
            kind, worker, payload = _next_result(results, processes, READY_TIMEOUT_S)
            if kind == "failed":
                raise FlexCacheError(f"live worker {worker} could not start:\n{payload}")
            ready += kind == "ready"
        started = time.perf_counter()

        def record(row: LiveRow) -> None:
            result.rows.append(row)
            on_row(row)
            if len(result.rows) == len(trace):
                result.wall_seconds = time.perf_counter() - started
            if stop_redis is not None and result.redis_stopped_after is None and len(result.rows) >= stop_redis_after:
                stop_redis()
                result.redis_stopped_after = len(result.rows)

        first_t = trace[0].t
        for index, request in enumerate(trace):
            if time_scale > 0:  # open loop: wait for the request's (scaled) arrival
                while (delay := (request.t - first_t) * time_scale - (time.perf_counter() - started)) > 0:
                    _drain(results, min(delay, 0.05), record)
            requests.put((index, request))
            _drain(results, 0, record)
        for _ in processes:
            requests.put(None)
        done = 0
        while done < workers:
            kind, worker, payload = _next_result(results, processes, RESULT_TIMEOUT_S)
            if kind == "row":
                record(payload)
            elif kind == "done":
                done += 1
                result.worker_stats.append(payload)
    finally:
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
    result.wall_seconds = result.wall_seconds or time.perf_counter() - started
    result.rows.sort(key=lambda r: r.index)
    return result


def _drain(results, wait_s: float, record) -> None:
    """Record the rows that arrive within `wait_s` ("done" only follows the sentinels, not sent yet)."""
    try:
        while True:
            kind, _, payload = results.get(timeout=wait_s) if wait_s > 0 else results.get_nowait()
            wait_s = 0
            if kind == "row":
                record(payload)
    except queue.Empty:
        return


def _next_result(results, processes, timeout_s: float):
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return results.get(timeout=1.0)
        except queue.Empty:
            dead = [p for p in processes if p.exitcode not in (None, 0)]
            if dead:
                raise FlexCacheError(f"a live worker exited with status {dead[0].exitcode}; "
                                     "run with fewer --workers or see its stderr above") from None
            if time.monotonic() > deadline:
                raise FlexCacheError(f"no live worker reported for {timeout_s:.0f} s; giving up") from None


def summarize_live(result: LiveSystemResult, *, workers: int, gpu_price_per_hour: float,
                   storage_price_per_gb_month: float) -> dict[str, Any]:
    rows = result.rows
    served = [r for r in rows if r.ok]
    scored = [r.adherence for r in served if r.adherence is not None]
    steps_total = sum(r.num_steps for r in rows) or 1
    bytes_stored = sum(sum(s.get("tiers", {}).values()) for s in result.worker_stats)
    shared = max((s.get("tiers", {}).get("redis", 0) for s in result.worker_stats), default=0)
    worker_hours = workers * result.wall_seconds / 3600
    storage_cost = storage_price_per_gb_month * bytes_stored / 1e9 * result.wall_seconds / (30 * 86_400)
    return {
        "throughput_rph": len(served) / result.wall_seconds * 3600 if result.wall_seconds else 0.0,
        **latency_percentiles([r.seconds for r in served] or [0.0]),
        "offered_load_rph": "saturation (every request queued at once)",
        "hit_rate": sum(r.hit for r in rows) / len(rows),
        "remote_hits": sum(r.remote_hit for r in rows),
        "decoupled_hits": sum(r.via_parts for r in rows),
        "region_hits": sum(r.region is not None for r in rows),
        "steps_saved_frac": sum(r.skip_steps for r in rows) / steps_total,
        "cost_per_1k_videos": (gpu_price_per_hour * worker_hours + storage_cost) / max(1, len(served)) * 1000,
        "bytes_stored": bytes_stored,
        "bytes_shared_tier": shared,
        "adherence": sum(scored) / len(scored) if scored else None,
        "adherence_scored": len(scored),
        "requests": len(rows),
        "failed": len(rows) - len(served),
        "errors": sorted({r.error for r in rows if r.error})[:5],
        "redis_stopped_after": result.redis_stopped_after,
        "wall_seconds": result.wall_seconds,
        "workers": result.worker_stats,
    }


def run_live_bench(trace: list[TraceRequest], *, systems: tuple[str, ...] = ("nocache", "nirvana", "flexcache"),
                   workers: int = 3, budget_bytes: int = 2**30, redis_url: str | None = None,
                   stop_redis_after: int | None = None, steps: int = 20, guidance: float = 3.0,
                   time_scale: float = 0.0, gpu_price: float = 3.0, storage_price: float = 0.11,
                   progress: bool = True) -> dict[str, Any]:
    """Serve `trace` once per system on `workers` real processes; a fresh Redis server per system unless given.

    `stop_redis_after`: stop the Redis server once that many requests have
    completed (only for a server this run started), to check that serving
    degrades to the local tiers without failing a request.
    """
    from tqdm.auto import tqdm

    if not trace:
        raise FlexCacheError("the trace is empty: nothing to serve")
    if workers < 1:
        raise FlexCacheError("--workers must be >= 1")
    if stop_redis_after is not None and redis_url is not None:
        raise FlexCacheError("--stop-redis-after stops a server this run starts; leave out --redis-url")
    unknown = [name for name in systems if name not in SYSTEMS]
    if unknown:
        raise FlexCacheError(f"unknown systems {unknown}; choose from {', '.join(SYSTEMS)}")
    out: dict[str, Any] = {}
    started = time.perf_counter()
    with tqdm(total=len(trace) * len(systems), desc="live requests", unit="req", disable=not progress) as bar:
        for name in systems:
            spec = SYSTEMS[name]
            bar.set_postfix_str(name)
            with contextlib.ExitStack() as stack:
                url, stop = redis_url, None
                if url is None and spec.cached:
                    server = stack.enter_context(LocalRedisServer())
                    url, stop = server.url, server.stop
                result = _serve_system(trace, spec, workers=workers, budget_bytes=budget_bytes, redis_url=url,
                                       steps=steps, guidance=guidance, time_scale=time_scale,
                                       on_row=lambda row: bar.update(1),
                                       stop_redis=stop if stop_redis_after is not None else None,
                                       stop_redis_after=stop_redis_after)
            out[name] = summarize_live(result, workers=workers, gpu_price_per_hour=gpu_price,
                                       storage_price_per_gb_month=storage_price)
            out[name]["rows"] = [asdict(row) for row in result.rows]
    ratios = flexcache_ratios(out)
    prompts = [r.prompt for r in trace]
    return {
        "mode": "live",
        "workload": {"requests": len(trace), "unique_prompts": len(set(prompts))},
        "systems": out,
        "ratios": ratios,
        "settings": {"workers": workers, "budget_bytes": budget_bytes, "steps": steps, "guidance": guidance,
                     "time_scale": time_scale, "redis": redis_url or "a fresh local redis-server per system",
                     "stop_redis_after": stop_redis_after, "gpu_price_per_hour": gpu_price,
                     "storage_price_per_gb_month": storage_price,
                     "tiers": "per worker: memory (budget_bytes), then the shared redis tier (budget_bytes)",
                     "model": "toy-world WanPipeline (flexcache/toyworld), CPU"},
        "wall_seconds": time.perf_counter() - started,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__},
    }


def format_live_table(result: dict[str, Any]) -> str:
    s = result["settings"]
    lines = [f"Live: {result['workload']['requests']} requests ({result['workload']['unique_prompts']} unique), "
             f"{s['workers']} worker processes on {result['machine']['cpus']} CPU cores, toy-world pipeline, "
             f"{s['steps']} steps",
             "",
             "| system | throughput (req/h) | p50 (s) | p95 (s) | hit rate | from other workers | steps saved "
             "| adherence | failed | $ / 1k videos |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, row in result["systems"].items():
        adherence = "-" if row["adherence"] is None else f"{row['adherence']:.3f}"
        lines.append(f"| {name} | {row['throughput_rph']:.0f} | {row['p50_latency_s']:.2f} | "
                     f"{row['p95_latency_s']:.2f} | {row['hit_rate']:.1%} | {row['remote_hits']} | "
                     f"{row['steps_saved_frac']:.1%} | {adherence} | {row['failed']} | "
                     f"{row['cost_per_1k_videos']:.2f} |")
        if row["redis_stopped_after"] is not None:
            lines.append(f"|  (redis stopped after {row['redis_stopped_after']} requests) |||||||||")
    for name, ratio in result["ratios"].items():
        lines.append(f"\n{name}: throughput x{ratio['throughput']:.3f}, "
                     f"cost per video {ratio['cost_reduction']:.1%} lower")
    return "\n".join(lines)


def toyworld_trace(requests: int = 60, seed: int = 0, interval_s: float = 1.0) -> list[TraceRequest]:
    """The default live workload: the demo's toy-world stream (new prompts, repeats, paraphrases, part edits)."""
    from flexcache.demo import demo_stream

    # No seeds: the demo stream's users leave the seed to the service (the bench seeds runs by index).
    return [TraceRequest(index * interval_s, "default", request.prompt)
            for index, request in enumerate(demo_stream(requests, seed))]
