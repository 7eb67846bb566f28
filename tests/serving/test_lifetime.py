"""`flexcache serve`'s processes live and die with it, and a server no worker can start exits non-zero."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import urllib.request

import pytest
from tests.serving.waiting import unused_port as free_port, wait

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

linux_only = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads the process table from /proc")


def children(pid: int) -> dict[int, str]:
    """pid -> command name of the live processes whose parent is `pid`."""
    found = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and (state := process_state(int(name))) is not None and state[1] == pid:
            found[int(name)] = state[0]
    return found


def process_state(pid: int) -> tuple[str, int] | None:
    """(command, parent pid) of a live process; None once it is gone or a zombie (dead, not yet reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    command, rest = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
    return None if rest[0] in ("Z", "X") else (command, int(rest[1]))


def serve_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "flexcache.cli", "serve", "--port", str(free_port()), *args]


ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def healthz(url: str) -> dict | None:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=5) as reply:
            return json.load(reply)
    except OSError as exc:  # not listening yet; a 503 carries the body too
        body = getattr(exc, "read", None)
        return json.loads(body()) if body is not None else None


@linux_only
@pytest.mark.slow
def test_a_sigkilled_server_takes_its_redis_server_and_workers_with_it(tmp_path):
    command = serve_command("--workers", "1", "--steps", "4")
    port = command[command.index("--port") + 1]
    with open(tmp_path / "serve.log", "w") as log:
        server = subprocess.Popen(command, env=ENV, stdout=log, stderr=subprocess.STDOUT)
    started: dict[int, str] = {}
    try:
        wait(lambda: (healthz(f"http://127.0.0.1:{port}") or {}).get("workers_ready") == 1, 240,
             "the worker to be ready")
        started = children(server.pid)
        assert "redis-server" in started.values() and len(started) >= 2, started  # redis and the worker
        server.kill()
        server.wait(timeout=30)
        wait(lambda: not any(process_state(pid) for pid in started), 60,
             f"{started} to end with their server ({(tmp_path / 'serve.log').read_text()[-2000:]})")
    finally:  # whatever this test started goes, whether or not the server took it along
        started.update(children(server.pid))
        server.kill()
        for pid in started:
            if process_state(pid) is not None:
                os.kill(pid, signal.SIGKILL)


@linux_only
def test_a_worker_whose_parent_is_gone_exits_without_the_kernels_help(tmp_path):
    """The watchdog, for where the parent-death signal does not exist: a worker checks its parent itself."""
    pid_file = tmp_path / "worker.pid"
    worker = textwrap.dedent(f"""
        import os, threading
        from flexcache.serving.worker import _Heartbeat
        _Heartbeat(0, os.getppid(), None, interval=3600)
        open({str(pid_file)!r}, "w").write(str(os.getpid()))
        threading.Event().wait()
    """)
    parent = subprocess.Popen([sys.executable, "-c", f"import subprocess, sys, threading\n"
                               f"subprocess.Popen([sys.executable, '-c', {worker!r}])\nthreading.Event().wait()"])
    try:
        wait(lambda: pid_file.exists() and pid_file.read_text(), 60, "the worker")
        worker_pid = int(pid_file.read_text())
        assert process_state(worker_pid) is not None
        parent.kill()
        parent.wait(timeout=30)
        wait(lambda: process_state(worker_pid) is None, 60, "the orphaned worker to exit")
    finally:
        parent.kill()


@pytest.mark.slow
def test_serve_exits_non_zero_naming_the_cause_when_no_worker_can_start():
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"  # no local redis-server needed for this
    result = subprocess.run(serve_command("--model", "does/not-exist", "--workers", "1", "--redis-url", dead_redis),
                            env=ENV, capture_output=True, text=True, timeout=400)
    assert result.returncode == 2, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("flexcache: error: no worker could start (worker 0: ") and "does/not-exist" in last
