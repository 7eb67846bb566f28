"""Replacement policies: which entry leaves first under capacity pressure.

All policies share one small interface; the store tells a policy about
inserts, accesses and removals and asks it for the next victim. In a
`TieredStore` every tier has its own policy instance, which hears only about
the copies in its tier and the hits that tier serves.

* ``lru``: least recently used first.
* ``lcbfu``: NIRVANA's Least Computationally Beneficial and Frequently Used
  (NSDI'24, section 4.3): evict the lowest ``K x access frequency`` first, so
  shallow, rarely used latents go before deep, popular ones. Frequency counts
  the insertion as one use; ties go to the least recently used.
* ``flexcache``: evict the lowest expected compute saved per stored byte,
  ``K x recent hit rate / compressed bytes``, where the hit rate decays with a
  half-life on a logical clock; see `FlexCachePolicy`.
"""

from __future__ import annotations

import abc
import heapq
import math
from collections import OrderedDict
from collections.abc import Container
from dataclasses import dataclass
from typing import Any

from flexcache.core.errors import ConfigError

_NOTHING: frozenset[str] = frozenset()


@dataclass(eq=False)
class RankedEntry:
    """What a policy knows of one stored entry.

    Args:
        key: the entry's store key.
        step: the denoising step the latent was captured after: the steps a hit on it skips.
        nbytes: the stored blob's length.
        hits: reads the store served of it, in any tier (the store counts them).

    The store hands its own records (a subclass) to the policies; this plain
    form is for tools and tests.
    """

    key: str
    step: int
    nbytes: int
    hits: int = 0


class RankHeap:
    """The key of the lowest rank among tracked keys, in O(log n) a change: a heap with lazy deletion.

    Each `set` pushes the key's new rank; entries whose rank is no longer
    the key's current one are dropped when they reach the top. Ranks are
    unique tuples (the policies end them with an event clock), so the
    minimum is the one an O(n) scan would find. A rank that can rise
    without an event (LCBFU reads the entry's live hit count) is passed as
    `refresh`: `lowest` re-ranks a top entry whose rank rose, which finds the
    true minimum as long as ranks only rise between events.
    """

    def __init__(self) -> None:
        self._rank: dict[str, tuple] = {}
        self._heap: list[tuple[tuple, str]] = []

    def set(self, key: str, rank: tuple) -> None:
        self._rank[key] = rank
        heapq.heappush(self._heap, (rank, key))
        if len(self._heap) > 2 * len(self._rank) + 64:  # too many stale entries: rebuild
            self._heap = [(r, k) for k, r in self._rank.items()]
            heapq.heapify(self._heap)

    def discard(self, key: str) -> None:
        self._rank.pop(key, None)

    def lowest(self, exclude: Container[str] = _NOTHING, refresh=None) -> str | None:
        heap, held = self._heap, []
        found = None
        while heap:
            rank, key = heap[0]
            if self._rank.get(key) != rank:
                heapq.heappop(heap)  # stale: the key changed rank or left
                continue
            if refresh is not None and (current := refresh(key)) != rank:
                self.set(key, current)  # its rank rose since it was pushed: compare it at its real rank
                continue
            if key in exclude:
                held.append(heapq.heappop(heap))
                continue
            found = key
            break
        for item in held:
            heapq.heappush(heap, item)
        return found

    def __len__(self) -> int:
        return len(self._rank)


class ReplacementPolicy(abc.ABC):
    name: str

    @abc.abstractmethod
    def on_insert(self, entry: RankedEntry) -> None:
        """Track `entry` (a tracked key is re-inserted as a new entry)."""

    @abc.abstractmethod
    def on_access(self, entry: RankedEntry) -> None:
        """One hit on `entry`; ignored when its key is not tracked."""

    @abc.abstractmethod
    def on_remove(self, key: str) -> None:
        """Stop tracking `key`; unknown keys are ignored."""

    @abc.abstractmethod
    def victim(self, exclude: Container[str] = _NOTHING) -> str | None:
        """Key of the entry to evict next, or None when the policy tracks nothing else.

        Args:
            exclude: keys that must not be chosen (pinned entries, the entry
                being written); they keep their place and their history.
        """

    @abc.abstractmethod
    def __len__(self) -> int: ...


