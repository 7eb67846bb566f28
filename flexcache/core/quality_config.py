"""The ``quality`` section: online audits of served hits (`quality.audits`)."""

from __future__ import annotations

from dataclasses import dataclass

from flexcache.core.sections import require as _require

DEFAULT_AUDIT_TOLERANCE = 0.02
# The scorers `flexcache serve` can build by name (`quality.scorers.SCORERS`; a test keeps them equal).
AUDIT_SCORERS = ("toyworld", "clip", "reference")


@dataclass(frozen=True)
class QualityConfig:
    """Online audits: a sampled hit is also run uncached, both are scored, and a rule that hurts steps back.

    Audits need a scorer: ``enable_flexcache(pipe, cache, audit_scorer=...)`` (a `quality.scorers`
    scorer or any ``(video, prompt) -> float``); without one nothing is sampled. Sampled hits are
    queued and run when the caller has time (``run_pending_audits(pipe)``; ``flexcache serve``'s
    workers run them between jobs): each costs one full uncached run.

    Args:
        audit_rate: the share of hits audited (0: off, the default; every audit is a full run).
        audit_confidence: a rule steps down when the lower bound of its mean drop at this confidence
            (bootstrap over its window) exceeds the tolerance.
        audit_min_audits: audits of one rule before it may step down. Below 20 the bound of drops
            that are mostly 0 is decided by one or two prompts (`quality.audits` gives the measured
            false-alarm rates).
        audit_window: the most recent audits per rule the estimate uses; a step-down starts it afresh.
        audit_tolerance: the drop a rule may cost, in the scorer's units. None: the tolerance of the
            rules file that planned the hit, else 0.02 (2 points of the toy world's 0-1 adherence;
            for other scorers, a CLIP cosine or 1 - SSIM).
        audit_queue: sampled hits waiting to be audited at most; beyond it the oldest is dropped
            (counted). Each waiting audit holds its call's arguments and its served video (81
            frames of 720p as float32 frames: 0.9 GB), and one that waits long measures a pipeline
            too busy to audit anyway: keep it small.
        audit_scorer: the scorer ``flexcache serve`` audits with: ``toyworld``, ``clip`` or
            ``reference``. None: the one the rules files were calibrated with (when they agree), else
            ``toyworld`` for the toy world (other models are then not audited). From Python, pass
            the scorer itself to ``enable_flexcache``. A rules file measured with another scorer
            has its tolerance in other units: its rules are not audited unless ``audit_tolerance``
            is set.
        audit_scorer_model: the local CLIP checkpoint directory of the ``clip`` scorer (also when
            the rules files name it).
    """

    audit_rate: float = 0.0
    audit_confidence: float = 0.9
    audit_min_audits: int = 20
    audit_window: int = 200
    audit_tolerance: float | None = None
    audit_queue: int = 8
    audit_scorer: str | None = None
    audit_scorer_model: str | None = None

    def __post_init__(self) -> None:
        _require(isinstance(self.audit_rate, (int, float)) and 0.0 <= self.audit_rate <= 1.0,
                 f"quality.audit_rate must be in [0, 1] (0: no audits); got {self.audit_rate!r}")
        _require(isinstance(self.audit_confidence, (int, float)) and 0.5 <= self.audit_confidence < 1.0,
                 f"quality.audit_confidence must be in [0.5, 1); got {self.audit_confidence!r}")
        _require(isinstance(self.audit_min_audits, int) and self.audit_min_audits >= 2,
                 f"quality.audit_min_audits must be an int >= 2; got {self.audit_min_audits!r}")
        _require(isinstance(self.audit_window, int) and self.audit_window >= self.audit_min_audits,
                 f"quality.audit_window must be an int >= audit_min_audits; got {self.audit_window!r}")
        _require(self.audit_tolerance is None or (isinstance(self.audit_tolerance, (int, float))
                                                 and self.audit_tolerance >= 0),
                 f"quality.audit_tolerance must be >= 0 or null (the rules file's); got {self.audit_tolerance!r}")
        _require(isinstance(self.audit_queue, int) and self.audit_queue >= 1,
                 f"quality.audit_queue must be an int >= 1; got {self.audit_queue!r}")
        _require(self.audit_scorer is None or self.audit_scorer in AUDIT_SCORERS,
                 f"quality.audit_scorer must be one of {', '.join(AUDIT_SCORERS)} or null (the rules file's); "
                 f"got {self.audit_scorer!r}")
        _require(self.audit_scorer != "clip" or self.audit_scorer_model is not None,
                 "quality.audit_scorer clip needs quality.audit_scorer_model: the local directory of a CLIP "
                 "checkpoint saved with save_pretrained")
        _require(self.audit_scorer in (None, "clip") or self.audit_scorer_model is None,
                 f"quality.audit_scorer_model is read by the clip scorer only, not by {self.audit_scorer!r}: "
                 "drop it or set audit_scorer: clip")
