"""`flexcache serve`: the reference HTTP serving app (FastAPI) over worker processes sharing Redis."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flexcache.core import ConfigError, FlexCacheError
from flexcache.serving.jobs import Job, JobManager, NoWorkerError
from flexcache.serving.worker import WorkerConfig, worker_store

__all__ = ["Job", "JobManager", "NoWorkerError", "ServeError", "WorkerConfig", "describe_store", "run_server",
           "serve", "worker_cache_config", "worker_store"]

LOCAL_KINDS = ("memory", "host", "hbm")  # tiers in the worker's own memory: each worker has its own
DEFAULT_REDIS_BYTES = 16 << 30


class ServeError(FlexCacheError):
    """The server cannot serve: no worker could start, or the HTTP server could not."""


def worker_cache_config(base: dict[str, Any], redis_url: str | Callable[[], str] | None = None, *,
                        memory_bytes: int | None = None, redis_bytes: int | None = None,
                        redis_prefix: str | None = None, workers: int = 1) -> dict[str, Any]:
    """`base` (a CacheConfig dict) with the store each of `workers` workers runs.

    The config's store is honoured, never replaced:

    * its local tiers (memory, host, hbm) are each worker's own;
    * a disk tier's directory belongs to one process, so each worker gets the
      subdirectory ``worker-<n>`` of its path (`worker_store`) and an equal
      share of its capacity, which the whole directory then keeps to;
    * its Redis tier is the shared one, with its URL, prefix, capacity and
      breaker settings; without one, a Redis tier at `redis_url` goes last.

    The one-tier shorthand (``store.tier`` / ``store.capacity_bytes``) is the
    local tier, with `memory_bytes` as its capacity when given. Arguments never
    silently override the config: where both name a value, they must agree.

    Args:
        base: a `CacheConfig.to_dict()`.
        redis_url: the shared Redis when the config has no Redis tier; a
            callable is called only then (it may start a server).
        memory_bytes: the local tier's capacity (the shorthand's; with
            ``store.tiers``, only if it matches the config's local tier).
        redis_bytes, redis_prefix: the shared tier's capacity and key prefix
            (default 16 GiB and ``flexcache``; with a configured Redis tier,
            only if they match it).
        workers: how many workers share the disk tier's capacity.

    Raises:
        ConfigError: an argument disagrees with the config, or there is no Redis.

    Example:
        >>> cfg = worker_cache_config({"store": {"tier": "memory", "capacity_bytes": 1024}}, "redis://r:6379/0")
        >>> [(t["kind"], t["capacity_bytes"]) for t in cfg["store"]["tiers"]]
        [('memory', 1024), ('redis', 17179869184)]
    """
    store = dict(base.get("store") or {})
    tiers = [dict(tier) for tier in store.get("tiers") or ()]
    if not tiers:
        tiers = [{"kind": store.get("tier", "memory"),
                  "capacity_bytes": memory_bytes if memory_bytes is not None else store.get("capacity_bytes",
                                                                                             2 << 30)}]
    elif memory_bytes is not None:
        local = [tier["capacity_bytes"] for tier in tiers if tier["kind"] in LOCAL_KINDS]
        if local != [memory_bytes]:
            raise ConfigError(f"--memory {memory_bytes} bytes disagrees with the config's store.tiers, which set each "
                              f"worker's local tiers ({_kinds(tiers, LOCAL_KINDS) or 'none'}): drop --memory or "
                              "edit the config")
    redis = next((tier for tier in tiers if tier["kind"] == "redis"), None)
    if redis is not None:
        for flag, given, configured in (("--redis-url", redis_url, redis["url"]),
                                        ("--redis-capacity", redis_bytes, redis["capacity_bytes"]),
                                        ("the redis prefix", redis_prefix, redis.get("prefix", "flexcache"))):
            if given is not None and not callable(given) and given != configured:
                raise ConfigError(f"{flag} {given!r} disagrees with the config's redis tier ({configured!r}): "
                                  f"drop {flag} or edit store.tiers in the config")
    else:
        url = redis_url() if callable(redis_url) else redis_url
        if not url:
            raise ConfigError("flexcache serve needs a shared Redis: pass --redis-url or add a redis tier to the "
                              "config's store.tiers")
        tiers.append({"kind": "redis", "capacity_bytes": DEFAULT_REDIS_BYTES if redis_bytes is None else redis_bytes,
                      "url": url, "prefix": redis_prefix or "flexcache"})
    for tier in tiers:
        if tier["kind"] == "disk":
            share = tier["capacity_bytes"] // max(1, workers)
            if share < 1:
                raise ConfigError(f"the disk tier's capacity_bytes ({tier['capacity_bytes']}) cannot be shared by "
                                  f"{workers} workers: raise it or run fewer workers")
            tier["capacity_bytes"] = share
    return {**base, "store": {**store, "tiers": tiers}}


def _kinds(tiers: list[dict[str, Any]], kinds: tuple[str, ...]) -> str:
    return ", ".join(f"{tier['kind']} {tier['capacity_bytes']} bytes" for tier in tiers if tier["kind"] in kinds)


def describe_store(cache: dict[str, Any]) -> str:
    """One line: each worker's tiers and the shared one, as `worker_cache_config` laid them out."""
    parts = []
    for tier in cache["store"]["tiers"]:
        size = f"{tier['capacity_bytes'] / 2**30:.3g} GiB"
        if tier["kind"] == "redis":
            parts.append(f"shared redis {tier['url']} (prefix {tier.get('prefix', 'flexcache')}, {size})")
        elif tier["kind"] == "disk":
            parts.append(f"disk {tier['path']}/worker-<n> ({size} each)")
        else:
            parts.append(f"{tier['kind']} {size} each")
    return ", ".join(parts)


