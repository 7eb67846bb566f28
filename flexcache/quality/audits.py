"""Online audits: the quality drop each rule costs in service, and a step back when it costs too much.

A sampled hit is run again uncached (`integrations.audits`), both videos are scored, and the drop
(the uncached run's score minus the served one's; for a reference scorer, 1 minus the served
video's score against the uncached one) is recorded against the rule that set the hit's K
(`Plan.rule`, under the tables that planned it, `Plan.rules`). When, after at least
``quality.audit_min_audits`` audits, the *lower* bootstrap bound of the rule's mean drop at
``quality.audit_confidence`` exceeds the tolerance, the rule steps down one checkpoint
(`SimilarityPlanner.step_down`), a warning says so, and the rule's window starts afresh.

The lower bound (not the mean) decides, so a rule that is fine is not stepped down by a few
unlucky audits; the window keeps the estimate about the rule as it serves now.
"""

from __future__ import annotations

import logging
import random
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

import torch

from flexcache.core.quality_config import DEFAULT_AUDIT_TOLERANCE, QualityConfig

logger = logging.getLogger("flexcache.audits")


def lower_bound(drops: list[float], confidence: float, *, resamples: int = 2000, seed: int = 0) -> float:
    """The one-sided bootstrap lower bound of the mean drop (percentile method)."""
    values = torch.tensor(drops, dtype=torch.float64)
    generator = torch.Generator().manual_seed(seed)
    picks = torch.randint(0, len(drops), (resamples, len(drops)), generator=generator)
    return float(torch.quantile(values[picks].mean(dim=1), 1.0 - confidence))


class Auditor:
    """Samples hits to audit and keeps each rule's drop estimate (thread-safe).

    Args:
        config: the ``quality`` section.
        seed: seeds the sampling (None: unseeded).
    """

    def __init__(self, config: QualityConfig, *, seed: int | None = None) -> None:
        self.config = config
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._windows: dict[tuple[str, str], deque[float]] = {}
        self._totals: dict[tuple[str, str], dict[str, float]] = {}
        self.counters = {"sampled": 0, "audits": 0, "step_downs": 0, "dropped": 0, "failed": 0, "seconds": 0.0}
        self.events: deque[dict[str, Any]] = deque(maxlen=50)  # the latest step-downs, with what they measured

    def sample(self, plan: Any) -> bool:
        """Whether to audit this served plan (a hit whose rule is known), drawn at ``audit_rate``."""
        if self.config.audit_rate <= 0 or not getattr(plan, "hit", False) or getattr(plan, "rule", None) is None:
            return False
        with self._lock:
            chosen = self._rng.random() < self.config.audit_rate
            self.counters["sampled"] += chosen
        return chosen

    def count(self, name: str, amount: float = 1) -> None:
        with self._lock:
            self.counters[name] += amount

    def tolerance_for(self, rules_file_tolerance: float | None) -> float:
        if self.config.audit_tolerance is not None:
            return float(self.config.audit_tolerance)
        return DEFAULT_AUDIT_TOLERANCE if rules_file_tolerance is None else float(rules_file_tolerance)

    def record(self, rules: str, rule: str, drop: float, *, tolerance: float,
               step_down: Callable[[], float]) -> float | None:
        """Add one audit's drop; step the rule down when it hurts (returns its new fraction of N, else None)."""
        key = (rules, rule)
        with self._lock:
            window = self._windows.setdefault(key, deque(maxlen=self.config.audit_window))
            window.append(float(drop))
            totals = self._totals.setdefault(key, {"audits": 0, "step_downs": 0, "drop_sum": 0.0})
            totals["audits"] += 1
            totals["drop_sum"] += float(drop)
            self.counters["audits"] += 1
            drops = list(window)
        if len(drops) < self.config.audit_min_audits:
            return None
        bound = lower_bound(drops, self.config.audit_confidence, seed=len(drops))
        if bound <= tolerance:
            return None
        new = step_down()
        with self._lock:
            window.clear()
            totals["step_downs"] += 1
            self.counters["step_downs"] += 1
            self.events.append({"rules": rules, "rule": rule, "audits": len(drops), "mean_drop": sum(drops) / len(drops),
                                "drop_lower": bound, "tolerance": tolerance, "fraction": new})
        logger.warning("flexcache audit: rule %s of %s lost %.3f on average over %d audits (lower bound %.3f > "
                       "tolerance %.3f): it now serves %.0f %% of N", rule, rules, sum(drops) / len(drops),
                       len(drops), bound, tolerance, 100 * new)
        return new

    def estimates(self) -> dict[str, dict[str, Any]]:
        """Per ``"RULES|RULE"``: audits, step-downs, and the window's mean drop and its lower bound."""
        with self._lock:
            items = [(key, list(self._windows[key]), dict(self._totals[key])) for key in self._windows]
        out = {}
        for (rules, rule), drops, totals in items:
            out[f"{rules}|{rule}"] = {
                "rules": rules, "rule": rule, "audits": int(totals["audits"]), "step_downs": int(totals["step_downs"]),
                "window": len(drops), "mean_drop": sum(drops) / len(drops) if drops else None,
                "drop_lower": lower_bound(drops, self.config.audit_confidence, seed=len(drops))
                if len(drops) >= 2 else None}
        return out

    def stats(self) -> dict[str, Any]:
        with self._lock:
            counters, events = dict(self.counters), list(self.events)
        return {**counters, "rate": self.config.audit_rate, "rules": self.estimates(), "step_down_events": events}


__all__ = ["Auditor", "lower_bound"]
