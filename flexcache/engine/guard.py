"""Shared pools and the defences of reuse across users (arXiv 2508.20424; README, "Threat model").

A request is made by a user of a tenant; entries are searched in the
tenant's namespace, or its pool's when `sharing.pools` puts it in one. Every
entry records its writer. Reuse by its writer is unrestricted; reuse by any
other user passes `SharingGuard.ceiling`, priced by what the hit reuses and
reveals: the whole latent (a whole-latent hit) or one part of it (a region
hit keeps the object or the background and regenerates the rest):

* trusted writers (``sharing.trusted_writers``: the service's own runs) serve
  everyone at the rules' depth, save what their runs resumed from another
  writer's entry (``record.borrowed``);
* corroboration: served to others only once ``min_askers`` distinct users other
  than the writer asked for what the hit reuses (the whole prompt, or that
  part), so an attacker with fewer identities learns nothing from hits, K,
  latency or the video, and fewer colluders cannot signal through the cache;
* content that does not follow the entry's text (caller-supplied conditioning:
  ``insert(..., text_conditioned=False)``, and entries of earlier versions)
  serves others no deeper than ``cross_user_max_fraction`` of N, so a mark
  planted beyond the prompt is regenerated, until the entry is vouched for:
  ``vouches_required`` other users resumed from it at the cap with
  near-duplicate prompts, and their own runs came out close to its latents;
* the containment gate: a source text (or kept part) holding words the request
  does not ask for is capped the same way (`engine.containment`);
* entries of earlier versions (no writer) serve their tenant's default user only.

Writes pass `SharingGuard.may_store` (per-user quota and rate). Counts of
askers live in this process: a fleet over a shared tier counts per process,
which withholds more, never less.
"""

from __future__ import annotations

import logging
import math
import secrets
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

from flexcache.core.config import SharingConfig
from flexcache.core.errors import InvalidPromptError
from flexcache.core.types import TENANT_PATTERN
from flexcache.engine.records import PromptRecord

logger = logging.getLogger("flexcache.engine.guard")

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


def _unasked(reading: Callable[[], list[str]]) -> bool:
    """The gate's verdict; an error reading (another user's text, the embedder) gates, it never raises."""
    try:
        return bool(reading())
    except Exception as exc:  # noqa: BLE001 - a request never fails because of another user's entry
        logger.warning("flexcache: the containment gate could not read an entry (%s: %s); capping the hit",
                       type(exc).__name__, exc)
        return True


class SharingGuard:
    """Namespaces and the cross-user defences of one cache (`sharing` config). Thread-safe."""

    def __init__(self, config: SharingConfig) -> None:
        self.config = config
        self._pool_of = {tenant: pool.name for pool in config.pools for tenant in pool.tenants}
        self._trusted = config.trusted_identities()
        self._lock = threading.Lock()
        self._entries_by_writer: Counter[str] = Counter()
        self._runs_by_writer: dict[str, deque[float]] = {}
        self.counters = {"cross_user_candidates": 0, "withheld_unconfirmed": 0, "withheld_legacy": 0,
                         "capped": 0, "gated": 0, "cross_user_hits": 0, "trusted_hits": 0, "vouches": 0, "accusations": 0, "quota_refused": 0, "rate_refused": 0,
                         "randomized": 0}

    def namespace(self, tenant: str) -> str:
        """The index partition a tenant's requests search and its entries join."""
        pool = self._pool_of.get(tenant)
        return tenant if pool is None else POOL_PREFIX + pool

    # -- reading -----------------------------------------------------------------

    def ceiling(self, record: PromptRecord, requester: str, *, matches: bool, num_steps: int,
                level: str = "whole", unasked: Callable[[], list[str]] | None = None) -> int | None:
        """The deepest step `requester` may skip from `record`: N for its own, None for none (lock held).

        Args:
            matches: whether the request would reuse `level` of `record` undefended; it then
                counts as an asker of that level.
            level: what the hit reuses: ``"whole"`` (the latent), or the kept part of a
                region hit, ``"object"`` or ``"background"``.
            unasked: the containment gate's reading (the source's words the request does not
                ask for); called only when the gate decides.
        """
        writer = writer_identity(record)
        if writer == requester:
            return num_steps
        if not matches:
            return None
        config = self.config
        with self._lock:
            self.counters["cross_user_candidates"] += 1
            if record.writer is None:
                self.counters["withheld_legacy"] += 1
                return None
            if writer in self._trusted and not record.borrowed:
                return num_steps
            if config.min_askers > 1:
                askers = record.askers if level == "whole" else record.part_askers.setdefault(level, set())
                if len(askers) < config.min_askers:  # (bounded: nobody is counted past the threshold)
                    askers.add(requester)
                if len(askers) < config.min_askers:
                    self.counters["withheld_unconfirmed"] += 1
                    return None
        cap = math.floor(config.cross_user_max_fraction * num_steps + 1e-9)
        reason = None
        if not record.text_conditioned and not self.vouched(record):
            reason = "capped"
        elif config.containment_gate and cap < num_steps and unasked is not None and _unasked(unasked):
            reason = "gated"
        if reason is None or cap >= num_steps:
            return num_steps
        with self._lock:
            self.counters[reason] += 1
        return cap

    def served(self, record: PromptRecord, requester: str) -> bool:
        """Count a hit `requester` takes from `record`; whether it is another user's entry."""
        writer = writer_identity(record)
        if writer == requester:
            return False
        with self._lock:
            self.counters["cross_user_hits"] += 1
            self.counters["trusted_hits"] += writer in self._trusted and not record.borrowed
        return True

    def vouched(self, record: PromptRecord) -> bool:
        required = self.config.vouches_required
        return required > 0 and len(record.vouches) - len(record.accusations) >= required

    def wants_vouch(self, record: PromptRecord, requester: str, similarity: float | None,
                    region: str | None) -> bool:
        """Whether a run resumed from `record` should vouch (or not) for it (lock held)."""
        config = self.config
        return (config.vouches_required > 0 and config.cross_user_max_fraction < 1.0 and region is None
                and not record.text_conditioned and record.writer is not None and writer_identity(record) != requester
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
