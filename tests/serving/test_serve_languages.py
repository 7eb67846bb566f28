"""`flexcache serve` takes prompts in any script: jobs in Chinese, emoji or "!!!" finish, and repeat."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from tests.serving.test_serve_app import every_worker_knows_every_entry, finished, server, wait  # noqa: E402,F401

pytestmark = [pytest.mark.redis, pytest.mark.slow]

DATA = Path(__file__).resolve().parents[2] / "bench" / "data" / "multilingual-dev.jsonl"
PROMPTS = ["一只熊猫在竹林里吃竹子，阳光透过树叶", "🐼🎋☀️", "!!!", "Кошка спит на диване"]


def hits(client) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in client.get("/metrics").text.splitlines()
               if line.startswith("flexcache_hits_total{"))


def test_jobs_in_any_script_finish_and_a_chinese_repeat_hits(server):
    manager, url = server
    rows = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines() if line.strip()]
    (negative,) = [row["prompt"] for row in rows if row["group"] == "wan-negative"]
    prompts = PROMPTS + [negative]
    with httpx.Client(base_url=url, timeout=30) as client:
        ids = [client.post("/v1/videos", json={"prompt": p, "seed": 7}).json()["id"] for p in prompts]
        wait(lambda: finished(client, ids), what="the jobs in every script")
        for job in (client.get(f"/v1/videos/{i}").json() for i in ids):
            assert job["status"] == "done", job
        wait(lambda: every_worker_knows_every_entry(manager), what="each worker to know every entry")
        before = hits(client)
        again = client.post("/v1/videos", json={"prompt": PROMPTS[0], "seed": 7}).json()["id"]
        wait(lambda: finished(client, [again]), what="the repeat")
        assert client.get(f"/v1/videos/{again}").json()["status"] == "done"
        wait(lambda: hits(client) > before, what="the repeat's hit in /metrics")
        blank = client.post("/v1/videos", json={"prompt": " \u3000\t"})
        assert blank.status_code == 422  # only an empty prompt is refused
