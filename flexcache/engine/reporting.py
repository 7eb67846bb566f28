"""`FlexCache`'s reports and management: stats, entries, clear, Prometheus metrics, codec figures."""

from __future__ import annotations

import functools

import torch

from flexcache.codec.latent import describe_blob
from flexcache.core.blob import Blob
from flexcache.engine.metrics import CacheCollector, start_metrics_server
from flexcache.engine.records import CacheEntry
from flexcache.quality.audits import Auditor


class Reporting:
    """Mixed into `FlexCache`; it uses the cache's lock, records, store, codec and counters."""

    @functools.cached_property
    def auditor(self) -> Auditor:
        """Online audits of served hits (``quality``; `integrations.audits` runs them)."""
        return Auditor(self.config.quality)

    def _note_coded(self, latents: dict[int, torch.Tensor], blobs: dict[int, Blob]) -> None:
        errors = [info["achieved_relative_l2"] for blob in blobs.values() if isinstance(blob, (bytes, bytearray))
                  and "achieved_relative_l2" in (info := describe_blob(blob))]
        with self._lock:
            c = self._counters
            c.codec_raw_bytes += sum(t.numel() * t.element_size() for t in latents.values())
            c.codec_coded_bytes += sum(len(blob) for blob in blobs.values())
            c.codec_errors[0] += sum(errors)
            c.codec_errors[1] += len(errors)

    # -- management --------------------------------------------------------------

    def clear(self, tenant: str | None = None) -> int:
        """Remove every entry (of one tenant when given); returns entries removed."""
        with self._lock:
            keys = [e.key for e in self._entries.values()
                    if tenant is None or self._records[e.record_id].tenant == tenant]
            for key in keys:
                self._forget_entry(key)
        for key in keys:  # tier I/O, outside the lock
            self.store.remove(key)
        return len(keys)

    def stats(self) -> dict:
        """Counters and sizes as a plain dict (JSON-safe).

        ``hit_rate`` is hits / requests, where a request is a `plan` call and a
        hit is a successful `fetch`.
        """
        store_counters = dict(self.store.counters)
        tiers = [
            {"name": t.name, "entries": t.entries, "bytes_used": t.bytes_used, "capacity_bytes": t.capacity_bytes,
             "corrupt": t.corrupt, "errors": t.errors, "latency_ms": t.latency_ms}
            for t in self.store.tier_stats()  # tier calls (a Redis round trip): outside the cache lock
        ]
        bytes_stored, capacity = self.store.bytes_used, self.store.capacity_bytes
        with self._lock:
            c = self._counters
            return {
                "requests": c.requests,
                "hits": c.hits,
                "decoupled_hits": c.decoupled_hits,
                "region_hits": c.region_hits,
                "corrupt_masks": c.corrupt_masks,
                "lookup": self.config.planner.lookup,
                # calls planned by each set of tables (a rules file, "toyworld", "configured", "uncalibrated")
                "rules_served": self.planners.served(),
                "rule_caps": {p.label: p.caps() for p in self.planners.planners() if p.caps()},
                "audits": self.auditor.stats(),
                "misses": c.requests - c.hits,
                "hit_rate": c.hits / c.requests if c.requests else 0.0,
                "steps_total": c.steps_total,
                "steps_saved": c.steps_saved,
                "entries": sum(entry.ready for entry in self._entries.values()),
                "records": len(self._records),
                "bytes_stored": bytes_stored,
                "capacity_bytes": capacity,
                "inserts": c.inserts,
                "resumed_inserts": c.resumed_inserts,
                "duplicate_inserts": c.duplicate_inserts,
                "evictions": c.evictions,
                "fetch_misses": c.fetch_misses,
                # Damage each tier found (frames, scans, malformed values) plus what decoding found: each once.
                "corrupt_blobs": c.corrupt_blobs + sum(t["corrupt"] for t in tiers),
                "cache_errors": dict(c.cache_errors),
                "policy": self.config.policy,
                "codec": self.codec.name,
                "tenants": {name: dict(values) for name, values in c.by_tenant.items()},
                "sharing": self.guard.stats(),
                "latency_seconds": self.latency.snapshot(),
                "codec_stats": {"raw_bytes": c.codec_raw_bytes, "coded_bytes": c.codec_coded_bytes,
                                "achieved_relative_l2_mean": c.codec_errors[0] / c.codec_errors[1]
                                if c.codec_errors[1] else 0.0},
                "store": store_counters,
                "tiers": tiers,
                "health": self.health(),  # reads no tier: fine under the lock
            }

    def metrics_collector(self, *, max_tenants: int = 50):
        """A prometheus-client collector of this cache's metrics (`engine.metrics`; the metrics extra)."""
        return CacheCollector(self, max_tenants=max_tenants)

    def start_metrics_server(self, port: int, addr: str = "127.0.0.1", *, max_tenants: int = 50):
        """Serve this cache's metrics at ``http://addr:port/metrics`` (a daemon thread); returns (server, thread)."""
        return start_metrics_server(self, port, addr, max_tenants=max_tenants)

    def entries(self, tenant: str | None = None) -> list[CacheEntry]:
        """A snapshot of the entries' metadata (copies)."""
        with self._lock:
            return [CacheEntry(**vars(e)) for e in self._entries.values()
                    if e.ready and (tenant is None or self._records[e.record_id].tenant == tenant)]

    def health(self) -> dict:
        """Whether this cache works as configured: ``{"status": "ok" | "degraded", "reasons": [...], ...}``.

        Degraded (the cache still fails open: generations run, some of them
        uncached or unshared) while a shared or remote tier is unavailable (its
        circuit breaker is open), the event follower cannot read or publish the
        shared tier's stream, the prompt splitter's setting classifier is failing,
        or a store callback (eviction bookkeeping) keeps raising. Reads no tier:
        cheap enough for every health probe. Beside the reasons: ``tiers`` (name ->
        available), ``follower`` (its counters, or None without a shared tier),
        ``classifier`` (its state, or None when turned off) and ``store_callbacks``.

        Example:
            >>> from flexcache import FlexCache
            >>> FlexCache().health()["status"]
            'ok'
        """
        from flexcache.engine.setting_classifier import get_classifier

        reasons: list[str] = []
        tiers: dict[str, bool] = {}
        for tier in self.store.tiers:
            inner = getattr(tier, "inner", tier)
            available = bool(getattr(inner, "available", True))
            tiers[tier.name] = available
            if not available:
                where = getattr(inner, "where", None)
                reasons.append(f"the {tier.name} tier{f' at {where}' if where else ''} is unavailable (circuit "
                               "breaker open): its reads miss and its writes are skipped")
        follower = self._follower.stats() if self._follower is not None else None
        if follower is not None and not follower["healthy"]:
            reasons.append(f"the shared tier's event follower is failing ({follower['consecutive_errors']} errors "
                           f"in a row; last: {follower['last_error']}): other processes' entries are not seen")
        classifier = get_classifier()
        classifier_state = classifier.state() if classifier is not None else None
        if classifier_state is not None and classifier_state["failing"]:
            reasons.append(f"the prompt splitter's setting classifier is failing ({classifier_state['last_error']}; "
                           f"next try in {classifier_state['retry_in_s']:.0f} s): prompts split by the lexicon only")
        callbacks = dict(self.store.failing_callbacks)
        for kind, error in sorted(callbacks.items()):
            reasons.append(f"the store's on_{kind} callback keeps failing ({error}): the index and the other "
                           "processes may not learn what the store placed or dropped")
        return {"status": "degraded" if reasons else "ok", "reasons": reasons, "tiers": tiers, "follower": follower,
                "classifier": classifier_state,
                "store_callbacks": {"errors": self.store.counters.get("callback_errors", 0), "failing": callbacks}}
