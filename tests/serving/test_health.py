"""What `flexcache serve` says about itself: start-up failures, a shared tier that is down, per-worker disk tiers."""

from __future__ import annotations

import os
import signal

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
from fastapi.testclient import TestClient  # noqa: E402

from flexcache import CacheConfig  # noqa: E402
from flexcache.serving import JobManager, NoWorkerError, ServeError, WorkerConfig, run_server  # noqa: E402
from flexcache.serving import worker_cache_config  # noqa: E402
from flexcache.serving.app import create_app  # noqa: E402
from tests.serving.waiting import unused_port as closed_port, wait

ENGINE = {"embedder": {"device": "cpu"}, "index": {"device": "cpu"}}


def store(*tiers) -> dict:
    return CacheConfig.from_dict({**ENGINE, "store": {"tiers": list(tiers)}}).to_dict()


@pytest.mark.slow
def test_the_server_stops_with_an_error_when_no_worker_can_start(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    cache = worker_cache_config(store({"kind": "disk", "capacity_bytes": "64MiB", "path": str(blocker)}),
                                f"redis://127.0.0.1:{closed_port()}/0", workers=2)
    manager = JobManager(WorkerConfig(cache, health_interval_s=0.5), workers=2)
    try:
        with pytest.raises(ServeError, match=r"no worker could start \(worker 0: TierUnavailableError: disk tier "
                                             r"cannot create directory .*; worker 1: "):
            run_server(manager, host="127.0.0.1", port=closed_port(), cache_name="served")
        health = manager.health()
        assert health["status"] == "no worker alive" and health["workers_alive"] == 0
        assert [reason.split(":")[0] for reason in health["reasons"]] == ["worker 0 could not start",
                                                                         "worker 1 could not start"]
        assert manager.counters["start_failures"] == 2 and manager.counters["worker_deaths"] == 0
        with pytest.raises(NoWorkerError):
            manager.submit("a red ball", seed=1, steps=None, tenant=None, user=None)
    finally:
        manager.close()


@pytest.mark.slow
def test_an_unreachable_redis_makes_healthz_degraded_and_each_worker_keeps_its_own_disk_directory(tmp_path):
    url = f"redis://127.0.0.1:{closed_port()}/0"
    cache = worker_cache_config(store({"kind": "memory", "capacity_bytes": "16MiB"},
                                      {"kind": "disk", "capacity_bytes": "64MiB", "path": str(tmp_path)},
                                      {"kind": "redis", "capacity_bytes": "64MiB", "url": url,
                                       "socket_timeout_s": 0.5, "breaker_cooldown_s": 30}), None, workers=2)
    manager = JobManager(WorkerConfig(cache, steps=4, health_interval_s=0.5), workers=2)
    client = TestClient(create_app(manager, cache_name="served"))
    try:
        assert manager.wait_ready(2, timeout=240)
        wait(lambda: sum(f"redis tier at {url} is unavailable" in reason
                         for reason in client.get("/healthz").json()["reasons"]) == 2, 60, "both workers to say so")
        reply = client.get("/healthz")
        body = reply.json()
        assert reply.status_code == 200 and body["status"] == "degraded" and body["workers_ready"] == 2
        assert all(reason.startswith(("worker 0: ", "worker 1: ")) for reason in body["reasons"]), body
        assert "flexcache_serve_degraded 1.0" in client.get("/metrics").text
        assert sorted(os.listdir(tmp_path)) == ["worker-0", "worker-1"]

        job = manager.submit("a red ball bouncing in a green field", seed=3, steps=None, tenant=None, user=None)
        wait(lambda: manager.get(job.id).status in ("done", "failed"), what="the job")
        assert manager.get(job.id).status == "done"  # degraded still serves: the cache fails open

        os.kill(manager.worker_pids()[0], signal.SIGKILL)  # its replacement takes slot 0 and its directory
        wait(lambda: manager.counters["worker_deaths"] == 1 and len(manager.ready_workers()) == 2, what="a replacement")
        assert sorted(os.listdir(tmp_path)) == ["worker-0", "worker-1"] and manager.counters["start_failures"] == 0
    finally:
        manager.close()
