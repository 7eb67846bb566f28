"""An ordered stack of tiers (fastest first) behind one put/get/remove.

Placement rules:

* A new entry is written to the fastest tier; copies to the persistent and
  shared tiers below it are made in the background (write-behind), so a
  restart or another process finds it once that copy is committed.
* A hit in a slower tier is served from there and promoted (copied up) in the
  background.
* Under capacity pressure a tier picks victims with its own replacement
  policy. A victim that has a copy in a lower tier just loses this copy; one
  that has none is demoted (its blob handed to the background worker for the
  next tier) or, from the last tier, evicted.
* A pinned key (`pin`, reference-counted) is never a victim in any tier, so
  an entry being read or held by a user stays where it is; when only pinned
  entries are left, the tier refuses the write like a full tier would.
* Background work goes through one bounded queue. When it is full the move is
  dropped and counted (back-pressure); the request that triggered it never
  waits. A dropped demotion of an entry with no other copy is an eviction.

The store tells its owner about entries that left every tier through
`on_evicted`, so the index never points at nothing.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from flexcache.engine.entry import CacheEntry
from flexcache.engine.policy import ReplacementPolicy, build_policy
from flexcache.engine.store.base import Tier, TierStats
from flexcache.errors import CapacityError, FlexCacheError

logger = logging.getLogger(__name__)

WRITE_WAIT_S = 1.0  # how long a put that found no room waits for writes in flight before giving up


@dataclass
class _Located:
    entry: CacheEntry
    meta: bytes
    tiers: set[int]  # indexes of the tiers holding a copy
    pending: int = 0  # background copies in flight


class _Excluding:
    """The keys `_make_room` must not evict: one key plus the pinned ones (a live view, no copy)."""

    __slots__ = ("_key", "_pins")

    def __init__(self, key: str, pins: dict[str, int]) -> None:
        self._key, self._pins = key, pins

    def __contains__(self, key: object) -> bool:
        return key == self._key or key in self._pins

    def __bool__(self) -> bool:
        return True


class TieredStore:
    """Tiers ordered fastest first, each with its own capacity and policy.

    Args:
        tiers: the tiers, fastest first.
        policy: replacement policy name for every tier.
        queue_size: background tasks that may wait.
        on_evicted: called (outside the store lock) with an entry key once no
            tier holds it any more.
        background: run moves on a worker thread (False runs them inline,
            for deterministic tests and tools).
    """

    def __init__(self, tiers: Sequence[Tier], *, policy: str = "lcbfu", queue_size: int = 256,
                 on_evicted: Callable[[str], None] | None = None, background: bool = True) -> None:
        if not tiers:
            raise CapacityError("a store needs at least one tier")
        self.tiers = list(tiers)
        self.policies: list[ReplacementPolicy] = [build_policy(policy) for _ in self.tiers]
        self.on_evicted = on_evicted or (lambda key: None)
        self._located: dict[str, _Located] = {}
        self._lock = threading.RLock()
        self._idle = threading.Condition(self._lock)
        self._in_flight = 0
        self.counters = {"promotions": 0, "demotions": 0, "evictions": 0, "write_behind": 0,
                         "dropped_moves": 0, "tier_errors": 0, "stale_victims": 0}
        self._background = background
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._inline: list[tuple] = []  # moves waiting for drain() when background=False
        self._evicted: list[str] = []  # keys to report through on_evicted
        self._reserved = [0] * len(self.tiers)  # bytes of writes in flight, per tier
        self._writing: set[tuple[int, str]] = set()  # (tier, key) being written
        self._refusing: set[int] = set()  # tiers whose last write failed (one warning per outage)
        self._pins: dict[str, int] = {}  # key -> pin count; pinned keys are never victims
        # Optional owner hooks, called outside the lock: a copy landed in / left a tier.
        self.on_placed: Callable[[str, int, bytes], None] | None = None
        self.on_left: Callable[[str, int], None] | None = None
        self._notices: list[tuple] = []
        self._closed = False
        self._worker: threading.Thread | None = None
        if background:
            self._worker = threading.Thread(target=self._run, name="flexcache-store", daemon=True)
            self._worker.start()

    # -- queries -------------------------------------------------------------------

    @property
    def capacity_bytes(self) -> int:
        return sum(t.capacity_bytes for t in self.tiers)

    @property
    def bytes_used(self) -> int:
        return sum(t.bytes_used for t in self.tiers)

    def largest_fit(self) -> int:
        """The largest blob some tier could hold when empty."""
        return max(t.capacity_bytes for t in self.tiers)

    def contains(self, key: str) -> bool:
        with self._lock:
            return key in self._located

    def tiers_of(self, key: str) -> list[str]:
        with self._lock:
            located = self._located.get(key)
            return [self.tiers[i].name for i in sorted(located.tiers)] if located else []

    def tier_stats(self) -> list[TierStats]:
        return [t.stats() for t in self.tiers]

    # -- pinning ------------------------------------------------------------------

    def pin(self, key: str) -> bool:
        """Protect `key` from capacity eviction in every tier until a matching `unpin`.

        Pins are counted per key: each `pin` needs its own `unpin`, so
        concurrent readers can pin the same entry. A pin protects against
        capacity pressure only; `remove` and a `put` that replaces the key
        still take effect, and the pin then holds the key's next version.
        A key may be pinned before it is stored.

        Args:
            key: the entry's store key.

        Returns:
            Whether a tier holds a copy of `key` now (the pin is taken either
            way). False also while its only copy is being demoted: that move
            may still fail and evict it.

        Example:
            >>> from flexcache.engine.store.memory import MemoryTier
            >>> store = TieredStore([MemoryTier(1000)], background=False)
            >>> with store.pinned("some-key"):
            ...     pass  # read and decode the entry; it cannot be evicted meanwhile
        """
        with self._lock:
            self._pins[key] = self._pins.get(key, 0) + 1
            located = self._located.get(key)
            return located is not None and bool(located.tiers)

    def unpin(self, key: str) -> None:
        """Release one `pin` of `key`.

        Raises:
            FlexCacheError: `key` is not pinned (an unpin without its pin).
        """
        with self._lock:
            count = self._pins.get(key, 0)
            if count <= 0:
                raise FlexCacheError(f"unpin({key!r}) without a matching pin()")
            if count == 1:
                del self._pins[key]
            else:
                self._pins[key] = count - 1

    @contextmanager
    def pinned(self, key: str) -> Iterator[bool]:
        """`pin` for the duration of a ``with`` block; yields what `pin` returned."""
        stored = self.pin(key)
        try:
            yield stored
        finally:
            self.unpin(key)

    def is_pinned(self, key: str) -> bool:
        with self._lock:
            return key in self._pins

    # -- writes -------------------------------------------------------------------

    def put(self, entry: CacheEntry, blob: bytes, meta: bytes = b"") -> None:
        """Store a new entry in the fastest tier that takes it; copy it down in the background.

        Raises:
            CapacityError: the blob is larger than every tier.
        """
        key = entry.key
        if len(blob) > self.largest_fit():
            raise CapacityError(f"a blob of {len(blob)} bytes is larger than every tier "
                                f"({self.largest_fit()} bytes at most); raise the tier capacities")
        mine = _Located(entry, meta, set())
        while True:
            self.remove(key)  # a replaced entry must not leave untracked copies behind
            with self._lock:
                # A racing put of the same key may have registered (and placed) its version since
                # remove() let go of the lock; overwriting it here would leave its copies and policy
                # records behind with no entry. Remove that one too, then register.
                if key not in self._located:
                    self._located[key] = mine
                    break
        placed = None
        deadline = time.monotonic() + WRITE_WAIT_S
        while True:
            placed = next((i for i in range(len(self.tiers)) if self._write(i, key, blob, meta, owner=mine)), None)
            with self._lock:
                # Writes in flight hold room they will soon give back as evictable entries, and another
                # version of this key being written (a racing put, a background copy) blocks a tier:
                # wait for them rather than report a full store.
                blocked = placed is None and self._located.get(key) is mine and bool(self._writing)
            if not blocked or time.monotonic() > deadline:
                break
            time.sleep(0.001)
        if placed is None:
            with self._lock:
                superseded = self._located.get(key) is not mine
            if superseded:  # a concurrent put or remove of the same key won
                self._flush_evictions()
                return
            self._forget_if_homeless(key, owner=mine)
            self._flush_evictions()
            raise CapacityError(f"no tier could store {key} ({len(blob)} bytes); see the tier errors in stats()")
        with self._lock:
            entry.tier = self.tiers[placed].name
        for index in range(placed + 1, len(self.tiers)):
            if self.tiers[index].persistent or self.tiers[index].shared:
                self._submit(("copy", index, key, blob, meta, mine))
        self._flush_evictions()

    def _write(self, index: int, key: str, blob: bytes, meta: bytes, owner: _Located | None = None) -> bool:
        """Make room in tier `index` and write; False when that tier cannot take it now.

        Room is made and the bytes reserved under the store lock; the write
        itself runs outside it, so a slow tier (disk, Redis) never holds up
        requests that touch other tiers. A write that turns out stale (the
        key was replaced or removed meanwhile) is undone.
        """
        tier = self.tiers[index]
        nbytes = len(blob)
        if nbytes > tier.capacity_bytes:
            return False
        with self._lock:
            located = self._located.get(key)
            if located is None or (owner is not None and located is not owner):  # removed or replaced meanwhile
                return False
            if index in located.tiers:
                return True
            if (index, key) in self._writing:  # another version is being written there
                return False
            if not self._make_room(index, nbytes + self._reserved[index], protect=key):
                return False
            self._reserved[index] += nbytes
            self._writing.add((index, key))
        written = False
        try:
            tier.put(key, blob, meta)
            written = True
        except FlexCacheError as exc:
            # One warning per outage: a tier that is down refuses every write until it is back.
            first = index not in self._refusing
            self._refusing.add(index)
            logger.log(logging.WARNING if first else logging.DEBUG, "flexcache: %s tier refused %s: %s%s",
                       tier.name, key, exc, " (further refusals are logged at debug level until it takes a write)"
                       if first else "")
        if written and index in self._refusing:
            self._refusing.discard(index)
            logger.warning("flexcache: %s tier takes writes again", tier.name)
        with self._lock:
            self._reserved[index] -= nbytes
            located = self._located.get(key)
            current = located is not None and (owner is None or located is owner)
            if written and current:
                self._writing.discard((index, key))
                located.tiers.add(index)
                self.policies[index].on_insert(located.entry)
                self._notices.append(("placed", key, index, meta))
                return True
            if not written:
                self._writing.discard((index, key))
                self.counters["tier_errors"] += 1
                return False
        try:  # stale: still holding the (tier, key) slot, so no newer write can be undone by mistake
            tier.remove(key)
        except FlexCacheError as exc:
            logger.warning("flexcache: %s tier kept a stale copy of %s: %s", tier.name, key, exc)
        finally:
            with self._lock:
                self._writing.discard((index, key))
        return False

    def _make_room(self, index: int, nbytes: int, protect: str) -> bool:
        """Free space in tier `index` by its policy (lock held). False if impossible.

        Neither `protect` (the key being written) nor a pinned key is ever
        chosen; when only they are left, the tier cannot take the write.
        """
        tier, policy = self.tiers[index], self.policies[index]
        keep = _Excluding(protect, self._pins)
        while not tier.fits(nbytes):
            victim = policy.victim(exclude=keep)
            if victim is None:
                return False
            self._leave_tier(index, victim)
        return True

    def _leave_tier(self, index: int, key: str) -> None:
        """Take `key` out of tier `index` (lock held): drop, demote or evict."""
        located = self._located.get(key)
        tier = self.tiers[index]
        if located is None:
            # The policy still named a key the store had forgotten. Racing puts of one key did this
            # before put() registered atomically; should anything else, drop the stale name rather
            # than fail the write that needed room.
            logger.debug("flexcache: %s tier policy named forgotten key %s; dropped", tier.name, key)
            self.policies[index].on_remove(key)
            self.counters["stale_victims"] += 1
            if (index, key) not in self._writing:
                tier.remove(key)
            return
        has_lower_copy = any(i > index for i in located.tiers)
        blob = None
        if not has_lower_copy and index + 1 < len(self.tiers):
            blob = tier.get(key)
        tier.remove(key)
        located.tiers.discard(index)
        self.policies[index].on_remove(key)
        self._notices.append(("left", key, index))
        if blob is not None:
            if self._submit(("copy", index + 1, key, blob, located.meta, located), demotion=True):
                self.counters["demotions"] += 1
        self._forget_if_homeless(key)

    def _forget_if_homeless(self, key: str, owner: _Located | None = None) -> None:
        """Forget `key` when no tier holds it and no move is pending; with `owner`, only that version.

        A caller that worked on one version passes it: a newer version of the
        key, registered meanwhile with its first write still in flight, also
        has no tier yet and must not be forgotten for the old one.
        """
        with self._lock:
            located = self._located.get(key)
            if located is None or located.tiers or located.pending or (owner is not None and located is not owner):
                return
            del self._located[key]
            self.counters["evictions"] += 1
            self._evicted.append(key)

    def _flush_evictions(self) -> None:
        """Tell the owner about evicted keys, never while holding the store lock.

        The owner's callback takes its own lock; calling it under ours could
        deadlock against an owner thread that holds its lock and waits for ours.
        """
        while True:
            with self._lock:
                if self._evicted:
                    notice: tuple = ("evicted", self._evicted.pop(0))
                elif self._notices:
                    notice = self._notices.pop(0)
                else:
                    return
            try:
                if notice[0] == "evicted":
                    self.on_evicted(notice[1])
                elif notice[0] == "placed" and self.on_placed is not None:
                    self.on_placed(*notice[1:])
                elif notice[0] == "left" and self.on_left is not None:
                    self.on_left(*notice[1:])
            except Exception:  # a bookkeeping callback must not break the store
                logger.exception("flexcache: store callback failed for %s", notice[1])

    def remove(self, key: str) -> bool:
        """Remove every copy of `key`; True when it was stored."""
        with self._lock:
            located = self._located.pop(key, None)
            if located is None:
                return False
            for index in located.tiers:
                self.policies[index].on_remove(key)
        for index in located.tiers:
            try:
                self.tiers[index].remove(key)
            except FlexCacheError as exc:
                logger.warning("flexcache: %s tier could not remove %s: %s", self.tiers[index].name, key, exc)
            with self._lock:
                self._notices.append(("left", key, index))
        self._flush_evictions()
        return True

    # -- reads --------------------------------------------------------------------

    def get(self, key: str) -> bytes | None:
        """The blob from the fastest tier holding a good copy; promotes it in the background."""
        with self._lock:
            located = self._located.get(key)
            order = sorted(located.tiers) if located else []
        for index in order:
            blob = self.tiers[index].get(key)
            if blob is None:  # corrupt (quarantined by the tier) or vanished
                with self._lock:
                    located = self._located.get(key)
                    if located is not None and index in located.tiers:
                        located.tiers.discard(index)
                        self.policies[index].on_remove(key)
                self._forget_if_homeless(key)
                continue
            with self._lock:
                located = self._located.get(key)
                if located is not None:
                    self.policies[index].on_access(located.entry)
                    if index > 0 and 0 not in located.tiers:
                        self._submit(("copy", 0, key, blob, located.meta, located), promotion=True)
            self._flush_evictions()
            return blob
        self._flush_evictions()
        return None

    # -- adoption (restart, other processes) ---------------------------------------

    def adopt(self, entry: CacheEntry, meta: bytes, tier_index: int) -> None:
        """Record that tier `tier_index` already holds `entry` (found by a scan or an event)."""
        with self._lock:
            located = self._located.setdefault(entry.key, _Located(entry, meta, set()))
            if tier_index not in located.tiers:
                located.tiers.add(tier_index)
                self.policies[tier_index].on_insert(located.entry)

    def disown(self, key: str, tier_index: int) -> None:
        """Forget tier `tier_index`'s copy (another process evicted it there)."""
        with self._lock:
            located = self._located.get(key)
            if located is None or tier_index not in located.tiers:
                return
            located.tiers.discard(tier_index)
            self.policies[tier_index].on_remove(key)
        self._forget_if_homeless(key)
        self._flush_evictions()

    # -- background work ----------------------------------------------------------

    def _submit(self, task: tuple, *, demotion: bool = False, promotion: bool = False) -> bool:
        """Queue a move (lock may be held); False when the queue is full and the move is dropped."""
        _, index, key, _, _, owner = task
        with self._lock:
            located = self._located.get(key)
            if located is None or located is not owner:
                return False
            if self._background:
                try:
                    self._queue.put_nowait(task)
                except queue.Full:
                    self.counters["dropped_moves"] += 1
                    logger.warning("flexcache: store queue full; dropped moving %s to the %s tier",
                                   key, self.tiers[index].name)
                    return False
            else:
                self._inline.append(task)
            located.pending += 1
            self._in_flight += 1
            if promotion:
                self.counters["promotions"] += 1
            elif not demotion:
                self.counters["write_behind"] += 1
            return True

    def _execute(self, task: tuple) -> None:
        # The task carries the entry version it copies: a put that replaced
        # the key meanwhile makes it a no-op instead of writing stale bytes.
        _, index, key, blob, meta, owner = task
        try:
            while index < len(self.tiers):
                if self._write(index, key, blob, meta, owner=owner):
                    break
                with self._lock:
                    located = self._located.get(key)
                    homeless = located is owner and not located.tiers
                if not homeless:  # a copy that failed; the entry still lives elsewhere
                    break
                index += 1  # a demotion this tier cannot take: carry it further down
        finally:
            with self._lock:
                owner.pending = max(0, owner.pending - 1)
                self._in_flight -= 1
                self._idle.notify_all()
            self._forget_if_homeless(key, owner=owner)
            self._flush_evictions()

    def _run(self) -> None:
        while True:
            task = self._queue.get()
            if task is None:
                return
            try:
                self._execute(task)
            except Exception:
                logger.exception("flexcache: background store task failed")

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until no background move is pending (tests, shutdown, benchmarks)."""
        if not self._background:
            while self._inline:
                self._execute(self._inline.pop(0))
            return True
        with self._idle:
            return self._idle.wait_for(lambda: self._in_flight == 0, timeout=timeout)

    def close(self) -> None:
        """Finish pending moves, stop the worker and close every tier."""
        if self._closed:
            return
        self._closed = True
        self.drain(timeout=30)
        if self._worker is not None:
            self._queue.put(None)
            self._worker.join(timeout=30)
        for tier in self.tiers:
            tier.close()
