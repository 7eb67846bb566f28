"""Latency histograms of the engine's calls (plan, fetch, insert), with fixed buckets.

Kept without prometheus-client so `stats()` has them anywhere; `engine.metrics`
exports them as Prometheus histograms.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

# Seconds: a CPU plan takes ~8 ms, a GPU hit's fetch well under 1 ms, an insert of a large entry seconds.
BUCKETS: tuple[float, ...] = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
OPERATIONS = ("plan", "fetch", "insert")

F = TypeVar("F", bound=Callable[..., Any])


class LatencyHistograms:
    """Counts per bucket (not cumulative), sum and count per operation. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = {op: [0] * (len(BUCKETS) + 1) for op in OPERATIONS}  # the last: above every bucket
        self._sums = dict.fromkeys(OPERATIONS, 0.0)

    def observe(self, operation: str, seconds: float) -> None:
        index = next((i for i, bound in enumerate(BUCKETS) if seconds <= bound), len(BUCKETS))
        with self._lock:
            self._counts[operation][index] += 1
            self._sums[operation] += seconds

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """``{op: {"buckets": [(upper bound, cumulative count), ...], "sum": s, "count": n}}`` (JSON-safe)."""
        with self._lock:
            out = {}
            for op in OPERATIONS:
                total, cumulative = 0, []
                for bound, count in zip((*BUCKETS, float("inf")), self._counts[op]):
                    total += count
                    cumulative.append((bound if bound != float("inf") else "+Inf", total))
                out[op] = {"buckets": cumulative, "sum": self._sums[op], "count": total}
            return out


def timed(operation: str) -> Callable[[F], F]:
    """Record a method's wall time in its object's ``latency`` histograms, raising or not."""
    def decorate(method: F) -> F:
        @functools.wraps(method)
        def wrapper(self, *args, **kwargs):
            started = time.perf_counter()
            try:
                return method(self, *args, **kwargs)
            finally:
                self.latency.observe(operation, time.perf_counter() - started)
        return wrapper  # type: ignore[return-value]
    return decorate
