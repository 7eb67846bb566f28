"""Prometheus metrics of a `FlexCache`, read from `stats()` at each scrape (needs prometheus-client).

Install the extra: ``pip install 'flexcache[metrics]'``. Names follow the
Prometheus conventions (``_total`` counters, ``_bytes``, ``_seconds``).
Tenant labels are bounded: the `max_tenants` tenants with most requests get
their own series, the others are summed under ``tenant="other"``.

Example:
    >>> from prometheus_client import CollectorRegistry, generate_latest  # doctest: +SKIP
    >>> registry = CollectorRegistry()                                    # doctest: +SKIP
    >>> registry.register(cache.metrics_collector())                      # doctest: +SKIP
    >>> print(generate_latest(registry).decode())                         # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from flexcache.core.errors import BackendUnavailableError

OTHER_TENANTS = "other"


def _prometheus():
    try:
        import prometheus_client
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
    except ImportError as exc:
        raise BackendUnavailableError("metrics need prometheus-client: pip install 'flexcache[metrics]'") from exc
    return prometheus_client, CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily


def _bounded_tenants(tenants: dict[str, dict[str, int]], max_tenants: int) -> dict[str, dict[str, int]]:
    ranked = sorted(tenants, key=lambda name: (-tenants[name].get("requests", 0), name))
    out = {name: dict(tenants[name]) for name in ranked[:max_tenants]}
    for name in ranked[max_tenants:]:
        other = out.setdefault(OTHER_TENANTS, {})
        for key, value in tenants[name].items():
            other[key] = other.get(key, 0) + value
    return out


class CacheCollector:
    """A prometheus-client collector of one cache (`FlexCache.metrics_collector`)."""

    def __init__(self, cache: Any, *, max_tenants: int = 50) -> None:
        _prometheus()
        self.cache, self.max_tenants = cache, max_tenants

    def describe(self) -> list:
        return []  # collected on demand: no scrape at registration

    def collect(self) -> Iterator[Any]:
        _, Counter, Gauge, Histogram = _prometheus()
        stats = self.cache.stats()
        cache_name = self.cache.config.name

        def counter(name: str, doc: str, value: float, labels: dict[str, str] | None = None):
            family = Counter(name, doc, labels=["cache", *(labels or {})])
            family.add_metric([cache_name, *(labels or {}).values()], value)
            return family

        per_tenant = {"requests": "requests planned", "hits": "hits fetched",
                      "decoupled_hits": "hits whose K came from the object/background look-up",
                      "steps_saved": "denoising steps skipped"}
        tenants = _bounded_tenants(stats["tenants"], self.max_tenants)
        for key, doc in per_tenant.items():
            family = Counter(f"flexcache_{key}", f"{doc[0].upper()}{doc[1:]}, by tenant.", labels=["cache", "tenant"])
            for tenant, values in tenants.items():
                family.add_metric([cache_name, tenant], values.get(key, 0))
            yield family
        yield counter("flexcache_region_hits", "Hits that regenerated a region.", stats["region_hits"])
        yield counter("flexcache_inserts", "Entries stored.", stats["inserts"])
        yield counter("flexcache_evictions", "Entries evicted from the last tier.", stats["evictions"])
        store = stats["store"]
        yield counter("flexcache_promotions", "Entries copied to a faster tier on a hit.", store["promotions"])
        yield counter("flexcache_demotions", "Entries moved to a slower tier under pressure.", store["demotions"])
        yield counter("flexcache_dropped_moves", "Background moves dropped (the move queue was full).",
                      store["dropped_moves"])
        yield counter("flexcache_corrupt_blobs", "Blobs or metadata that failed their checksum (served as misses).",
                      stats["corrupt_blobs"])
        yield counter("flexcache_fetch_misses", "Hits whose entry was gone or damaged when fetched.",
                      stats["fetch_misses"])
        tier_gauges = {"bytes_used": ("flexcache_tier", "Bytes stored in a tier.", "bytes"),
                       "capacity_bytes": ("flexcache_tier_capacity", "A tier's capacity.", "bytes"),
                       "entries": ("flexcache_tier_entries", "Entries in a tier.", "")}
        for key, (name, doc, unit) in tier_gauges.items():
            family = Gauge(name + ("_" + unit if unit else ""), doc, labels=["cache", "tier"])
            for tier in stats["tiers"]:
                family.add_metric([cache_name, tier["name"]], tier[key])
            yield family
        for key, doc in (("errors", "Tier calls that failed."), ("corrupt", "Damaged items a tier found.")):
            family = Counter(f"flexcache_tier_{key}", doc, labels=["cache", "tier"])
            for tier in stats["tiers"]:
                family.add_metric([cache_name, tier["name"]], tier[key])
            yield family
        for op, snapshot in stats["latency_seconds"].items():
            family = Histogram(f"flexcache_{op}_seconds", f"Wall time of FlexCache.{op}.", labels=["cache"])
            buckets = [(str(bound), count) for bound, count in snapshot["buckets"]]
            family.add_metric([cache_name], buckets, sum_value=snapshot["sum"])
            yield family
        codec = stats["codec_stats"]
        yield counter("flexcache_codec_input", "Bytes of latents handed to the codec.", codec["raw_bytes"])
        yield counter("flexcache_codec_output", "Bytes the codec made of them.", codec["coded_bytes"])
        ratio = Gauge("flexcache_codec_compression_ratio", "Raw over coded bytes of everything coded so far.",
                      labels=["cache"])
        ratio.add_metric([cache_name], codec["raw_bytes"] / codec["coded_bytes"] if codec["coded_bytes"] else 0.0)
        yield ratio
        error = Gauge("flexcache_codec_achieved_relative_l2",
                      "Mean relative L2 error the lossy codec achieved (blobs record it).", labels=["cache"])
        error.add_metric([cache_name], codec["achieved_relative_l2_mean"])
        yield error
        for key, value in stats["sharing"].items():
            if key != "writers":
                yield counter(f"flexcache_sharing_{key}", f"Cross-user defences: {key.replace('_', ' ')}.", value)


def start_metrics_server(cache: Any, port: int, addr: str = "127.0.0.1", *, max_tenants: int = 50):
    """Serve `cache`'s metrics at ``http://addr:port/metrics`` on a daemon thread; returns (server, thread)."""
    prometheus_client, *_ = _prometheus()
    registry = prometheus_client.CollectorRegistry()
    registry.register(CacheCollector(cache, max_tenants=max_tenants))
    return prometheus_client.start_http_server(port, addr=addr, registry=registry)
