"""Shared pools and the defences of reuse across users (arXiv 2508.20424; README, "Threat model").

A request is made by a user of a tenant; entries are searched in the
tenant's namespace, or its pool's when `sharing.pools` puts it in one. Every
entry records its writer. Reuse by its writer is unrestricted; reuse by any
other user passes `SharingGuard.ceiling`:

* corroboration: served to others only once ``min_askers`` distinct users
  (the writer included) asked for near-duplicates of its prompt, so one attacker
  identity learns nothing from hits, K or latency, and two colluding
  parties cannot signal through what the cache holds;
* a depth cap: at most ``cross_user_max_fraction`` of N skipped, so what
  the writer's run put into the latent beyond the prompt is regenerated,
  until the entry is vouched for: ``vouches_required`` other users resumed
  from it at the cap with near-duplicate prompts, and their own runs, which
  regenerated everything past the cap, came out close to the entry's
  latents (a planted mark makes them diverge: `vouch`);
* entries of earlier versions (no writer) serve their tenant's default user only.

Writes pass `SharingGuard.may_store` (per-user quota and rate). Counts of
askers live in this process: a fleet over a shared tier counts per process,
which withholds more, never less.
"""

from __future__ import annotations

import math
import secrets
import threading
import time
from collections import Counter, deque
from typing import Any

from flexcache.core.config import SharingConfig
from flexcache.core.errors import InvalidPromptError
from flexcache.core.types import TENANT_PATTERN
from flexcache.engine.records import PromptRecord

# Pool partitions are named with a character no tenant name may hold: they never collide.
POOL_PREFIX = "pool:"


def check_identity(tenant: str, user: str | None, allowed_tenants: tuple[str, ...] = ()) -> str:
    """The request's user id (`user`, or the tenant when None), checked.

    Raises:
        InvalidPromptError: a tenant or user outside 1-64 characters of [A-Za-z0-9_-], or a tenant
            not among `allowed_tenants` when those are given.
    """
    if not isinstance(tenant, str) or TENANT_PATTERN.fullmatch(tenant) is None:
        raise InvalidPromptError(f"tenant must be 1-64 characters of [A-Za-z0-9_-]; got {tenant!r}")
    if allowed_tenants and tenant not in allowed_tenants:
        raise InvalidPromptError(f"tenant {tenant!r} is not one of sharing.tenants {list(allowed_tenants)}; "
                                 "declare it there")
    if user is None:
        return tenant
    if not isinstance(user, str) or TENANT_PATTERN.fullmatch(user) is None:
        raise InvalidPromptError(f"user must be 1-64 characters of [A-Za-z0-9_-]; got {user!r}")
    return user


def identity_of(tenant: str, user: str) -> str:
    return f"{tenant}/{user}"


def writer_identity(record: PromptRecord) -> str:
    """Who wrote a record; an entry of an earlier version (no writer) is its tenant's default user's."""
    return identity_of(record.tenant, record.writer or record.tenant)


