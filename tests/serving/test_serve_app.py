"""`flexcache serve` with real parts: 2 worker processes over a real redis-server, a real HTTP client."""

from __future__ import annotations

import os
import random
import re
import signal
import socket
import threading

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")

from flexcache.serving import JobManager, WorkerConfig, worker_cache_config  # noqa: E402
from flexcache.serving.app import create_app  # noqa: E402
from flexcache.toyworld.world import all_specs, prompt_for  # noqa: E402
from tests.serving.waiting import wait  # noqa: E402

pytestmark = [pytest.mark.redis, pytest.mark.slow]


@pytest.fixture
def server(redis_url, redis_prefix):
    base = {"embedder": {"device": "cpu"}, "index": {"device": "cpu"}, "name": "served"}
    cache = worker_cache_config(base, redis_url, memory_bytes=64 << 20, redis_bytes=256 << 20,
                                redis_prefix=redis_prefix)
    manager = JobManager(WorkerConfig(cache, steps=10, health_interval_s=0.5), workers=2)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = create_app(manager, cache_name="served", max_prompt_chars=300)
    web = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=web.run, daemon=True)
    thread.start()
    wait(lambda: web.started, 30, "the server")
    assert manager.wait_ready(2, timeout=240)
    try:
        yield manager, f"http://127.0.0.1:{port}"
    finally:
        web.should_exit = True
        thread.join(timeout=10)
        manager.close()


def finished(client, ids):
    return all(client.get(f"/v1/videos/{i}").json()["status"] in ("done", "failed") for i in ids)


def total_hits(client) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in client.get("/metrics").text.splitlines()
               if line.startswith("flexcache_hits_total{"))


def every_worker_knows_every_entry(manager) -> bool:
    """Each ready worker's index holds every entry any worker inserted: the write-behind copies reached
    Redis and the other worker's event follower took them in (from the stats workers report every 0.5 s)."""
    stats = [manager.worker_stats.get(index) for index in manager.ready_workers()]
    if len(stats) < 2 or None in stats:
        return False
    inserted = sum(s["inserts"] for s in stats)
    return inserted > 0 and all(s["entries"] >= inserted for s in stats)


def test_twenty_jobs_survive_a_killed_worker_and_hits_cross_workers(server):
    manager, url = server
    rng = random.Random(0)
    prompts = [prompt_for(spec, rng) for spec in rng.sample(all_specs(), 10)]
    with httpx.Client(base_url=url, timeout=30) as client:
        first = [client.post("/v1/videos", json={"prompt": p, "seed": i}).json()["id"] for i, p in enumerate(prompts)]
        wait(lambda: finished(client, first), what="the first ten jobs")
        wait(lambda: every_worker_knows_every_entry(manager), what="each worker to know the other's entries")
        # The same seeds again: an explicit seed is served only by entries of that seed.
        again = [client.post("/v1/videos", json={"prompt": p, "seed": i}).json()["id"]
                 for i, p in enumerate(prompts)]
        running = []
        wait(lambda: running.extend(j.worker for i in again if (j := manager.get(i)).status == "running")
             or running, what="a running job")
        os.kill(manager.worker_pids()[running[0]], signal.SIGKILL)  # mid-run: its job must not be lost
        wait(lambda: finished(client, first + again), what="all twenty jobs")
        jobs = [client.get(f"/v1/videos/{i}").json() for i in first + again]
        assert len(jobs) == 20
        for job in jobs:
            assert job["status"] == "done" or (job["status"] == "failed" and "died" in job["error"]), job
            assert not {"hit", "skip_steps", "source", "source_prompt"} & set(job)  # the operator's only
        done = [job for job in jobs if job["status"] == "done"]
        assert len(done) >= 19 and all(job["media_type"] == "image/gif" and job["video"] for job in done)
        metrics = client.get("/metrics").text
        assert "flexcache_serve_worker_deaths_total 1.0" in metrics
        cross = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                    if line.startswith("flexcache_serve_cross_worker_hits_total{"))
        assert cross >= 1
        assert re.search(r'flexcache_hits_total\{[^}]*worker="\d+"', metrics), metrics

        # Without a seed the server draws one that is not the client's choice: any entry serves the repeat.
        before = total_hits(client)
        seedless = client.post("/v1/videos", json={"prompt": prompts[0]}).json()["id"]
        wait(lambda: finished(client, [seedless]), what="the seedless repeat")
        wait(lambda: total_hits(client) > before, what="the seedless repeat's hit in /metrics")

        # bad input
        missing = client.post("/v1/videos", json={"seed": 1})
        assert missing.status_code == 422 and "prompt" in str(missing.json()["detail"])
        typed = client.post("/v1/videos", json={"prompt": "a cat", "num_inference_steps": "many"})
        assert typed.status_code == 422 and "num_inference_steps" in str(typed.json()["detail"])
        assert client.post("/v1/videos", json={"prompt": "a cat", "user": "no spaces"}).status_code == 422
        assert client.post("/v1/videos", json={"prompt": "x" * 301}).status_code == 413
        assert client.get("/v1/videos/nope").status_code == 404
        health = client.get("/healthz")
        assert health.status_code == 200 and health.json()["status"] == "ok", health.json()

        manager.respawn = False  # now no worker comes back
        for pid in manager.worker_pids().values():
            os.kill(pid, signal.SIGKILL)
        wait(lambda: not manager.alive_workers(), 30, "every worker gone")
        assert client.post("/v1/videos", json={"prompt": "a cat"}).status_code == 503
        gone = client.get("/healthz")
        assert gone.status_code == 503 and gone.json()["status"] == "no worker alive"
        assert not manager.fatal_event.is_set()  # killed, not failed to start: respawn was off
