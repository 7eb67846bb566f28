"""A circuit breaker for remote tiers: stop calling a server that keeps failing."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

logger = logging.getLogger(__name__)


class CircuitBreaker:
    """Stops calling a server that keeps failing; lets one trial call through later.

    closed --(`failures` consecutive failures)--> open --(`cooldown_s`)-->
    half-open: the next call is the trial, every other call is refused until
    it ends; success closes the breaker, failure opens it again. A state change
    is logged once, at warning level.

    Args:
        failures: consecutive failures that open the breaker (>= 1).
        cooldown_s: how long it stays open before the trial call.
        where: what the breaker guards, for log messages.
    """

    CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"

    def __init__(self, failures: int, cooldown_s: float, where: str,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.failures, self.cooldown_s, self.where = failures, cooldown_s, where
        self._clock = clock
        self._lock = threading.Lock()
        self.state = self.CLOSED
        self.consecutive_failures = 0
        self.opens = 0  # times the breaker opened (or re-opened)
        self.refused = 0  # calls answered without touching the network
        self._retry_at = 0.0
        self._trial = False  # the half-open trial call is in flight

    def allow(self) -> bool:
        """Whether a call may go to the server now (claims the trial when half-open)."""
        with self._lock:
            if self.state == self.CLOSED:
                return True
            if self.state == self.OPEN and self._clock() >= self._retry_at:
                self.state, self._trial = self.HALF_OPEN, False
            if self.state == self.HALF_OPEN and not self._trial:
                self._trial = True
                return True
            self.refused += 1
            return False

    def would_allow(self) -> bool:
        """Like `allow` but claims nothing: a call now would reach the server."""
        with self._lock:
            if self.state == self.OPEN:
                return self._clock() >= self._retry_at
            return self.state == self.CLOSED or not self._trial

    def succeeded(self) -> None:
        with self._lock:
            previous = self.state
            self.state, self.consecutive_failures, self._trial = self.CLOSED, 0, False
        if previous != self.CLOSED:
            logger.warning("flexcache: %s answers again; circuit closed", self.where)

    def failed(self, exc: BaseException) -> None:
        with self._lock:
            self.consecutive_failures += 1
            reopening = self.state == self.HALF_OPEN
            opening = reopening or (self.state == self.CLOSED and self.consecutive_failures >= self.failures)
            if opening:
                self.state, self._trial = self.OPEN, False
                self._retry_at = self._clock() + self.cooldown_s
                self.opens += 1
        if opening:
            logger.warning(
                "flexcache: %s %s (%s: %s); reads miss and writes fail for %.1f s",
                self.where, "still fails" if reopening else f"failed {self.failures} times in a row",
                type(exc).__name__, exc, self.cooldown_s,
            )

    def abandon(self) -> None:
        """The call ended without a verdict (not a redis error): free the trial."""
        with self._lock:
            self._trial = False
