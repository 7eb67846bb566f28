"""The auditor's sampling, estimates and step-downs (`quality.audits`)."""

from __future__ import annotations

import random
import threading
from types import SimpleNamespace

import pytest

from flexcache import CacheConfig
from flexcache.config import QualityConfig
from flexcache.errors import ConfigError
from flexcache.quality.audits import Auditor, lower_bound

HIT = SimpleNamespace(hit=True, rule="full@0.9")


def test_sampling_follows_the_rate_and_skips_misses_and_unknown_rules():
    auditor = Auditor(QualityConfig(audit_rate=0.25), seed=1)
    drawn = sum(auditor.sample(HIT) for _ in range(4000))
    assert 800 < drawn < 1200
    assert not auditor.sample(SimpleNamespace(hit=False, rule=None))
    assert not auditor.sample(SimpleNamespace(hit=True, rule=None))
    assert not Auditor(QualityConfig()).sample(HIT)  # off by default


def test_a_rule_that_hurts_steps_down_once_the_bound_says_so():
    auditor = Auditor(QualityConfig(audit_rate=1.0, audit_min_audits=20))
    calls = []
    results = [auditor.record("configured", "full@0.9", 0.2 if i % 2 else 0.0, tolerance=0.02,
                              step_down=lambda: calls.append(1) or 0.1) for i in range(20)]
    assert results[:19] == [None] * 19 and results[19] == 0.1 and len(calls) == 1
    estimate = auditor.estimates()["configured|full@0.9"]
    assert estimate["step_downs"] == 1 and estimate["window"] == 0 and estimate["audits"] == 20


def test_a_sound_rule_with_rare_losses_is_not_stepped_down():
    auditor = Auditor(QualityConfig(audit_rate=1.0, audit_min_audits=20))
    rng = random.Random(3)
    for _ in range(400):  # mean drop 0.01: within a 0.02 tolerance
        drop = 0.2 if rng.random() < 0.05 else 0.0
        assert auditor.record("rules file r.yaml", "full@0.9", drop, tolerance=0.02,
                              step_down=lambda: pytest.fail("stepped down a sound rule")) is None
    assert auditor.estimates()["rules file r.yaml|full@0.9"]["mean_drop"] < 0.02


def test_the_lower_bound_sits_below_the_mean():
    drops = [0.0, 0.2, 0.0, 0.0, 0.4, 0.0]
    assert lower_bound(drops, 0.9) <= sum(drops) / len(drops)
    assert lower_bound([0.1] * 5, 0.9) == pytest.approx(0.1)


def test_tolerance_comes_from_the_config_then_the_rules_file():
    assert Auditor(QualityConfig(audit_tolerance=0.05)).tolerance_for(0.01) == 0.05
    assert Auditor(QualityConfig()).tolerance_for(0.01) == 0.01
    assert Auditor(QualityConfig()).tolerance_for(None) == 0.02


def test_an_audit_of_the_depth_before_a_step_down_is_stale():
    auditor = Auditor(QualityConfig(audit_rate=1.0, audit_min_audits=20))
    served_at = auditor.generation("configured", "full@0.9")  # a hit sampled now, audited later
    for _ in range(20):
        auditor.record("configured", "full@0.9", 0.2, tolerance=0.02, step_down=lambda: 0.3)
    assert auditor.generation("configured", "full@0.9") == served_at + 1
    assert auditor.record("configured", "full@0.9", 0.2, tolerance=0.02, step_down=lambda: 0.2,
                          generation=served_at) is None
    stats = auditor.stats()
    assert stats["stale"] == 1 and stats["audits"] == 20 and stats["rules"]["configured|full@0.9"]["window"] == 0


def test_audits_finishing_together_step_a_rule_down_once():
    auditor = Auditor(QualityConfig(audit_rate=1.0, audit_min_audits=20, audit_window=40))
    for _ in range(19):
        auditor.record("configured", "full@0.9", 0.2, tolerance=0.02, step_down=lambda: pytest.fail("too early"))
    steps, start = [], threading.Barrier(8)

    def finish():
        start.wait()
        auditor.record("configured", "full@0.9", 0.2, tolerance=0.02, step_down=lambda: steps.append(1) or 0.1)

    threads = [threading.Thread(target=finish) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(steps) == 1 and auditor.stats()["step_downs"] == 1


def test_skipped_audits_are_counted_by_reason():
    auditor = Auditor(QualityConfig(audit_rate=1.0))
    auditor.skip("scorer_mismatch")
    auditor.skip("scorer_mismatch")
    auditor.skip("unreadable_output")
    assert auditor.stats()["skipped"] == {"scorer_mismatch": 2, "unreadable_output": 1}


def test_the_sampling_is_seeded_so_a_replay_samples_the_same_hits():
    first, second = Auditor(QualityConfig(audit_rate=0.3)), Auditor(QualityConfig(audit_rate=0.3))
    assert [first.sample(HIT) for _ in range(200)] == [second.sample(HIT) for _ in range(200)]


def test_the_scorers_the_config_names_are_the_ones_build_scorer_knows():
    from flexcache.core.quality_config import AUDIT_SCORERS
    from flexcache.quality.scorers import SCORERS

    assert AUDIT_SCORERS == SCORERS


@pytest.mark.parametrize("bad", [{"audit_rate": 1.5}, {"audit_confidence": 1.0}, {"audit_min_audits": 1},
                                 {"audit_window": 5}, {"audit_tolerance": -0.1}, {"audit_queue": 0},
                                 {"audit_scorer": "vbench"}, {"audit_scorer": "clip"},
                                 {"audit_scorer": "toyworld", "audit_scorer_model": "/models/clip"}])
def test_bad_settings_are_refused(bad):
    with pytest.raises(ConfigError, match="quality.audit"):
        CacheConfig.from_dict({"quality": bad})
