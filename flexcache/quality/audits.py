"""Online audits: the quality drop each rule costs in service, and a step back when it costs too much.

A sampled hit is run again uncached (`integrations.audits`), both videos are scored, and the drop
(the uncached run's score minus the served one's; for a reference scorer, 1 minus the served
video's score against the uncached one) is recorded against the rule that set the hit's K
(`Plan.rule`, under the tables that planned it, `Plan.rules`). When, after at least
``quality.audit_min_audits`` audits, the *lower* bootstrap bound of the rule's mean drop at
``quality.audit_confidence`` exceeds the tolerance, the rule steps down one checkpoint
(`SimilarityPlanner.step_down`), a warning says so, and the rule's window starts afresh.

Why these statistics:

* The lower bound (not the mean) decides, so a rule that is fine is not stepped down by a few
  unlucky audits; the window keeps the estimate about the rule as it serves now.
* A percentile bootstrap, because calibration fits each rule with the same bound
  (`quality.calibrate.upper_bound`): in service a rule is judged the way it was fitted, and the
  drops (a toy-world reader's are 0 or +-0.2, mostly 0) are far from normal.
* At least 20 audits: below that a bootstrap of such drops is decided by one or two prompts.
  The bound is checked after every audit, so 90 % is not a 10 % false-alarm rate over a run.
  Simulated over 200 audits of drops of 0 or +-0.2 (tolerance 0.02, the defaults), a rule whose
  true mean drop is 0 stepped down in 0.7 % of 300 runs, one at half the tolerance in 11 %, one
  at the tolerance in 31 %; one that loses 0.05 stepped down in 99.7 % (median: after 22 audits)
  and one that loses 0.11 always, after 20.
* Audits queued before a step-down measured the old depth: they are dropped (``stale``), not
  counted against the new one.
"""

from __future__ import annotations

import logging
import random
import threading
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

import torch

from flexcache.core.quality_config import DEFAULT_AUDIT_TOLERANCE, QualityConfig

logger = logging.getLogger("flexcache.audits")


def lower_bound(drops: list[float], confidence: float, *, resamples: int = 2000, seed: int = 0) -> float:
    """The one-sided bootstrap lower bound of the mean drop (percentile method).

    Example:
        >>> lower_bound([0.1] * 5, 0.9)
        0.1
        >>> lower_bound([0.0] * 19 + [0.2], 0.9) < 0.01 < lower_bound([0.2] * 19 + [0.0], 0.9)
        True
    """
    values = torch.tensor(drops, dtype=torch.float64)
    generator = torch.Generator().manual_seed(seed)
    picks = torch.randint(0, len(drops), (resamples, len(drops)), generator=generator)
    return float(torch.quantile(values[picks].mean(dim=1), 1.0 - confidence))


