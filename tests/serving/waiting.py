"""Helpers the serving tests share: polling for a condition with a generous deadline, an unused port."""

from __future__ import annotations

import socket
import time


def wait(condition, timeout: float = 240.0, what: str = "condition") -> None:
    """Poll `condition` every 0.1 s until it holds; fail naming `what` after `timeout` (a hang guard, not a bound)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def unused_port() -> int:
    """A loopback port that was free a moment ago: bound, then closed, so nothing listens there."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
