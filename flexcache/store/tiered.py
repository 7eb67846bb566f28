"""An ordered stack of tiers (fastest first) behind one put/get/remove: the one owner of residency.

The store alone knows which tiers hold which version of a key. Each tier sits
in a slot beside the replacement policy that ranks its copies and the bytes
the store has charged to it; a tier's own dict is only its physical state.

Placement rules:

* A new entry is written to the fastest tier that takes it; copies to the
  persistent and shared tiers below it are made in the background
  (write-behind), so a restart or another process finds it once that copy is
  committed.
* A hit in a slower tier is served from there and promoted (copied up) in the
  background.
* Under capacity pressure a tier picks victims with its own replacement
  policy. A victim that has a copy in a lower tier just loses this copy; one
  that has none is demoted (its blob handed to the background worker for the
  next tier) or, from the last tier, evicted.
* A pinned key (`pin`, reference-counted) is never a victim in any tier; when
  only pinned entries are left, the tier refuses the write like a full tier.
* Background work goes through one bounded queue. When it is full the move is
  dropped and counted (back-pressure); the request that triggered it never
  waits. A dropped demotion of an entry with no other copy is an eviction.

Locks: one short lock guards the bookkeeping. Room is made and reserved under
it (victims chosen, their bytes released, the key marked busy in that tier),
and every tier call (writes, the reads of a demotion, removals) runs outside
it, so `get` and `pin` never wait on another request's I/O. A key is busy in a
tier while any call on it there is in flight; a write to a busy (tier, key)
waits for it, so an old version's removal can never delete a new version.

The store tells its owner about entries that left every tier through
`on_evicted(key, token)`, with the opaque token given to `put` or `adopt`, so
an owner that re-inserted the key meanwhile can tell the notice is not about
its new entry.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from flexcache.core.blob import Blob, blob_nbytes
from flexcache.core.errors import CapacityError, FlexCacheError
from flexcache.store.base import Tier, TierStats
from flexcache.store.moves import MoveQueue
from flexcache.store.policy import ReplacementPolicy, build_policy
from flexcache.store.residency import Excluding, Slot, Version

logger = logging.getLogger(__name__)

WRITE_WAIT_S = 1.0  # how long a put that found no room waits for writes in flight before giving up


class TieredStore:
    """Tiers ordered fastest first, each with its own capacity and policy.

    Args:
        tiers: the tiers, fastest first.
        policy: replacement policy name for every tier.
        queue_size: background tasks that may wait.
        on_evicted: called (outside the store lock) with ``(key, token)`` once
            no tier holds that version of the key any more.
        background: run moves on a worker thread (False runs them inline at
            `drain`, for deterministic tests and tools).

    Example:
        >>> from flexcache.store.memory import MemoryTier
        >>> store = TieredStore([MemoryTier(1000)], background=False)
        >>> store.put("t.00c0ffee", b"blob", b"meta", step=5)
        >>> store.get("t.00c0ffee"), store.tiers_of("t.00c0ffee")
        (b'blob', ['memory'])
    """

    def __init__(self, tiers: Sequence[Tier], *, policy: str = "lcbfu", queue_size: int = 256,
                 on_evicted: Callable[[str, Any], None] | None = None, background: bool = True) -> None:
        if not tiers:
            raise CapacityError("a store needs at least one tier")
        self._slots = [Slot(index, tier, build_policy(policy)) for index, tier in enumerate(tiers)]
        self.on_evicted = on_evicted or (lambda key, token: None)
        # Optional owner hooks, called outside the lock: a copy landed in / left a tier.
        self.on_placed: Callable[[str, int, bytes], None] | None = None
        self.on_left: Callable[[str, int], None] | None = None
        self._versions: dict[str, Version] = {}
        self._pins: dict[str, int] = {}  # key -> pin count; pinned keys are never victims
        self._lock = threading.Lock()
        self.counters = {"promotions": 0, "demotions": 0, "evictions": 0, "write_behind": 0,
                         "dropped_moves": 0, "tier_errors": 0, "stale_victims": 0, "callback_errors": 0}
        self.failing_callbacks: dict[str, str] = {}  # notice kind -> its callback's last error, while it fails
        self._moves = MoveQueue(self._execute, queue_size, background=background)
        self._overflowing = False  # the queue refused the last move (one warning per overflow)
        self._closed = False

    # -- queries -------------------------------------------------------------------

    @property
    def tiers(self) -> list[Tier]:
        return [slot.tier for slot in self._slots]

    @property
    def policies(self) -> list[ReplacementPolicy]:
        """Each tier's policy, in tier order (read-only: the store drives them)."""
        return [slot.policy for slot in self._slots]

    @property
    def capacity_bytes(self) -> int:
        return sum(slot.tier.capacity_bytes for slot in self._slots)

    @property
    def bytes_used(self) -> int:
        """Blob bytes of the copies the store placed, over every tier (no tier call)."""
        with self._lock:
            return sum(slot.stored for slot in self._slots)

    def largest_fit(self) -> int:
        """The capacity of the largest tier (a blob must also fit its framing there: `can_hold`)."""
        return max(slot.tier.capacity_bytes for slot in self._slots)

    def can_hold(self, nbytes: int) -> bool:
        """Whether some tier could hold a blob of `nbytes` when empty."""
        return any(slot.footprint(nbytes) <= slot.tier.capacity_bytes for slot in self._slots)

    def contains(self, key: str) -> bool:
        with self._lock:
            return key in self._versions

    def tiers_of(self, key: str) -> list[str]:
        """Names of the tiers holding a committed copy of `key`, fastest first."""
        with self._lock:
            version = self._versions.get(key)
            return [self._slots[i].tier.name for i in sorted(version.tiers)] if version else []

    def residency(self) -> dict[str, tuple[int, ...]]:
        """A snapshot: every key the store holds -> the indexes of the tiers with a committed copy."""
        with self._lock:
            return {key: tuple(sorted(version.tiers)) for key, version in self._versions.items()}

    def tier_stats(self) -> list[TierStats]:
        return [slot.tier.stats() for slot in self._slots]

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
            >>> from flexcache.store.memory import MemoryTier
            >>> store = TieredStore([MemoryTier(1000)], background=False)
            >>> with store.pinned("some-key"):
            ...     pass  # read and decode the entry; it cannot be evicted meanwhile
        """
        with self._lock:
            self._pins[key] = self._pins.get(key, 0) + 1
            version = self._versions.get(key)
            return version is not None and bool(version.tiers)

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

    def put(self, key: str, blob: Blob, meta: bytes = b"", *, step: int = 0, token: Any = None) -> None:
        """Store a new version of `key` in the fastest tier that takes it; copy it down in the background.

        Args:
            key: the store key.
            blob: bytes, or a `DeviceBlob` (kept on the device by a device-resident tier).
            meta: the entry's description, stored beside the blob.
            step: the denoising step the blob follows (what the policies weigh a hit by).
            token: an owner's reference, handed back with the eviction notice.

        Raises:
            CapacityError: the blob is larger than every tier, or no tier could store it now.
        """
        nbytes = blob_nbytes(blob)
        if not self.can_hold(nbytes):
            raise CapacityError(f"a blob of {nbytes} bytes is larger than every tier "
                                f"({self.largest_fit()} bytes at most); raise the tier capacities")
        version = Version(key, step, nbytes, meta=bytes(meta), token=token)
        notices: list[tuple] = []
        with self._lock:
            old = self._versions.get(key)
            self._versions[key] = version
            removals = self._release_copies_locked(old)
        self._remove_copies(key, removals, notices)  # a replaced version leaves no copy behind
        placed = None
        deadline = time.monotonic() + WRITE_WAIT_S
        while True:
            placed = next((i for i in range(len(self._slots)) if self._write(i, version, blob, notices)), None)
            with self._lock:
                # Writes and removals in flight hold room they will soon give back, and a busy
                # (tier, key) blocks a tier: wait for them rather than report a full store.
                blocked = (placed is None and self._versions.get(key) is version
                           and any(slot.busy or slot.reserved for slot in self._slots))
            if not blocked or time.monotonic() > deadline:
                break
            time.sleep(0.001)
        if placed is None:
            with self._lock:
                superseded = self._versions.get(key) is not version  # a concurrent put or remove won
                if not superseded:
                    self._forget_if_homeless_locked(version, notices)
            self._dispatch(notices)
            if superseded:
                return
            raise CapacityError(f"no tier could store {key} ({nbytes} bytes); see the tier errors in stats()")
        for index in range(placed + 1, len(self._slots)):
            if self._slots[index].tier.persistent or self._slots[index].tier.shared:
                with self._lock:
                    if self._queue_move_locked(("copy", index, version, blob)):
                        self.counters["write_behind"] += 1
        self._dispatch(notices)

    def _write(self, index: int, version: Version, blob: Blob, notices: list[tuple]) -> bool:
        """Make room in tier `index` and write `version` there; False when it cannot take it now.

        Victims are chosen and the room reserved under the lock; their removal
        (and a demotion's read) and the write itself run outside it. A write
        that turns out stale (the key was replaced or removed meanwhile) is undone.
        """
        slot = self._slots[index]
        key = version.key
        footprint = slot.footprint(version.nbytes)
        if footprint > slot.tier.capacity_bytes:
            return False
        with self._lock:
            if self._versions.get(key) is not version:  # removed or replaced meanwhile
                return False
            if index in version.tiers:
                return True
            if key in slot.busy:  # another call on this key is in flight there
                return False
            victims, enough = self._choose_victims_locked(slot, footprint, protect=key)
            if enough:
                slot.reserved += footprint
                slot.busy.add(key)
        self._clear_victims(slot, victims, notices)
        if not enough:
            return False
        written = False
        try:
            slot.tier.put(key, blob, version.meta)
            written = True
        except FlexCacheError as exc:
            # One warning per outage: a tier that is down refuses every write until it is back.
            first = not slot.refusing
            slot.refusing = True
            logger.log(logging.WARNING if first else logging.DEBUG, "flexcache: %s tier refused %s: %s%s",
                       slot.tier.name, key, exc, " (further refusals are logged at debug level until it takes a "
                       "write)" if first else "")
        if written and slot.refusing:
            slot.refusing = False
            logger.warning("flexcache: %s tier takes writes again", slot.tier.name)
        with self._lock:
            slot.reserved -= footprint
            current = self._versions.get(key) is version
            if written and current:
                slot.busy.discard(key)
                self._charge_locked(slot, version)
                notices.append(("placed", key, index, version.meta))
                return True
            if not written:
                slot.busy.discard(key)
                self.counters["tier_errors"] += 1
                return False
        try:  # stale: the key is still busy here, so no newer write can be undone by mistake
            slot.tier.remove(key)
        except FlexCacheError as exc:
            logger.warning("flexcache: %s tier kept a stale copy of %s: %s", slot.tier.name, key, exc)
        finally:
            with self._lock:
                slot.busy.discard(key)
        return False

    def _choose_victims_locked(self, slot: Slot, footprint: int, protect: str) -> tuple[list, bool]:
        """Release copies in `slot` by its policy until `footprint` fits; ``(victims, whether it fits)``.

        Neither `protect` (the key being written) nor a pinned key is chosen.
        The victims leave the slot's accounting and its policy at once; their
        removal is left to `_clear_victims`, outside the lock. When the room
        cannot be made, the victims chosen so far still leave (as a full tier
        always did).
        """
        keep = Excluding(protect, self._pins)
        victims: list[tuple[Version, bool]] = []
        while slot.free() < footprint:
            key = slot.policy.victim(exclude=keep)
            if key is None:
                return victims, False
            slot.policy.on_remove(key)
            version = self._versions.get(key)
            if version is None or slot.index not in version.tiers:
                # The policy and the residency change together under this lock, so this cannot
                # happen; if it ever does, drop the name rather than fail the write that needs room.
                self.counters["stale_victims"] += 1
                logger.error("flexcache: %s tier policy named %s, which the store does not place there",
                             slot.tier.name, key)
                continue
            self._uncharge_locked(slot, version)
            version.leaving.add(slot.index)
            slot.busy.add(key)
            demote = slot.index + 1 < len(self._slots) and not any(i > slot.index for i in version.tiers)
            if demote:
                version.pending += 1  # held until the demotion is queued or given up
            victims.append((version, demote))
        return victims, True

    def _clear_victims(self, slot: Slot, victims: list, notices: list[tuple]) -> None:
        """Remove the chosen victims from `slot` (reading each demoted one first); no lock held."""
        for version, demote in victims:
            key, blob = version.key, None
            try:
                if demote:
                    blob = slot.tier.get(key)
                slot.tier.remove(key)
            except FlexCacheError as exc:
                with self._lock:
                    self.counters["tier_errors"] += 1
                logger.warning("flexcache: %s tier could not let %s go: %s", slot.tier.name, key, exc)
            with self._lock:
                slot.busy.discard(key)
                version.leaving.discard(slot.index)
                notices.append(("left", key, slot.index))
                if demote:
                    queued = (blob is not None and self._versions.get(key) is version
                              and self._queue_move_locked(("copy", slot.index + 1, version, blob), held=True))
                    if queued:
                        self.counters["demotions"] += 1
                    else:
                        version.pending -= 1
                self._forget_if_homeless_locked(version, notices)

    def _charge_locked(self, slot: Slot, version: Version) -> None:
        """A committed copy of `version` in `slot`: placed, charged, ranked by the slot's policy."""
        version.tiers.add(slot.index)
        slot.charged += slot.footprint(version.nbytes)
        slot.stored += version.nbytes
        slot.policy.on_insert(version)

    def _uncharge_locked(self, slot: Slot, version: Version) -> None:
        version.tiers.discard(slot.index)
        slot.charged -= slot.footprint(version.nbytes)
        slot.stored -= version.nbytes

    def _release_copies_locked(self, version: Version | None) -> list[int]:
        """Take `version`'s committed copies out of the bookkeeping; returns the tiers to remove them from."""
        if version is None:
            return []
        removals = []
        for index in sorted(version.tiers):
            slot = self._slots[index]
            slot.policy.on_remove(version.key)
            self._uncharge_locked(slot, version)
            slot.busy.add(version.key)
            removals.append(index)
        return removals

    def _remove_copies(self, key: str, removals: list[int], notices: list[tuple], *,
                       quarantine: bool = False) -> None:
        """Delete (or quarantine) the copies `_release_copies_locked` let go of; no lock held."""
        for index in removals:
            slot = self._slots[index]
            try:
                (slot.tier.quarantine if quarantine else slot.tier.remove)(key)
            except FlexCacheError as exc:
                logger.warning("flexcache: %s tier could not remove %s: %s", slot.tier.name, key, exc)
            finally:
                with self._lock:
                    slot.busy.discard(key)
                    notices.append(("left", key, index))

    def _forget_if_homeless_locked(self, version: Version, notices: list[tuple]) -> None:
        """Forget `version` when no tier holds it and no move or removal is pending (lock held).

        Only that version: a newer one, registered meanwhile with its first
        write still in flight, also has no tier yet and must not be forgotten.
        """
        if self._versions.get(version.key) is not version:
            return
        if version.tiers or version.leaving or version.pending:
            return
        del self._versions[version.key]
        self.counters["evictions"] += 1
        notices.append(("evicted", version.key, version.token))

    def _dispatch(self, notices: list[tuple]) -> None:
        """Tell the owner what happened, never while holding the store lock.

        The owner's callbacks take its own lock, and may publish to a shared
        tier: under ours they could deadlock, or hold up every reader.
        """
        for notice in notices:
            try:
                if notice[0] == "evicted":
                    self.on_evicted(notice[1], notice[2])
                elif notice[0] == "placed" and self.on_placed is not None:
                    self.on_placed(*notice[1:])
                elif notice[0] == "left" and self.on_left is not None:
                    self.on_left(*notice[1:])
            except Exception as exc:  # a bookkeeping callback must not break the store: count it, report it
                with self._lock:
                    self.counters["callback_errors"] += 1
                self.failing_callbacks[notice[0]] = f"{type(exc).__name__}: {exc}"
                logger.exception("flexcache: store callback failed for %s", notice[1])
            else:
                self.failing_callbacks.pop(notice[0], None)
        notices.clear()

    def remove(self, key: str, *, quarantine: bool = False) -> bool:
        """Remove every copy of `key`; True when it was stored.

        `quarantine`: the blob was found damaged; each tier holding a copy takes it out of service its
        own way (`Tier.quarantine`: disk and Redis keep it aside for inspection, others remove it).
        """
        with self._lock:
            version = self._versions.pop(key, None)
            if version is None:
                return False
            removals = self._release_copies_locked(version)
        notices: list[tuple] = []
        self._remove_copies(key, removals, notices, quarantine=quarantine)
        self._dispatch(notices)
        return True

    # -- reads --------------------------------------------------------------------

    def get(self, key: str, *, device: Any = None) -> Blob | None:
        """The blob from the fastest tier holding a good copy; promotes it in the background.

        Args:
            device: where the caller will decode. A device-resident tier hands
                over its own `DeviceBlob` for that device, with no host copy; a
                host tier may copy straight to it. None: host bytes.
        """
        with self._lock:
            version = self._versions.get(key)
            order = sorted(version.tiers | version.leaving) if version else []
        notices: list[tuple] = []
        for index in order:
            slot = self._slots[index]
            blob = slot.tier.get(key, device=device) if device is not None else slot.tier.get(key)
            with self._lock:
                current = self._versions.get(key) is version
                if blob is None:  # corrupt (quarantined by the tier) or vanished
                    if current and index in version.tiers and key not in slot.busy:
                        slot.policy.on_remove(key)
                        self._uncharge_locked(slot, version)
                        notices.append(("left", key, index))
                        self._forget_if_homeless_locked(version, notices)
                    continue
                if current:
                    version.hits += 1
                    slot.policy.on_access(version)
                    if index > 0 and 0 not in version.tiers and self._queue_move_locked(("copy", 0, version, blob)):
                        self.counters["promotions"] += 1
            self._dispatch(notices)
            return blob
        self._dispatch(notices)
        return None

    # -- adoption (restart, other processes) ---------------------------------------

    def adopt(self, key: str, meta: bytes, tier_index: int, *, step: int, nbytes: int, token: Any = None) -> None:
        """Record that tier `tier_index` already holds `key` (found by a scan or an event)."""
        with self._lock:
            version = self._versions.get(key)
            if version is None:
                version = self._versions[key] = Version(key, step, nbytes, meta=bytes(meta), token=token)
            slot = self._slots[tier_index]
            if tier_index not in version.tiers and tier_index not in version.leaving and key not in slot.busy:
                self._charge_locked(slot, version)

    def disown(self, key: str, tier_index: int) -> None:
        """Forget tier `tier_index`'s copy (another process evicted it there)."""
        notices: list[tuple] = []
        with self._lock:
            version = self._versions.get(key)
            if version is None or tier_index not in version.tiers:
                return
            slot = self._slots[tier_index]
            slot.policy.on_remove(key)
            self._uncharge_locked(slot, version)
            self._forget_if_homeless_locked(version, notices)
        self._dispatch(notices)

    # -- background work ----------------------------------------------------------

    def _queue_move_locked(self, task: tuple, *, held: bool = False) -> bool:
        """Queue a move of the task's version (lock held); False when the queue is full and it is dropped.

        `held`: the version's pending count already includes this move.
        """
        _, index, version, _ = task
        if not self._moves.offer(task):
            self.counters["dropped_moves"] += 1
            # One warning per overflow: under sustained pressure every insert would log one.
            first = not self._overflowing
            self._overflowing = True
            logger.log(logging.WARNING if first else logging.DEBUG,
                       "flexcache: store queue full; dropped moving %s to the %s tier%s", version.key,
                       self._slots[index].tier.name, " (further drops are counted in stats()['store'] and logged at "
                       "debug level until the queue takes a move)" if first else "")
            return False
        self._overflowing = False
        if not held:
            version.pending += 1
        return True

    def _execute(self, task: tuple) -> None:
        # The task carries the version it copies: a put that replaced the key
        # meanwhile makes it a no-op instead of writing stale bytes.
        _, index, version, blob = task
        notices: list[tuple] = []
        try:
            while index < len(self._slots):
                if self._write(index, version, blob, notices):
                    break
                with self._lock:
                    homeless = self._versions.get(version.key) is version and not version.tiers
                if not homeless:  # a copy that failed; the entry still lives elsewhere
                    break
                index += 1  # a demotion this tier cannot take: carry it further down
        finally:
            with self._lock:
                version.pending = max(0, version.pending - 1)
                self._forget_if_homeless_locked(version, notices)
            self._dispatch(notices)
            self._moves.done()

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until no background move is pending (tests, shutdown, benchmarks)."""
        return self._moves.drain(timeout)

    def close(self) -> None:
        """Finish pending moves, stop the worker and close every tier."""
        if self._closed:
            return
        self._closed = True
        self._moves.close()
        for slot in self._slots:
            slot.tier.close()
