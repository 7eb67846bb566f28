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
from flexcache.core.names import CACHE_ERROR_STAGES

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
    """A prometheus-client collector of one cache (`FlexCache.metrics_collector`), or of several.

    `sources`: ``[(labels, stats_callable)]`` (or a callable returning that list at each scrape), each
    labelled (``{"worker": "0"}``) set of series read from its ``stats()`` dict; the default is the one
    cache, unlabelled.
    """

    def __init__(self, cache: Any = None, *, max_tenants: int = 50, cache_name: str | None = None,
                 sources: Any = None) -> None:
        _prometheus()
        self.max_tenants = max_tenants
        self.cache_name = cache_name or (cache.config.name if cache is not None else "flexcache")
        self.sources = sources if sources is not None else [({}, cache.stats)]

    def describe(self) -> list:
        return []  # collected on demand: no scrape at registration

    def collect(self) -> Iterator[Any]:
        _, Counter, Gauge, Histogram = _prometheus()
        listed = self.sources() if callable(self.sources) else self.sources
        sources = [(labels, stats()) for labels, stats in listed]
        sources = [(labels, stats) for labels, stats in sources if stats]
        extra = sorted({name for labels, _ in sources for name in labels})
        families: dict[str, Any] = {}

        def add(kind, name: str, doc: str, value: Any, labels: dict[str, str], more: dict[str, str] | None = None,
                **kwargs):
            more = more or {}
            family = families.get(name)
            if family is None:
                family = families[name] = kind(name, doc, labels=["cache", *extra, *more])
            values = [self.cache_name, *(labels.get(k, "") for k in extra), *more.values()]
            if kind is Histogram:
                family.add_metric(values, value, sum_value=kwargs["sum_value"])
            else:
                family.add_metric(values, value)

        per_tenant = {"requests": "requests planned", "hits": "hits fetched",
                      "decoupled_hits": "hits whose K came from the object/background look-up",
                      "steps_saved": "denoising steps skipped"}
        for labels, stats in sources:
            tenants = _bounded_tenants(stats["tenants"], self.max_tenants)
            for key, doc in per_tenant.items():
                for tenant, values in tenants.items():
                    add(Counter, f"flexcache_{key}", f"{doc[0].upper()}{doc[1:]}, by tenant.", values.get(key, 0),
                        labels, {"tenant": tenant})
            store = stats["store"]
            for name, doc, value in (
                    ("flexcache_region_hits", "Hits that regenerated a region.", stats["region_hits"]),
                    ("flexcache_inserts", "Entries stored.", stats["inserts"]),
                    ("flexcache_evictions", "Entries evicted from the last tier.", stats["evictions"]),
                    ("flexcache_promotions", "Entries copied to a faster tier on a hit.", store["promotions"]),
                    ("flexcache_demotions", "Entries moved to a slower tier under pressure.", store["demotions"]),
                    ("flexcache_dropped_moves", "Background moves dropped (the move queue was full).",
                     store["dropped_moves"]),
                    ("flexcache_store_callback_errors", "Store callbacks (eviction bookkeeping) that raised.",
                     store.get("callback_errors", 0)),
                    ("flexcache_corrupt_blobs", "Blobs or metadata that failed their checksum (served as misses).",
                     stats["corrupt_blobs"]),
                    ("flexcache_fetch_misses", "Hits whose entry was gone or damaged when fetched.",
                     stats["fetch_misses"]),
                    ("flexcache_codec_input_bytes", "Bytes of latents handed to the codec.",
                     stats["codec_stats"]["raw_bytes"]),
                    ("flexcache_codec_output_bytes", "Bytes the codec made of them.", stats["codec_stats"]["coded_bytes"])):
                add(Counter, name, doc, value, labels)
            health = stats.get("health")
            if health is not None:
                add(Gauge, "flexcache_health_degraded", "1 while the cache is degraded (stats()['health'] says why).",
                    float(health.get("status") != "ok"), labels)
            errors = stats.get("cache_errors", {})
            for stage in sorted(set(CACHE_ERROR_STAGES) | set(errors)):
                add(Counter, "flexcache_cache_errors", "Errors of the cache path, contained: the generation ran "
                    "on without the cache (by stage).", errors.get(stage, 0), labels, {"stage": stage})
            for key, value in stats["sharing"].items():
                if key != "writers":
                    add(Counter, f"flexcache_sharing_{key}", f"Cross-user defences: {key.replace('_', ' ')}.", value,
                        labels)
            for tier in stats["tiers"]:
                where = {"tier": tier["name"]}
                add(Gauge, "flexcache_tier_bytes", "Bytes stored in a tier.", tier["bytes_used"], labels, where)
                add(Gauge, "flexcache_tier_capacity_bytes", "A tier's capacity.", tier["capacity_bytes"], labels,
                    where)
                add(Gauge, "flexcache_tier_entries", "Entries in a tier.", tier["entries"], labels, where)
                add(Counter, "flexcache_tier_errors", "Tier calls that failed.", tier["errors"], labels, where)
                add(Counter, "flexcache_tier_corrupt", "Damaged items a tier found.", tier["corrupt"], labels, where)
            for op, snapshot in stats["latency_seconds"].items():
                buckets = [(str(bound), count) for bound, count in snapshot["buckets"]]
                add(Histogram, f"flexcache_{op}_seconds", f"Wall time of FlexCache.{op}.", buckets, labels,
                    sum_value=snapshot["sum"])
            for tables, count in stats.get("rules_served", {}).items():
                add(Counter, "flexcache_calls_planned", "Calls planned, by the tables that planned them (a rules "
                    "file, configured, toyworld, uncalibrated).", count, labels, {"rules": tables})
            for tables, caps in stats.get("rule_caps", {}).items():
                for rule, fraction in caps.items():
                    add(Gauge, "flexcache_rule_stepped_fraction", "A rule's depth (fraction of N) after audits "
                        "stepped it down.", fraction, labels, {"rules": tables, "rule": rule})
            audits = stats.get("audits")
            if audits is not None:
                for key, doc in (("sampled", "hits sampled"), ("audits", "audits recorded against a rule"),
                                 ("step_downs", "rules stepped down"), ("dropped", "sampled hits dropped (queue full)"),
                                 ("failed", "audits that failed (scorer or run errors)"),
                                 ("stale", "audits of a depth a rule had left when they ran")):
                    add(Counter, f"flexcache_audit_{key}", f"Online audits: {doc}.", audits.get(key, 0), labels)
                for reason, count in sorted(audits.get("skipped", {}).items()):
                    add(Counter, "flexcache_audit_skipped", "Online audits not made, by reason.", count, labels,
                        {"reason": reason})
                add(Counter, "flexcache_audit_seconds", "Seconds of uncached runs the audits took.",
                    audits["seconds"], labels)
                for estimate in audits["rules"].values():
                    where = {"rules": estimate["rules"], "rule": estimate["rule"]}
                    add(Counter, "flexcache_audit_rule_audits", "Online audits recorded, by rule.", estimate["audits"],
                        labels, where)
                    add(Counter, "flexcache_audit_rule_step_downs", "Online audits: step-downs, by rule.",
                        estimate["step_downs"], labels, where)
                    for name, doc in (("mean_drop", "mean quality drop"), ("drop_lower", "lower bound of the mean "
                                                                                       "quality drop")):
                        if estimate[name] is not None:
                            add(Gauge, f"flexcache_audit_{name}", f"Online audits: a rule's {doc} (its window).",
                                estimate[name], labels, where)
            codec = stats["codec_stats"]
            add(Gauge, "flexcache_codec_compression_ratio", "Raw over coded bytes of everything coded so far.",
                codec["raw_bytes"] / codec["coded_bytes"] if codec["coded_bytes"] else 0.0, labels)
            add(Gauge, "flexcache_codec_achieved_relative_l2",
                "Mean relative L2 error the lossy codec achieved (blobs record it).",
                codec["achieved_relative_l2_mean"], labels)
        yield from families.values()


def start_metrics_server(cache: Any, port: int, addr: str = "127.0.0.1", *, max_tenants: int = 50):
    """Serve `cache`'s metrics at ``http://addr:port/metrics`` on a daemon thread; returns (server, thread)."""
    prometheus_client, *_ = _prometheus()
    registry = prometheus_client.CollectorRegistry()
    registry.register(CacheCollector(cache, max_tenants=max_tenants))
    return prometheus_client.start_http_server(port, addr=addr, registry=registry)