class LRUPolicy(ReplacementPolicy):
    name = "lru"

    def __init__(self) -> None:
        self._order: OrderedDict[str, None] = OrderedDict()

    def on_insert(self, entry: RankedEntry) -> None:
        self._order[entry.key] = None
        self._order.move_to_end(entry.key)

    def on_access(self, entry: RankedEntry) -> None:
        if entry.key in self._order:
            self._order.move_to_end(entry.key)

    def on_remove(self, key: str) -> None:
        self._order.pop(key, None)

    def victim(self, exclude: Container[str] = _NOTHING) -> str | None:
        return next((key for key in self._order if key not in exclude), None)

    def __len__(self) -> int:
        return len(self._order)


class LCBFUPolicy(ReplacementPolicy):
    name = "lcbfu"

    def __init__(self) -> None:
        self._entries: dict[str, RankedEntry] = {}
        self._clock = 0
        self._last_use: dict[str, int] = {}
        # (score, last use). The score reads the entry's live hit count, which other tiers' hits raise
        # without telling this policy: `victim` refreshes a rank that rose (hit counts never fall).
        self._ranks = RankHeap()

    @staticmethod
    def score(entry: RankedEntry) -> int:
        return entry.step * (entry.hits + 1)

    def _current(self, key: str) -> tuple[int, int]:
        return (self.score(self._entries[key]), self._last_use[key])

    def _touch(self, key: str) -> None:
        self._clock += 1
        self._last_use[key] = self._clock
        self._ranks.set(key, self._current(key))

    def on_insert(self, entry: RankedEntry) -> None:
        self._entries[entry.key] = entry
        self._touch(entry.key)

    def on_access(self, entry: RankedEntry) -> None:
        if entry.key in self._entries:
            self._touch(entry.key)

    def on_remove(self, key: str) -> None:
        self._entries.pop(key, None)
        self._last_use.pop(key, None)
        self._ranks.discard(key)

    def victim(self, exclude: Container[str] = _NOTHING) -> str | None:
        return self._ranks.lowest(exclude, refresh=self._current)

    def __len__(self) -> int:
        return len(self._entries)