class Auditor:
    """Samples hits to audit and keeps each rule's drop estimate (thread-safe).

    Args:
        config: the ``quality`` section.
        seed: seeds the sampling (None: unseeded). Seeded by default, so a replay (the serving
            bench) samples the same hits.

    Example:
        >>> auditor = Auditor(QualityConfig(audit_rate=1.0, audit_min_audits=20))
        >>> outcomes = [auditor.record("configured", "full@0.87", 0.2, tolerance=0.02, step_down=lambda: 0.3)
        ...             for _ in range(20)]
        >>> outcomes[18:]  # the 20th audit: the rule now serves 30 % of N
        [None, 0.3]
        >>> auditor.estimates()["configured|full@0.87"]["step_downs"]
        1
    """

    def __init__(self, config: QualityConfig, *, seed: int | None = 0) -> None:
        self.config = config
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._windows: dict[tuple[str, str], deque[float]] = {}
        self._totals: dict[tuple[str, str], dict[str, float]] = {}
        self._bounds: dict[tuple[str, str], float | None] = {}  # the window's bound, as of its last audit
        self.counters = {"sampled": 0, "audits": 0, "step_downs": 0, "dropped": 0, "failed": 0, "stale": 0,
                         "seconds": 0.0}
        self.skipped: Counter[str] = Counter()  # audits not made, by reason (no scorer, unreadable output, ...)
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

    def skip(self, reason: str) -> None:
        """Count an audit that was not made, and why (``stats()["audits"]["skipped"]``)."""
        with self._lock:
            self.skipped[reason] += 1

    def generation(self, rules: str, rule: str) -> int:
        """How often the rule stepped down so far: an audit queued at one generation measures that depth."""
        with self._lock:
            return int(self._totals.get((rules, rule), {}).get("step_downs", 0))

    def tolerance_for(self, rules_file_tolerance: float | None) -> float:
        if self.config.audit_tolerance is not None:
            return float(self.config.audit_tolerance)
        return DEFAULT_AUDIT_TOLERANCE if rules_file_tolerance is None else float(rules_file_tolerance)

    def record(self, rules: str, rule: str, drop: float, *, tolerance: float,
               step_down: Callable[[], float], generation: int | None = None) -> float | None:
        """Add one audit's drop; step the rule down when it hurts (returns its new fraction of N, else None).

        Args:
            rules, rule: the tables that planned the audited hit and the row that set its K.
            drop: the audit's quality drop (scorer units; > 0: the hit was worse).
            tolerance: the drop the rule may cost.
            step_down: lowers the rule one checkpoint and returns its new fraction of N.
            generation: `generation` when the hit was sampled; an audit from before a step-down is
                dropped (counted as ``stale``). None: always counted.
        """
        key = (rules, rule)
        with self._lock:
            totals = self._totals.setdefault(key, {"audits": 0, "step_downs": 0, "drop_sum": 0.0})
            if generation is not None and generation != totals["step_downs"]:
                self.counters["stale"] += 1
                return None
            window = self._windows.setdefault(key, deque(maxlen=self.config.audit_window))
            window.append(float(drop))
            totals["audits"] += 1
            totals["drop_sum"] += float(drop)
            self.counters["audits"] += 1
            drops, before = list(window), totals["step_downs"]
        bound = lower_bound(drops, self.config.audit_confidence, seed=len(drops)) if len(drops) >= 2 else None
        with self._lock:
            if totals["step_downs"] != before:  # another thread stepped it down meanwhile: this bound is old
                return None
            self._bounds[key] = bound
            if len(drops) < self.config.audit_min_audits or bound is None or bound <= tolerance:
                return None
            # Under the lock, so two audits finishing together step the rule down once.
            new = step_down()
            window.clear()
            self._bounds[key] = None
            totals["step_downs"] += 1
            self.counters["step_downs"] += 1
            mean = sum(drops) / len(drops)
            self.events.append({"rules": rules, "rule": rule, "audits": len(drops), "mean_drop": mean,
                                "drop_lower": bound, "tolerance": tolerance, "fraction": new})
        logger.warning("flexcache audit: rule %s of %s lost %.3f on average over %d audits (lower bound %.3f > "
                       "tolerance %.3f): it now serves %.0f %% of N", rule, rules, mean, len(drops), bound,
                       tolerance, 100 * new)
        return new

    def estimates(self) -> dict[str, dict[str, Any]]:
        """Per ``"RULES|RULE"``: audits, step-downs, and the window's mean drop and its lower bound."""
        with self._lock:
            items = [(key, list(self._windows.get(key, ())), dict(self._totals[key]), self._bounds.get(key))
                     for key in self._totals]
        return {f"{rules}|{rule}": {
            "rules": rules, "rule": rule, "audits": int(totals["audits"]), "step_downs": int(totals["step_downs"]),
            "window": len(drops), "mean_drop": sum(drops) / len(drops) if drops else None, "drop_lower": bound}
            for (rules, rule), drops, totals, bound in items}

    def stats(self) -> dict[str, Any]:
        with self._lock:
            counters, events, skipped = dict(self.counters), list(self.events), dict(self.skipped)
        return {**counters, "skipped": skipped, "rate": self.config.audit_rate, "rules": self.estimates(),
                "step_down_events": events}


__all__ = ["Auditor", "lower_bound"]
