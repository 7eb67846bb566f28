"""`FlexCache`'s reports and management: stats, entries, clear, Prometheus metrics, codec figures."""

from __future__ import annotations

import torch

from flexcache.codec.latent import describe_blob
from flexcache.core.blob import Blob
from flexcache.engine.metrics import CacheCollector, start_metrics_server
from flexcache.engine.records import CacheEntry


class Reporting:
    """Mixed into `FlexCache`; it uses the cache's lock, records, store, codec and counters."""

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