class SharingGuard:
    """Namespaces and the cross-user defences of one cache (`sharing` config). Thread-safe."""

    def __init__(self, config: SharingConfig) -> None:
        self.config = config
        self._pool_of = {tenant: pool.name for pool in config.pools for tenant in pool.tenants}
        self._lock = threading.Lock()
        self._entries_by_writer: Counter[str] = Counter()
        self._runs_by_writer: dict[str, deque[float]] = {}
        self.counters = {"cross_user_candidates": 0, "withheld_unconfirmed": 0, "withheld_legacy": 0,
                         "capped": 0, "vouches": 0, "accusations": 0, "quota_refused": 0, "rate_refused": 0,
                         "randomized": 0}

    def namespace(self, tenant: str) -> str:
        """The index partition a tenant's requests search and its entries join."""
        pool = self._pool_of.get(tenant)
        return tenant if pool is None else POOL_PREFIX + pool

    # -- reading -----------------------------------------------------------------

    def ceiling(self, record: PromptRecord, requester: str, *, matches: bool, similarity: float,
                num_steps: int) -> int | None:
        """The deepest step `requester` may skip from `record`: N for its own, None for none (lock held).

        `matches`: whether the request would hit `record` undefended; one whose
        full prompt is a near-duplicate (`similarity`) counts as an asker.
        """
        writer = writer_identity(record)
        if writer == requester:
            return num_steps
        if not matches:
            return None
        with self._lock:
            self.counters["cross_user_candidates"] += 1
            if record.writer is None:
                self.counters["withheld_legacy"] += 1
                return None
            if self.config.min_askers > 1:
                if len(record.askers) < self.config.min_askers and similarity >= self.config.near_duplicate:
                    record.askers.add(requester)
                if len(record.askers | {writer}) < self.config.min_askers:
                    self.counters["withheld_unconfirmed"] += 1
                    return None
            if self.vouched(record):
                return num_steps
            cap = math.floor(self.config.cross_user_max_fraction * num_steps + 1e-9)
            if cap < num_steps:
                self.counters["capped"] += 1
            return cap

    def vouched(self, record: PromptRecord) -> bool:
        required = self.config.vouches_required
        return required > 0 and len(record.vouches) - len(record.accusations) >= required

    def wants_vouch(self, record: PromptRecord, requester: str, similarity: float | None,
                    region: str | None) -> bool:
        """Whether a run resumed from `record` should vouch (or not) for it (lock held)."""
        config = self.config
        return (config.vouches_required > 0 and config.cross_user_max_fraction < 1.0 and region is None
                and record.writer is not None and writer_identity(record) != requester
                and similarity is not None and similarity >= config.near_duplicate
                and requester not in record.vouches and requester not in record.accusations
                and not self.vouched(record))

    def judge(self, record: PromptRecord, requester: str, distance: float, step: int, num_steps: int) -> bool:
        """Record `requester`'s verdict on `record` from the distance of their latents at `step` (lock held)."""
        agrees = distance <= self.config.vouch_max_distance * step / (num_steps / 2)
        (record.vouches if agrees else record.accusations).add(requester)
        with self._lock:
            self.counters["vouches" if agrees else "accusations"] += 1
        return agrees

    def choose(self, candidates: list[tuple], requester: str) -> tuple | None:
        """The whole-latent candidate to serve: the best ``(step, similarity, record, ...)``, the
        requester's own on a tie, or one at random near the best."""
        if not candidates:
            return None
        best = max(candidates, key=lambda c: (c[0], c[1], writer_identity(c[2]) == requester, -c[2].record_id))
        window = self.config.randomize_within
        if window <= 0:
            return best
        near = [c for c in candidates if c[0] == best[0] and c[1] >= best[1] - window]
        if len(near) > 1:
            with self._lock:
                self.counters["randomized"] += 1
            return near[secrets.randbelow(len(near))]
        return best

    # -- writing -----------------------------------------------------------------

    def may_store(self, writer: str, new_entries: int) -> bool:
        """Whether `writer` may store a run of `new_entries` entries now (quota and rate); counts refusals."""
        quota, rate = self.config.user_max_entries, self.config.user_inserts_per_minute
        with self._lock:
            if quota and self._entries_by_writer[writer] + new_entries > quota:
                self.counters["quota_refused"] += 1
                return False
            if rate:
                now = time.monotonic()
                runs = self._runs_by_writer.setdefault(writer, deque())
                while runs and runs[0] <= now - 60.0:
                    runs.popleft()
                if len(runs) >= rate:
                    self.counters["rate_refused"] += 1
                    return False
                runs.append(now)
        return True

    def stored(self, record: PromptRecord, count: int = 1) -> None:
        """Entries of `record` became servable (inserted or adopted)."""
        with self._lock:
            self._entries_by_writer[writer_identity(record)] += count

    def forgot(self, record: PromptRecord) -> None:
        """One entry of `record` left the cache."""
        writer = writer_identity(record)
        with self._lock:
            left = self._entries_by_writer[writer] - 1
            if left > 0:
                self._entries_by_writer[writer] = left
            else:
                self._entries_by_writer.pop(writer, None)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {**self.counters, "writers": len(self._entries_by_writer)}
