"""Calibrated rules files: the depths `flexcache calibrate` measured on one model, bound to its signature.

A rules file holds the planner's three tables (full prompt, prompt parts, regions) as fitted on
one generation signature (model, weights, scheduler, steps, size, guidance), with what they were
fitted with: the scorer, the tolerated quality drop and its confidence, the embedder whose
cosines the thresholds are on, and a per-rule, per-band report of the measurements. The cache
serves a file's depths only to calls with that exact signature (``planner.rules_file``).

The file is YAML with a checksum over everything else: a truncated or hand-edited file is refused
(`RulesFileError`), never half-read. To change depths by hand, write the tables into the config
instead (``planner.similarity_table`` ...), where they are visibly the operator's.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flexcache.core.errors import RulesFileError, RulesSignatureError

FORMAT = "flexcache-rules/1"
REGION_PARTS = ("background", "object")


def signature_key(signature: dict[str, Any]) -> str:
    """The key `GenerationSignature.key()` gives the signature whose `to_dict()` is `signature`."""
    payload = json.dumps(signature, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def describe_signature(signature: dict[str, Any]) -> str:
    """One line naming what a signature is, for error messages and reports."""
    extra = ", ".join(f"{name}={value}" for name, value in signature.get("extra", ()))
    weights = signature.get("weights", "")
    return (f"{signature.get('model_id')} ({signature.get('scheduler')}, {signature.get('num_steps')} steps, "
            f"{signature.get('width')}x{signature.get('height')}, {signature.get('num_frames')} frames"
            + (f", {extra}" if extra else "") + (f", weights {weights[:12]}" if weights else "") + ")")


def _float_pairs(rows: Any, name: str) -> tuple[tuple[float, float], ...]:
    try:
        out = tuple((float(a), float(b)) for a, b in rows)
    except (TypeError, ValueError) as exc:
        raise RulesFileError(f"{name} must be [min_cosine, fraction] rows; got {rows!r:.200}") from exc
    _check_fractions(name, [row[-1] for row in out])
    return out


def _check_fractions(name: str, fractions: list[float]) -> None:
    if not all(math.isfinite(f) and 0.0 <= f < 1.0 for f in fractions):
        raise RulesFileError(f"{name}: every fraction of N must be in [0, 1); got {fractions}")


@dataclass(frozen=True)
class CalibratedRules:
    """The planner tables fitted on one generation signature, and how they were fitted.

    Attributes:
        signature: the `GenerationSignature.to_dict()` the measurements ran at.
        scorer: the scorer that judged quality (``toyworld``, ``clip``, ``reference`` or a callable's name).
        tolerance: the largest quality drop (in the scorer's units) a rule may cost.
        confidence: how sure the fit is that the mean drop stays within `tolerance` (bootstrap bound).
        embedder: ``embedder.model`` whose cosines the thresholds are on.
        created: when it was written (ISO 8601, UTC).
        similarity_table: ``(min_cosine, fraction)`` rows for the full prompt.
        part_table: ``(min_object_cosine, min_background_cosine, fraction)`` rows.
        region_table: ``(part kept, min_cosine, fraction)`` rows (empty: no region hits).
        region_method: the region method the region rows were measured with (None without rows).
        checkpoint_fractions: the fractions of N the calibration measured (a cache using the rules
            captures checkpoints there).
        report: the measurements per rule and band (pairs, drops and their bounds, diversity,
            false-match rates, runs), as `flexcache calibrate` wrote them.
    """

    signature: dict[str, Any]
    scorer: str
    tolerance: float
    confidence: float
    embedder: str
    created: str
    similarity_table: tuple[tuple[float, float], ...] = ()
    part_table: tuple[tuple[float, float, float], ...] = ()
    region_table: tuple[tuple[str, float, float], ...] = ()
    region_method: str | None = None
    checkpoint_fractions: tuple[float, ...] = ()
    report: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.signature, dict) or "model_id" not in self.signature:
            raise RulesFileError("signature must be a GenerationSignature's to_dict()")
        object.__setattr__(self, "similarity_table", _float_pairs(self.similarity_table, "similarity_table"))
        try:
            parts = tuple((float(a), float(b), float(c)) for a, b, c in self.part_table)
            regions = tuple((str(p), float(a), float(b)) for p, a, b in self.region_table)
        except (TypeError, ValueError) as exc:
            raise RulesFileError(f"malformed part_table or region_table: {exc}") from exc
        if any(part not in REGION_PARTS for part, _, _ in regions):
            raise RulesFileError(f"region_table parts must be among {REGION_PARTS}; got {regions}")
        _check_fractions("part_table", [row[2] for row in parts])
        _check_fractions("region_table", [row[2] for row in regions])
        if regions and self.region_method not in ("restart", "renoise"):
            raise RulesFileError(f"region rows need region_method restart or renoise; got {self.region_method!r}")
        object.__setattr__(self, "part_table", parts)
        object.__setattr__(self, "region_table", regions)
        object.__setattr__(self, "checkpoint_fractions", tuple(float(f) for f in self.checkpoint_fractions))
        if not 0.0 < self.confidence < 1.0 or not math.isfinite(self.tolerance) or self.tolerance < 0:
            raise RulesFileError(f"confidence must be in (0, 1) and tolerance >= 0; got {self.confidence}, "
                                 f"{self.tolerance}")

    @property
    def signature_key(self) -> str:
        return signature_key(self.signature)

    def describe(self) -> str:
        """What the file was fitted on, in one line."""
        return (f"{describe_signature(self.signature)}; scorer {self.scorer}, drop <= {self.tolerance:g} "
                f"at {self.confidence:.0%} confidence; calibrated {self.created[:10]}")

    def matches(self, signature) -> bool:
        """Whether a `GenerationSignature` is the one these rules were fitted on."""
        return signature.key() == self.signature_key

    def check_signature(self, signature, *, where: str = "this pipeline") -> None:
        """Refuse to serve these rules to another signature.

        Raises:
            RulesSignatureError: `signature` differs; the message names both and the fields that differ.
        """
        if self.matches(signature):
            return
        other = signature.to_dict()
        differ = sorted(k for k in set(other) | set(self.signature) if other.get(k) != self.signature.get(k))
        raise RulesSignatureError(
            f"the rules file was calibrated for {describe_signature(self.signature)}, but {where} is "
            f"{describe_signature(other)} (differs in {', '.join(differ)}); its depths are not served there. "
            "Calibrate for these settings (`flexcache calibrate`) or drop the file from planner.rules_file")

    def tables(self) -> dict[str, Any]:
        """The planner fields these rules set (`dataclasses.replace(planner_config, **rules.tables())`)."""
        return {"similarity_table": self.similarity_table, "part_table": self.part_table,
                "region_table": self.region_table, "regions": bool(self.region_table),
                **({"region_method": self.region_method} if self.region_table else {})}

    def to_dict(self) -> dict[str, Any]:
        body = {
            "format": FORMAT,
            "created": self.created,
            "signature": self.signature,
            "signature_key": self.signature_key,
            "described": describe_signature(self.signature),
            "embedder": self.embedder,
            "scorer": self.scorer,
            "tolerance": self.tolerance,
            "confidence": self.confidence,
            "region_method": self.region_method,
            "checkpoint_fractions": list(self.checkpoint_fractions),
            "tables": {"similarity_table": [list(r) for r in self.similarity_table],
                       "part_table": [list(r) for r in self.part_table],
                       "region_table": [list(r) for r in self.region_table]},
            "report": self.report,
        }
        return {**body, "checksum": _checksum(body)}

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "rules file") -> "CalibratedRules":
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            found = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise RulesFileError(f"{source} is not a FlexCache rules file (format {found!r}, expected {FORMAT!r}); "
                                 "write one with `flexcache calibrate`")
        body = {k: v for k, v in data.items() if k != "checksum"}
        if data.get("checksum") != _checksum(body):
            raise RulesFileError(f"{source} fails its checksum: it was truncated or edited after calibration. "
                                 "Recalibrate, or restore the file; depths written by hand belong in "
                                 "planner.similarity_table / part_table / region_table")
        try:
            tables = data["tables"]
            rules = cls(signature=data["signature"], scorer=str(data["scorer"]), tolerance=float(data["tolerance"]),
                        confidence=float(data["confidence"]), embedder=str(data["embedder"]),
                        created=str(data["created"]), similarity_table=tables["similarity_table"],
                        part_table=tables["part_table"], region_table=tables["region_table"],
                        region_method=data.get("region_method"),
                        checkpoint_fractions=data.get("checkpoint_fractions", ()), report=data.get("report", {}))
        except (KeyError, TypeError, ValueError) as exc:
            raise RulesFileError(f"{source} is missing or mangles a field: {exc!r}") from exc
        if data.get("signature_key") != rules.signature_key:
            raise RulesFileError(f"{source}: its signature_key does not match its signature")
        return rules

    def replace(self, **changes) -> "CalibratedRules":
        return dataclasses.replace(self, **changes)


def _checksum(body: dict[str, Any]) -> str:
    payload = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(payload.encode()).hexdigest()


def save_rules(rules: CalibratedRules, path: str | os.PathLike) -> Path:
    """Write `rules` as YAML, atomically (a crash leaves the old file or the new one, never half)."""
    import yaml

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text("# FlexCache calibrated rules: written by `flexcache calibrate`; edits break the checksum.\n"
                   + yaml.safe_dump(rules.to_dict(), sort_keys=False, allow_unicode=True))
    os.replace(tmp, path)
    return path


def load_rules(path: str | os.PathLike) -> CalibratedRules:
    """Read and verify a rules file.

    Raises:
        RulesFileError: the file is missing, not YAML, not a rules file, truncated or edited.
    """
    import yaml

    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise RulesFileError(f"cannot read rules file {path}: {exc.strerror or exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RulesFileError(f"rules file {path} is not valid YAML (truncated?): {exc}") from exc
    return CalibratedRules.from_dict(data, source=f"rules file {path}")


__all__ = ["CalibratedRules", "FORMAT", "describe_signature", "load_rules", "save_rules", "signature_key"]
