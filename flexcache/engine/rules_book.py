"""Which tables plan a call: a calibrated rules file for its signature, or a stated default.

Depths are measured per model (`flexcache calibrate`). A call is planned with, in order:

1. the rules file (``planner.rules_file``) whose signature is the call's;
2. under ``planner.uncalibrated = "auto"``: the tables the operator wrote in the config, for any
   model; the shipped tables (the toy world's calibration) only for the toy world at the settings
   they were measured at (`core.tables.TOYWORLD_CALIBRATED_AT`);
3. the conservative default: NIRVANA's full-prompt table, no part or region hits.

Every plan says which one served it (`Plan.rules`), and so do `stats()`, the metrics and
`last_call_report`.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections import Counter
from pathlib import Path

from flexcache.core.config import PlannerConfig
from flexcache.core.errors import RulesFileError, RulesSignatureError
from flexcache.core.tables import (
    MULTILINGUAL_MODEL,
    UNCALIBRATED_SIMILARITY_TABLE,
    is_shipped,
    measured_at_shipped_settings,
)
from flexcache.engine.planner import SimilarityPlanner
from flexcache.quality.rules import CalibratedRules, describe_signature, load_rules

logger = logging.getLogger("flexcache.rules")

CONFIGURED, TOYWORLD, UNCALIBRATED = "configured", "toyworld", "uncalibrated"
TABLE_NAMES = ("similarity_table", "part_table", "region_table")


def _canonical_embedder(model: str) -> str:
    """One name per embedder (``multilingual`` is an alias of the USE model)."""
    return MULTILINGUAL_MODEL if model == "multilingual" else model


def rules_planner_config(config: PlannerConfig, rules: CalibratedRules) -> PlannerConfig:
    """`config` with the rules' tables, capturing checkpoints at every fraction the rules serve."""
    fractions = sorted({*config.checkpoint_fractions, *(row[-1] for row in rules.similarity_table),
                        *(row[-1] for row in rules.part_table), *(row[-1] for row in rules.region_table)} - {0.0})
    tables = rules.tables()
    similarity = tables.pop("similarity_table")
    out = dataclasses.replace(config, checkpoint_fractions=tuple(fractions),
                              similarity_table=similarity or config.similarity_table, **tables)
    if not similarity:  # a model on which no full-prompt band was safe: no full-prompt hits
        object.__setattr__(out, "similarity_table", ())
    return out


class PlannerBook:
    """The planner for each generation signature (thread-safe).

    Args:
        config: the planner section.
        embedder_model: ``embedder.model``: a rules file's thresholds must be its cosines.

    Raises:
        RulesFileError: a rules file is missing, truncated, edited, on another embedder's cosines,
            or two files are for the same signature.
    """

    def __init__(self, config: PlannerConfig, embedder_model: str) -> None:
        self.config = config
        self.configured = SimilarityPlanner(config, label=CONFIGURED)
        self.toyworld = SimilarityPlanner(config, label=TOYWORLD)
        self.conservative = SimilarityPlanner(
            dataclasses.replace(config, similarity_table=UNCALIBRATED_SIMILARITY_TABLE, part_table=(),
                                region_table=(), regions=False), label=UNCALIBRATED)
        self.shipped = is_shipped({name: getattr(config, name) for name in TABLE_NAMES})
        self.by_signature: dict[str, SimilarityPlanner] = {}
        for path in config.rules_file:
            rules = load_rules(path)
            if _canonical_embedder(rules.embedder) != _canonical_embedder(embedder_model):
                raise RulesFileError(
                    f"rules file {path} holds cosine thresholds of embedder {rules.embedder!r}, but this cache "
                    f"embeds prompts with {embedder_model!r}: set embedder.model to {rules.embedder!r}, or "
                    "calibrate with this embedder")
            if rules.signature_key in self.by_signature:
                raise RulesFileError(f"rules file {path} is for the same signature as "
                                     f"{self.by_signature[rules.signature_key].label}: keep one")
            self.by_signature[rules.signature_key] = SimilarityPlanner(
                rules_planner_config(config, rules), label=f"rules file {Path(path).name}", rules=rules)
        self._served: Counter[str] = Counter()
        self._warned: set[str] = set()
        self._lock = threading.Lock()

    def check_model(self, model_id: str) -> None:
        """Refuse a pipeline that none of the configured rules files was calibrated for.

        Raises:
            RulesSignatureError: rules files are configured and none is for `model_id`.
        """
        files = [p.rules for p in self.by_signature.values()]
        if files and not any(rules.signature.get("model_id") == model_id for rules in files):
            raise RulesSignatureError(
                f"this pipeline is {model_id!r}, but planner.rules_file holds rules calibrated for "
                + "; ".join(f"{p.label}: {describe_signature(p.rules.signature)}" for p in self.by_signature.values())
                + ". Their depths are never served to another model: calibrate this one (`flexcache calibrate`) "
                "and add its file, or serve it from a cache without rules files (the conservative default)")

    def for_signature(self, signature) -> SimilarityPlanner:
        """The planner whose tables serve calls with `signature` (`engine.records.GenerationSignature`).

        A call of a calibrated model at other settings (steps, size, guidance) than its rules file's
        gets the default, with one warning per signature naming both.
        """
        key = signature.key()
        planner = self.by_signature.get(key)
        if planner is None and self.by_signature and key not in self._warned:
            same_model = [p for p in self.by_signature.values()
                          if p.rules.signature.get("model_id") == signature.model_id]
            if same_model:
                self._warned.add(key)
                logger.warning("calls of %s are not what %s was calibrated for (%s): they get the %s tables",
                               describe_signature(signature.to_dict()), same_model[0].label,
                               describe_signature(same_model[0].rules.signature), self._default(signature).label)
        if planner is None:
            planner = self._default(signature)
        with self._lock:
            self._served[planner.label] += 1
        return planner

    def _default(self, signature=None) -> SimilarityPlanner:
        mode = self.config.uncalibrated
        if mode == "tables" or (mode == "auto" and not self.shipped):
            return self.configured
        if mode == "auto" and signature is not None and measured_at_shipped_settings(signature.to_dict()):
            return self.toyworld
        return self.conservative

    def planners(self) -> list[SimilarityPlanner]:
        return [self.configured, self.toyworld, self.conservative, *self.by_signature.values()]

    def find(self, label: str) -> SimilarityPlanner | None:
        """The planner a plan's ``rules`` label names (None: unknown)."""
        return next((p for p in self.planners() if p.label == label), None)

    def served(self) -> dict[str, int]:
        """Calls planned so far, by the tables that planned them."""
        with self._lock:
            return dict(self._served)


__all__ = ["CONFIGURED", "PlannerBook", "TOYWORLD", "UNCALIBRATED", "rules_planner_config"]
