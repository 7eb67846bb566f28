"""Replacement policies: which entry leaves first under capacity pressure.

All policies share one small interface; the engine tells a policy about
inserts, accesses and removals and asks it for the next victim.

* ``lru``: least recently used first.
* ``lcbfu``: NIRVANA's Least Computationally Beneficial and Frequently Used
  (NSDI'24, section 4.3): evict the lowest ``K x access frequency`` first, so
  shallow, rarely used latents go before deep, popular ones. Frequency counts
  the insertion as one use; ties go to the least recently used.
"""

from __future__ import annotations

import abc
from collections import OrderedDict

from flexcache.engine.entry import CacheEntry
from flexcache.errors import ConfigError


class ReplacementPolicy(abc.ABC):
    name: str

    @abc.abstractmethod
    def on_insert(self, entry: CacheEntry) -> None: ...

    @abc.abstractmethod
    def on_access(self, entry: CacheEntry) -> None: ...

    @abc.abstractmethod
    def on_remove(self, key: str) -> None: ...

    @abc.abstractmethod
    def victim(self) -> str | None:
        """Key of the entry to evict next, or None when the policy tracks nothing."""

    @abc.abstractmethod
    def __len__(self) -> int: ...


class LRUPolicy(ReplacementPolicy):
    name = "lru"

    def __init__(self) -> None:
        self._order: OrderedDict[str, None] = OrderedDict()

    def on_insert(self, entry: CacheEntry) -> None:
        self._order[entry.key] = None
        self._order.move_to_end(entry.key)

    def on_access(self, entry: CacheEntry) -> None:
        if entry.key in self._order:
            self._order.move_to_end(entry.key)

    def on_remove(self, key: str) -> None:
        self._order.pop(key, None)

    def victim(self) -> str | None:
        return next(iter(self._order), None)

    def __len__(self) -> int:
        return len(self._order)


class LCBFUPolicy(ReplacementPolicy):
    name = "lcbfu"

    def __init__(self) -> None:
        self._entries: dict[str, CacheEntry] = {}
        self._clock = 0
        self._last_use: dict[str, int] = {}

    @staticmethod
    def score(entry: CacheEntry) -> int:
        return entry.step * (entry.hits + 1)

    def _touch(self, key: str) -> None:
        self._clock += 1
        self._last_use[key] = self._clock

    def on_insert(self, entry: CacheEntry) -> None:
        self._entries[entry.key] = entry
        self._touch(entry.key)

    def on_access(self, entry: CacheEntry) -> None:
        if entry.key in self._entries:
            self._touch(entry.key)

    def on_remove(self, key: str) -> None:
        self._entries.pop(key, None)
        self._last_use.pop(key, None)

    def victim(self) -> str | None:
        if not self._entries:
            return None
        # O(n) scan: fine for the entry counts one store holds (tens of thousands).
        return min(self._entries, key=lambda k: (self.score(self._entries[k]), self._last_use[k]))

    def __len__(self) -> int:
        return len(self._entries)


POLICY_REGISTRY: dict[str, type[ReplacementPolicy]] = {
    LRUPolicy.name: LRUPolicy,
    LCBFUPolicy.name: LCBFUPolicy,
}


def build_policy(name: str) -> ReplacementPolicy:
    try:
        return POLICY_REGISTRY[name]()
    except KeyError:
        raise ConfigError(f"unknown replacement policy {name!r}; choose one of {', '.join(POLICY_REGISTRY)}") from None
