"""Following other processes through a shared tier's event stream.

Every process that writes an entry to a shared tier (Redis) publishes an
``insert`` event carrying the entry's metadata; every process that drops its
copy there publishes an ``evict``. Each process follows the stream on a
background thread and updates its own index, so an entry inserted by one
process becomes a hit for another within about `poll_ms` plus the write-behind
delay. A process that starts late first scans the shared tier (the cache's restore)
and then follows the stream from the position it read *before* the scan, so
nothing that happens during the scan is missed (applying an event twice is
harmless).

A follower that cannot read the stream (the server is down, its breaker open)
or publish to it keeps retrying, and says so: `stats()` counts failed polls
and publishes and keeps the last error, and `healthy` is False from a failure
until the next poll or publish that works (`FlexCache.health()` reports it).
"""

from __future__ import annotations

import base64
import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from flexcache.core.errors import FlexCacheError
from flexcache.store.base import Tier

logger = logging.getLogger(__name__)


def _unwrapped(tier: Tier) -> Any:
    return getattr(tier, "inner", tier)


def event_tiers(tiers: Sequence[Tier]) -> list[tuple[int, Any]]:
    """``(index, tier)`` of the shared tiers that carry an event stream."""
    found = []
    for index, tier in enumerate(tiers):
        inner = _unwrapped(tier)
        if tier.shared and all(hasattr(inner, name) for name in ("publish", "read_events", "last_event_id")):
            found.append((index, inner))
    return found


class EventFollower:
    """Publishes this process's inserts/evictions and applies everyone else's.

    Args:
        adopt: ``adopt(key, meta, tier_index)``, called for another process's insert.
        disown: ``disown(key, tier_index)``, called for another process's eviction.
        tiers: ``(index, tier)`` of the shared tiers (`event_tiers`).
        poll_ms: how long one poll waits for events.
    """

    def __init__(self, adopt: Callable[[str, bytes, int], Any], disown: Callable[[str, int], Any],
                 tiers: list[tuple[int, Any]], poll_ms: int = 200) -> None:
        self._adopt, self._disown = adopt, disown
        self.tiers = dict(tiers)
        self.poll_ms = poll_ms
        self.origin = uuid.uuid4().hex
        # Positions taken before the start-up scan: events during the scan are replayed.
        self._after = {index: self._last_id(tier) for index, tier in self.tiers.items()}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._health_lock = threading.Lock()
        self.applied = 0
        self.errors = 0  # failed polls and publishes
        self.consecutive_errors = 0
        self.malformed = 0  # events skipped because they could not be applied
        self.last_error: str | None = None
        self.last_error_at: float | None = None  # time.time() of the last error

    @property
    def healthy(self) -> bool:
        """False from a failed poll or publish until the next one that works."""
        return self.consecutive_errors == 0

    def stats(self) -> dict[str, Any]:
        """Events applied, errors (failed polls and publishes), malformed events skipped, the last error."""
        with self._health_lock:
            return {"healthy": self.consecutive_errors == 0, "applied": self.applied, "errors": self.errors,
                    "consecutive_errors": self.consecutive_errors, "malformed": self.malformed,
                    "last_error": self.last_error, "last_error_at": self.last_error_at}

    def _failed(self, what: str) -> None:
        with self._health_lock:
            self.errors += 1
            self.consecutive_errors += 1
            self.last_error, self.last_error_at = what, time.time()

    def _worked(self) -> None:
        with self._health_lock:
            self.consecutive_errors = 0

    @staticmethod
    def _last_id(tier: Any) -> str:
        try:
            return tier.last_event_id()
        except FlexCacheError:
            return "0-0"

    def _publish(self, index: int, event: dict) -> None:
        tier = self.tiers.get(index)
        if tier is None:
            return
        try:
            tier.publish({**event, "origin": self.origin})
        except FlexCacheError as exc:
            self._failed(f"could not publish an {event['type']} event: {exc}")
            logger.warning("flexcache: could not publish %s of %s: %s", event["type"], event["key"], exc)
            return
        self._worked()

    def published_insert(self, key: str, index: int, meta: bytes) -> None:
        self._publish(index, {"type": "insert", "key": key, "meta": base64.b64encode(meta).decode()})

    def published_evict(self, key: str, index: int) -> None:
        self._publish(index, {"type": "evict", "key": key})

    def poll_once(self, block_ms: int | None = None) -> int:
        """Apply the events published since the last poll; returns how many were applied.

        A tier whose stream could not be read (it answers no events then, and
        its breaker opens) counts as a failed poll.
        """
        applied, unread = 0, []
        for index, tier in self.tiers.items():
            events = tier.read_events(self._after[index], count=500, block_ms=block_ms)
            if not getattr(tier, "available", True):
                where = getattr(tier, "where", None)
                unread.append(f"the {tier.name} tier" + (f" at {where}" if where else ""))
            for event_id, event in events:
                self._after[index] = event_id
                if event.get("origin") == self.origin:
                    continue
                try:
                    if event.get("type") == "insert":
                        self._adopt(event["key"], base64.b64decode(event["meta"]), index)
                    elif event.get("type") == "evict":
                        self._disown(event["key"], index)
                    applied += 1
                except (KeyError, ValueError, FlexCacheError) as exc:
                    with self._health_lock:
                        self.malformed += 1
                    logger.warning("flexcache: skipped a malformed %s event: %s", event.get("type"), exc)
        with self._health_lock:
            self.applied += applied
        if unread:
            self._failed(f"cannot read the event stream of {', '.join(unread)}: the server is unavailable")
        else:
            self._worked()
        return applied

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="flexcache-events", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self.poll_once(block_ms=self.poll_ms if len(self.tiers) == 1 else None) == 0:
                    self._stop.wait(self.poll_ms / 1000 if len(self.tiers) > 1 else 0.01)
            except Exception as exc:  # the follower must outlive a bad event or a flaky server
                self._failed(f"{type(exc).__name__}: {exc}")
                logger.exception("flexcache: event follower error")
                self._stop.wait(1.0)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
