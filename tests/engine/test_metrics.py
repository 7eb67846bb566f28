"""Prometheus metrics of a cache (`engine.metrics`): names, labels, values read from stats()."""

from __future__ import annotations

import urllib.request

import pytest
import torch

prometheus_client = pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

PROMPT = "a golden retriever chasing a frisbee in a sunlit park"


def scrape(cache, **kwargs) -> dict[str, dict]:
    registry = prometheus_client.CollectorRegistry()
    registry.register(cache.metrics_collector(**kwargs))
    text = prometheus_client.generate_latest(registry).decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def test_requests_hits_steps_tiers_latency_and_codec_are_exported(make_cache, signature):
    cache = make_cache()
    plan = cache.plan(PROMPT, signature, tenant="acme")
    cache.insert(plan, {s: torch.randn(signature.latent_shape) for s in plan.checkpoint_steps})
    hit = cache.plan(PROMPT, signature, tenant="acme")
    assert cache.fetch(hit) is not None
    samples = scrape(cache)
    by_tenant = {labels["tenant"]: value for labels, value in samples["flexcache_requests_total"]}
    assert by_tenant == {"acme": 2.0}
    assert samples["flexcache_hits_total"][0][1] == 1.0
    assert samples["flexcache_steps_saved_total"][0][1] == hit.skip_steps
    assert samples["flexcache_tier_bytes"][0][1] == cache.stats()["bytes_stored"] > 0
    assert samples["flexcache_tier_entries"][0][1] == 5
    assert samples["flexcache_plan_seconds_count"][0][1] == 2
    assert samples["flexcache_fetch_seconds_count"][0][1] == 1
    assert samples["flexcache_insert_seconds_count"][0][1] == 1
    assert samples["flexcache_codec_compression_ratio"][0][1] > 1.0
    assert 0 < samples["flexcache_codec_achieved_relative_l2"][0][1] < 0.5
    assert "flexcache_evictions_total" in samples and "flexcache_corrupt_blobs_total" in samples
    assert "flexcache_dropped_moves_total" in samples and "flexcache_tier_errors_total" in samples


def test_tenant_labels_are_bounded(make_cache, signature):
    cache = make_cache()
    for index in range(5):
        cache.plan(PROMPT, signature, tenant=f"t{index}")
    cache.plan(PROMPT, signature, tenant="t0")
    labels = {labels["tenant"]: value for labels, value in scrape(cache, max_tenants=2)["flexcache_requests_total"]}
    assert labels["t0"] == 2 and labels["other"] == 3 and len(labels) == 3


def test_the_metrics_server_serves_them_over_http(make_cache, signature):
    cache = make_cache()
    cache.plan(PROMPT, signature)
    server, thread = cache.start_metrics_server(0)
    try:
        port = server.server_address[1]
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    finally:
        server.shutdown()
    assert 'flexcache_requests_total{cache="flexcache",tenant="default"} 1.0' in body


def test_audits_step_downs_and_the_tables_that_planned_are_exported(make_cache, signature):
    cache = make_cache(quality={"audit_rate": 1.0})
    cache.plan(PROMPT, signature)
    planner = cache.planners.configured
    rule = "full@0.89"
    assert planner.rule_fractions()[rule] == 0.2
    for _ in range(20):  # every audit lost 0.2: the 20th steps the rule down
        cache.auditor.record("configured", rule, 0.2, tolerance=0.02, step_down=lambda: planner.step_down(rule))
    cache.auditor.record("configured", rule, 0.1, tolerance=0.02, step_down=lambda: planner.step_down(rule))
    cache.auditor.skip("unreadable_output")
    samples = scrape(cache)

    def value(name, **labels):
        (found,) = [v for found_labels, v in samples[name] if labels.items() <= found_labels.items()]
        return found

    where = {"rules": "configured", "rule": rule}
    assert value("flexcache_calls_planned_total", rules="configured") == 1
    assert value("flexcache_rule_stepped_fraction", **where) == 0.1  # one checkpoint below 0.2
    assert value("flexcache_audit_audits_total") == 21 and value("flexcache_audit_step_downs_total") == 1
    assert value("flexcache_audit_rule_step_downs_total", **where) == 1
    assert value("flexcache_audit_rule_audits_total", **where) == 21
    assert value("flexcache_audit_mean_drop", **where) == pytest.approx(0.1)  # the fresh window: one audit
    assert "flexcache_audit_drop_lower" not in samples  # one audit bounds nothing
    assert value("flexcache_audit_skipped_total", reason="unreadable_output") == 1
