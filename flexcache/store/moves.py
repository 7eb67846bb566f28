"""The tiered store's background moves (write-behind copies, promotions, demotions): one bounded queue.

A move is offered without blocking: when the queue is full it is refused (the
store counts it as dropped), so the request that caused it never waits. One
worker thread runs the moves in order; ``background=False`` keeps them until
`drain`, for deterministic tests and tools.

The worker runs at a lower CPU priority (nice +`WORKER_NICENESS`, Linux only):
copying a 4 MiB blob to disk costs a core for milliseconds, and when the cores
are full the requests' own threads (a plan's embedding, a fetch's decode)
should get them first. The moves are not latency-critical.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

WORKER_NICENESS = 10


class MoveQueue:
    """Runs `execute(task)` for each accepted task, off the caller's thread.

    Args:
        execute: runs one task; it must call `done()` when the task is over.
        size: tasks that may wait.
        background: run tasks on a worker thread; False runs them at `drain`.
    """

    def __init__(self, execute: Callable[[Any], None], size: int, *, background: bool = True) -> None:
        self._execute = execute
        self._background = background
        self._queue: queue.Queue = queue.Queue(maxsize=size)
        self._inline: list[Any] = []
        self._idle = threading.Condition()
        self._in_flight = 0
        self._worker: threading.Thread | None = None
        if background:
            self._worker = threading.Thread(target=self._run, name="flexcache-store", daemon=True)
            self._worker.start()

    def offer(self, task: Any) -> bool:
        """Accept `task` (True), or refuse it because the queue is full (False); never blocks."""
        if self._background:
            try:
                self._queue.put_nowait(task)
            except queue.Full:
                return False
        else:
            self._inline.append(task)
        with self._idle:
            self._in_flight += 1
        return True

    def done(self) -> None:
        """One accepted task is over (however it ended)."""
        with self._idle:
            self._in_flight -= 1
            self._idle.notify_all()

    def _run(self) -> None:
        try:  # Linux: a thread's niceness is its own (setpriority on the thread id)
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WORKER_NICENESS)
        except (AttributeError, OSError):
            pass  # elsewhere the worker keeps the process's priority
        while True:
            task = self._queue.get()
            if task is None:
                return
            try:
                self._execute(task)
            except Exception:
                logger.exception("flexcache: background store task failed")

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until no accepted task is left; False when `timeout` passed first."""
        if not self._background:
            while self._inline:
                self._execute(self._inline.pop(0))
            return True
        with self._idle:
            return self._idle.wait_for(lambda: self._in_flight == 0, timeout=timeout)

    def close(self, timeout: float = 30) -> None:
        """Finish what was accepted, then stop the worker."""
        self.drain(timeout=timeout)
        if self._worker is not None:
            self._queue.put(None)
            self._worker.join(timeout=timeout)
