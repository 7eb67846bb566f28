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
"""

from __future__ import annotations

import base64
import logging
import threading
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
        self.applied = 0

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
            logger.warning("flexcache: could not publish %s of %s: %s", event["type"], event["key"], exc)

    def published_insert(self, key: str, index: int, meta: bytes) -> None:
        self._publish(index, {"type": "insert", "key": key, "meta": base64.b64encode(meta).decode()})

    def published_evict(self, key: str, index: int) -> None:
        self._publish(index, {"type": "evict", "key": key})

    def poll_once(self, block_ms: int | None = None) -> int:
        """Apply the events published since the last poll; returns how many were applied."""
        applied = 0
        for index, tier in self.tiers.items():
            for event_id, event in tier.read_events(self._after[index], count=500, block_ms=block_ms):
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
                    logger.warning("flexcache: skipped a malformed %s event: %s", event.get("type"), exc)
        self.applied += applied
        return applied

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="flexcache-events", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self.poll_once(block_ms=self.poll_ms if len(self.tiers) == 1 else None) == 0:
                    self._stop.wait(self.poll_ms / 1000 if len(self.tiers) > 1 else 0.01)
            except Exception:  # the follower must outlive a bad event or a flaky server
                logger.exception("flexcache: event follower error")
                self._stop.wait(1.0)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
