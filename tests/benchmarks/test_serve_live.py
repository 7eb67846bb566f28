"""Live mode: real worker processes with the toy-world pipeline sharing one real redis-server."""

from __future__ import annotations

import shutil

import pytest

from flexcache.benchmarks.serve.live import run_live_bench, toyworld_trace
from flexcache.benchmarks.serve.workload import TraceRequest
from flexcache.errors import FlexCacheError

needs_redis = pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs the redis-server binary")


@needs_redis
@pytest.mark.redis
@pytest.mark.slow
def test_three_workers_share_entries_and_survive_redis_stopping_mid_run():
    # Three topics, then repeats and edits of them: with three workers pulling from one queue,
    # later requests land on workers that did not insert their source.
    trace = toyworld_trace(30, seed=3)
    result = run_live_bench(trace, systems=("flexcache",), workers=3, stop_redis_after=15, progress=False)
    row = result["systems"]["flexcache"]
    assert row["requests"] == 30 and row["failed"] == 0, row["errors"]
    assert row["redis_stopped_after"] == 15
    assert row["remote_hits"] >= 1  # a hit served from an entry another worker inserted
    assert 0 < row["hit_rate"] < 1 and row["adherence_scored"] == 30
    assert len(row["workers"]) == 3 and all(w["requests"] > 0 for w in row["workers"])
    served_by = {r["worker"] for r in row["rows"]}
    assert served_by == {0, 1, 2}


def test_live_refuses_what_it_cannot_do():
    trace = [TraceRequest(0.0, "default", "a red circle moving left")]
    with pytest.raises(FlexCacheError, match="stops a server this run starts"):
        run_live_bench(trace, redis_url="redis://127.0.0.1:1/0", stop_redis_after=1, progress=False)
    with pytest.raises(FlexCacheError, match="empty"):
        run_live_bench([], progress=False)
    with pytest.raises(FlexCacheError, match="unknown systems"):
        run_live_bench(trace, systems=("magic",), progress=False)


def test_live_only_flags_are_refused_in_the_simulated_mode():
    from flexcache.cli import main

    assert main(["bench", "serve", "--stop-redis-after", "3"]) == 2
    assert main(["bench", "serve", "--live", "--profile", "ltx-video"]) == 2