class FlexCachePolicy(ReplacementPolicy):
    """Evict the entry that saves the least compute per stored byte.

    An entry's value is what keeping one of its bytes is expected to save::

        value(e, t) = K_e * r_e(t) / nbytes_e
        r_e(t)      = p * d**(t - t_insert) + sum over hits i of d**(t - t_i),   d = 2**(-1 / half_life)

    where ``K_e`` is ``entry.step`` (the steps a hit skips), ``nbytes_e`` the
    compressed size, and ``r_e`` the recent hit rate: a hit count that halves
    every `half_life` events. ``t`` is a logical clock that counts this
    policy's events (inserts and accesses of tracked entries), so the order is
    deterministic and independent of wall time. The insertion counts as a
    prior of `insert_prior` hits (half a hit by default): a new entry is worth
    more than one whose hits stopped long ago, so it is not evicted at once,
    and less than one hit recently.

    Hits: an entry can be found through any of its look-up parts (full
    prompt, object part, background part); the engine reads it once per hit
    whatever part matched, and the store reports that read as one
    `on_access`. The policy only counts accesses, never which part matched.

    Victim: the lowest value; ties go to the least recently used (oldest last
    event). Decay is lazy: every entry's value decays by the same factor per
    event, so the order only changes when an entry's own event happens. Each
    entry therefore keeps one rank, ``log2(value(e, t)) + t / half_life``,
    computed at its last event and valid at every later ``t``; `victim` reads
    the lowest from a heap of those ranks (`RankHeap`) and touches no entry's state.

    Args:
        half_life: events after which a hit counts half; > 0.
        insert_prior: hits an insertion counts as; > 0.

    Raises:
        ConfigError: a non-positive or non-finite `half_life` or `insert_prior`.

    Example:
        >>> policy = FlexCachePolicy(half_life=64)
        >>> small = RankedEntry("t.00000001", step=20, nbytes=100)
        >>> large = RankedEntry("t.00000002", step=20, nbytes=600)
        >>> policy.on_insert(small); policy.on_insert(large)
        >>> policy.victim() == large.key  # same K and hits, six times the bytes
        True
    """

    name = "flexcache"

    def __init__(self, half_life: float = 64.0, insert_prior: float = 0.5) -> None:
        for label, value in (("half_life", half_life), ("insert_prior", insert_prior)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ConfigError(f"flexcache policy {label} must be a positive number; got {value!r}")
        self.half_life = float(half_life)
        self.insert_prior = float(insert_prior)
        self._clock = 0
        # Per key: log2 of the decayed hit count, referred to clock 0 (log2 r(t) + t / half_life).
        self._log_hits: dict[str, float] = {}
        self._weight: dict[str, float] = {}  # log2(K / nbytes), fixed for an entry
        self._rank: dict[str, tuple[float, int]] = {}  # (log2 value + t / half_life, last event)
        self._heap = RankHeap()

    def _record(self, key: str, log_hits: float) -> None:
        self._log_hits[key] = log_hits
        self._rank[key] = rank = (log_hits + self._weight[key], self._clock)
        self._heap.set(key, rank)

    def on_insert(self, entry: RankedEntry) -> None:
        self._clock += 1
        step, nbytes = entry.step, max(entry.nbytes, 1)
        self._weight[entry.key] = math.log2(step / nbytes) if step > 0 else -math.inf
        self._record(entry.key, self._clock / self.half_life + math.log2(self.insert_prior))

    def on_access(self, entry: RankedEntry) -> None:
        key = entry.key
        if key not in self._rank:
            return
        self._clock += 1
        now = self._clock / self.half_life
        # r(t) = r(t_last) * d**(t - t_last) + 1, in the log domain; 2**(-large) underflows to 0, as it should.
        self._record(key, now + math.log2(1.0 + 2.0 ** (self._log_hits[key] - now)))

    def on_remove(self, key: str) -> None:
        if self._rank.pop(key, None) is not None:
            del self._log_hits[key], self._weight[key]
            self._heap.discard(key)

    def hit_rate(self, key: str) -> float | None:
        """The decayed hit count ``r(t)`` of `key` at the current clock, or None if untracked."""
        log_hits = self._log_hits.get(key)
        return None if log_hits is None else 2.0 ** (log_hits - self._clock / self.half_life)

    def value(self, key: str) -> float | None:
        """``K x r(t) / nbytes`` of `key` at the current clock, or None if untracked."""
        rank = self._rank.get(key)
        return None if rank is None else 2.0 ** (rank[0] - self._clock / self.half_life)

    def victim(self, exclude: Container[str] = _NOTHING) -> str | None:
        return self._heap.lowest(exclude)

    def __len__(self) -> int:
        return len(self._rank)


POLICY_REGISTRY: dict[str, type[ReplacementPolicy]] = {
    LRUPolicy.name: LRUPolicy,
    LCBFUPolicy.name: LCBFUPolicy,
    FlexCachePolicy.name: FlexCachePolicy,
}


def build_policy(name: str, **options: Any) -> ReplacementPolicy:
    """A fresh policy by registry name.

    Args:
        name: a key of `POLICY_REGISTRY` (``"lru"``, ``"lcbfu"``, ``"flexcache"``).
        **options: constructor arguments of that policy (``half_life=`` for ``flexcache``).

    Raises:
        ConfigError: an unknown name, or options the policy does not take.

    Example:
        >>> build_policy("flexcache", half_life=32).half_life
        32.0
    """
    try:
        cls = POLICY_REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown replacement policy {name!r}; choose one of {', '.join(POLICY_REGISTRY)}") from None
    try:
        return cls(**options)
    except TypeError as exc:
        raise ConfigError(f"replacement policy {name!r} does not take {sorted(options)}: {exc}") from None
