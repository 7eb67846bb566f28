"""`flexcache serve`: the reference HTTP serving app (FastAPI) over worker processes sharing Redis."""

from flexcache.serving.jobs import Job, JobManager, NoWorkerError, WorkerConfig

__all__ = ["Job", "JobManager", "NoWorkerError", "WorkerConfig", "run_server", "worker_cache_config"]


def worker_cache_config(base: dict, redis_url: str, *, memory_bytes: int, redis_bytes: int,
                        redis_prefix: str = "flexcache") -> dict:
    """`base` (a CacheConfig dict) with each worker's tiers: local memory, then the shared Redis."""
    return {**base, "store": {"tiers": [
        {"kind": "memory", "capacity_bytes": memory_bytes},
        {"kind": "redis", "capacity_bytes": redis_bytes, "url": redis_url, "prefix": redis_prefix}]}}


def run_server(manager: JobManager, *, host: str, port: int, cache_name: str) -> None:
    """Serve the app with uvicorn until SIGINT or SIGTERM; returns then, so callers clean up."""
    import signal

    import uvicorn

    from flexcache.serving.app import create_app

    def stop(signum, frame):  # uvicorn re-raises the signal after its shutdown: end here, not in the default
        raise SystemExit(0)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        uvicorn.run(create_app(manager, cache_name=cache_name), host=host, port=port, log_level="info")
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