def serve(base: dict[str, Any], *, workers: int, model: str, steps: int, guidance: float, threads: int, host: str,
          port: int, redis_url: str | None = None, memory_bytes: int | None = None,
          redis_bytes: int | None = None) -> None:
    """`flexcache serve`: the workers over the config's store (`worker_cache_config`), the HTTP server, then
    a clean stop. A local redis-server starts only when neither the config nor `redis_url` names a Redis.

    Raises:
        ConfigError: the arguments and the config's store disagree (checked before anything starts).
        ServeError: no worker could start, or the HTTP server could not (`run_server`).
    """
    import contextlib
    import sys

    from flexcache import CacheConfig
    from flexcache.benchmarks.serve.live import LocalRedisServer

    with contextlib.ExitStack() as stack:
        cache = worker_cache_config(base, redis_url or (lambda: stack.enter_context(LocalRedisServer()).url),
                                    memory_bytes=memory_bytes, redis_bytes=redis_bytes, workers=workers)
        CacheConfig.from_dict(cache)  # a bad config fails here, not in every worker
        manager = JobManager(WorkerConfig(cache, model=model, steps=steps, guidance=guidance, threads=threads),
                             workers)
        stack.callback(manager.close)
        print(f"flexcache serve: {workers} workers ({model}): {describe_store(cache)}; "
              f"http://{host}:{port}/v1/videos", file=sys.stderr, flush=True)
        run_server(manager, host=host, port=port, cache_name=cache.get("name", "flexcache"))


def run_server(manager: JobManager, *, host: str, port: int, cache_name: str) -> None:
    """Serve the app with uvicorn until SIGINT or SIGTERM; returns then, so callers clean up.

    Raises:
        ServeError: no worker could start (`JobManager.fatal`; the server stops
            as soon as that is known), or the HTTP server could not start.
    """
    import signal
    import threading

    import uvicorn

    from flexcache.serving.app import create_app

    server = uvicorn.Server(uvicorn.Config(create_app(manager, cache_name=cache_name), host=host, port=port,
                                           log_level="info"))
    finished = threading.Event()

    def stop_when_fatal() -> None:
        while not finished.is_set():
            if manager.fatal_event.wait(0.5):
                server.should_exit = True
                return

    def stop(signum, frame):  # uvicorn re-raises the signal after its shutdown: end here, not in the default
        raise SystemExit(0)

    watcher = threading.Thread(target=stop_when_fatal, name="flexcache-serve-fatal", daemon=True)
    watcher.start()
    previous = signal.signal(signal.SIGTERM, stop)
    try:
        server.run()
    except (KeyboardInterrupt, SystemExit):
        return
    finally:
        signal.signal(signal.SIGTERM, previous)
        finished.set()
    if manager.fatal:
        raise ServeError(f"{manager.fatal}; the tracebacks are in the log above")
    if not server.started:
        raise ServeError(f"the HTTP server could not start on {host}:{port} (see the log above)")
