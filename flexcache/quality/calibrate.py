"""`flexcache calibrate`: fit each rule's depth per similarity band on the operator's model and prompts.

For every chosen pair (`quality.pairs`) the source runs in full (caching its checkpoints), the
target runs in full (its own video: the quality baseline), and the target is resumed from the
source at each candidate depth K by the rule's method, through the cache's own serving path
(`quality.pipelines`). The drop of a resumed run is the scorer's score of the target's own run
minus that of the resumed one (for the ``reference`` scorer, 1 - SSIM against the target's own run).

A band's depth is the deepest K up to which every candidate depth keeps the *upper* bootstrap
bound of the mean drop (at the stated confidence) within the tolerance. The bound is taken over the
band's drops plus one virtual pair that lost what a loss typically cost in this calibration: eight
pairs that all kept their quality do not show a mean drop of 0, and the bootstrap alone would say so.
On the toy world (a loss is one attribute, 0.2) a band needs about 30 clean pairs to admit a
2-point tolerance at 90 %. Bands with too few pairs
take the depth of the band below; depths never decrease with similarity. Progress is appended to
a JSONL file as each run finishes, so an interrupted calibration resumes where it stopped.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import random
import time
from pathlib import Path
from typing import Any

import torch

from flexcache.errors import CalibrationError, FlexCacheError
from flexcache.quality.pairs import (
    BAND_EDGES,
    RULES,
    SAME_TEXT,
    WHOLE,
    Pair,
    band_label,
    prompt_cosines,
    require_enough,
    select_pairs,
)
from flexcache.quality.rules import CalibratedRules, save_rules

DEFAULT_FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5)


def read_prompts(path: str | Path) -> list[str]:
    """Prompts of a file: one per line (``#`` comments and blank lines skipped), or JSONL with ``prompt``."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise CalibrationError(f"cannot read prompt file {path}: {exc}") from exc
    prompts = []
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        if text.startswith("{"):
            try:
                text = str(json.loads(text)["prompt"]).strip()
            except (ValueError, KeyError, TypeError) as exc:
                raise CalibrationError(f"{path}:{number}: a JSON line needs a \"prompt\" string") from exc
        prompts.append(text)
    return list(dict.fromkeys(prompts))  # a repeated prompt is one prompt (its same-text pair measures it)


def upper_bound(drops: list[float], confidence: float, *, resamples: int = 2000, seed: int = 0) -> float:
    """The one-sided bootstrap upper bound of the mean drop (percentile method)."""
    if len(drops) == 1:
        return float("inf")  # one pair bounds nothing
    values = torch.tensor(drops, dtype=torch.float64)
    generator = torch.Generator().manual_seed(seed)
    picks = torch.randint(0, len(drops), (resamples, len(drops)), generator=generator)
    return float(torch.quantile(values[picks].mean(dim=1), confidence))


class Progress:
    """Finished runs, appended to a JSONL file (one line each) so a restart skips them."""

    def __init__(self, path: Path | None, header: dict[str, Any]) -> None:
        self.path, self.done = path, {}
        if path is None:
            return
        if path.exists():
            lines = []
            for line in path.read_text().splitlines():
                try:
                    lines.append(json.loads(line))
                except ValueError:
                    continue  # the line a crash cut short: that run is done again

            if lines and lines[0].get("header") != header:
                raise CalibrationError(f"progress file {path} is for another calibration (other settings, prompts "
                                       "or budget): remove it to start afresh, or write elsewhere (--out)")
            self.done = {line["key"]: line["value"] for line in lines[1:] if "key" in line}
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"header": header}) + "\n")

    def add(self, key: str, value: Any) -> None:
        self.done[key] = value
        if self.path is not None:
            with self.path.open("a") as handle:
                handle.write(json.dumps({"key": key, "value": value}) + "\n")


def _distance(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).pow(2).mean().sqrt())


class _Runner:
    """Runs and scores what a selection needs, through a `CalibrationPipeline`, saving progress."""

    def __init__(self, target, scorer, prompts: list[str], progress: Progress, bar) -> None:
        self.target, self.scorer, self.prompts, self.progress, self.bar = target, scorer, prompts, progress, bar
        self.videos: dict[tuple[int, int], torch.Tensor] = {}  # (prompt, seed offset) -> its full run, uint8

    def _score(self, video: torch.Tensor, prompt: int, reference: torch.Tensor | None, what: str) -> float:
        try:
            refs = reference.float().div(255) if reference is not None and self.scorer.needs_reference else None
            return float(self.scorer.score(video, [self.prompts[prompt]], refs)[0])
        except Exception as exc:
            raise CalibrationError(f"scorer {self.scorer.name!r} failed on {what} "
                                   f"({self.prompts[prompt][:80]!r}): {exc}. Progress so far is saved") from exc

    def full(self, prompt: int, seed_offset: int = 0) -> torch.Tensor:
        """The prompt's full run (uint8 video); its score saved under ``full|prompt|seed``."""
        key = (prompt, seed_offset)
        if key not in self.videos:
            settings = self.target.settings
            if seed_offset:
                self.target.settings = type(settings)(**{**settings.to_dict(), "seed": settings.seed + seed_offset})
            try:
                video = self.target.full_run(self.prompts[prompt])
            finally:
                self.target.settings = settings
            self.bar.update(1)
            self.videos[key] = video.clamp(0, 1).mul(255).round().to(torch.uint8)
            if "signature" not in self.progress.done and self.target.signature is not None:
                self.progress.add("signature", self.target.signature)
            name = f"full|{prompt}|{seed_offset}"
            if name not in self.progress.done:
                score = 1.0 if self.scorer.needs_reference else self._score(video, prompt, None, "a full run")
                self.progress.add(name, score)
        return self.videos[key]

    def resumed(self, pair: Pair, method: str, fraction: float) -> dict[str, float] | None:
        key = f"resumed|{pair.source}|{pair.target}|{method}|{fraction:g}"
        if key in self.progress.done:
            return self.progress.done[key]
        reference = self.full(pair.target)
        source = self.full(pair.source)
        video = self.target.resumed_run(self.prompts[pair.source], self.prompts[pair.target], method, fraction)
        self.bar.update(1)
        if video is None:
            value = None
        else:
            what = f"the pair {self.prompts[pair.source][:60]!r} -> target at K={fraction:g} of N ({method})"
            value = {"score": self._score(video, pair.target, reference, what),
                     "to_target": _distance(video.clamp(0, 1) * 255, reference),
                     "to_source": _distance(video.clamp(0, 1) * 255, source)}
        self.progress.add(key, value)
        return value


def calibrate(pipeline, prompts, *, scorer="toyworld", scorer_model: str | None = None, steps: int = 20,
              shift: float | None = None, guidance: float | None = None, height: int | None = None,
              width: int | None = None, frames: int | None = None, seed: int = 0,
              fractions: tuple[float, ...] = DEFAULT_FRACTIONS, budget_runs: int = 600, pairs_per_band: int = 30,
              min_pairs: int = 4, tolerance: float = 0.02, confidence: float = 0.9, min_diversity: float = 0.0,
              diversity_pairs: int = 4, rules: tuple[str, ...] = tuple(RULES), region_method: str = "restart",
              embedder: str = "multilingual", out: str | Path | None = None, progress_path: str | Path | None = None,
              show_progress: bool = True, device: str | None = None) -> CalibratedRules:
    """Calibrate the planner's rules on a model; write and return the rules file.

    Args:
        pipeline: ``"toyworld"``, a diffusers model id or local path, or a `CalibrationPipeline`.
        prompts: the operator's prompts: a file (`read_prompts`) or a list.
        scorer: a scorer name, `Scorer` or callable (`quality.scorers.build_scorer`); `scorer_model` its model.
        steps, shift, guidance, height, width, frames, seed: the generation settings every run uses.
        fractions: candidate depths (fractions of N).
        budget_runs: pipeline runs allowed (full and resumed runs; diversity runs included).
        pairs_per_band, min_pairs: the most pairs a band gets, and the fewest it is fitted on.
        tolerance, confidence: a depth is kept while the upper bound of the mean drop at `confidence`
            stays within `tolerance` (in the scorer's units).
        min_diversity: the least share of the across-seed difference a same-text or near-duplicate hit
            must keep (0: not bounded).
        diversity_pairs: pairs of the top full-prompt bands whose target also runs at another seed.
        rules: which rules to calibrate (`quality.pairs.RULES`).
        region_method: ``restart`` or ``renoise`` for the region rules.
        embedder: ``embedder.model`` of the cache that will load the rules.
        out: where to write the rules file (None: not written).
        progress_path: the JSONL progress file (default: next to `out`).

    Raises:
        CalibrationError: too few prompts or pairs for the budget, a scorer that fails, a progress
            file of another calibration.
    """
    from flexcache.quality.pipelines import CalibrationPipeline, GenerationSettings, build_calibration_pipeline
    from flexcache.quality.scorers import build_scorer

    started = time.perf_counter()
    unknown = [r for r in rules if r not in RULES]
    if unknown:
        raise CalibrationError(f"unknown rules {unknown}; choose among {list(RULES)}")
    if not fractions or any(not 0 < f < 1 for f in fractions) or budget_runs < 1 or min_pairs < 2:
        raise CalibrationError("fractions must be in (0, 1), --budget-runs >= 1 and min_pairs >= 2")
    prompt_list = read_prompts(prompts) if isinstance(prompts, (str, Path)) else list(dict.fromkeys(prompts))
    if len(prompt_list) < 2:
        raise CalibrationError(f"the prompt file holds {len(prompt_list)} distinct prompts; calibration needs "
                               f"pairs of related prompts: give at least {min_pairs * 4}, ideally a few hundred")
    score = build_scorer(scorer, model_path=scorer_model, device=device or "cpu")
    fractions = tuple(sorted(set(fractions)))
    settings = GenerationSettings(steps=steps, shift=shift, guidance=guidance, height=height, width=width,
                                  frames=frames, seed=seed)
    from flexcache.config import EmbedderConfig
    from flexcache.engine import build_embedder

    cosines = prompt_cosines(prompt_list, build_embedder(EmbedderConfig(model=embedder, device="cpu")))
    selection = select_pairs(cosines, fractions=fractions, budget_runs=budget_runs, pairs_per_band=pairs_per_band,
                             rules=tuple(rules), seed=seed)
    require_enough(selection, min_pairs=min_pairs, prompts=len(prompt_list), budget_runs=budget_runs)
    diversity = _diversity_pairs(selection, diversity_pairs, budget_runs - selection.runs)
    name = pipeline if isinstance(pipeline, str) else "custom"
    # What a saved run's result depends on: a rerun with another budget, band size or rule set reuses the runs.
    header = {"pipeline": name, "settings": settings.to_dict(), "scorer": getattr(score, "name", str(scorer)),
              "region_method": region_method, "embedder": embedder,
              "prompts_sha256": hashlib.sha256("\n".join(prompt_list).encode()).hexdigest()}
    if progress_path is None and out is not None:
        progress_path = Path(str(out) + ".progress.jsonl")
    progress = Progress(Path(progress_path) if progress_path else None, header)
    target = pipeline if isinstance(pipeline, CalibrationPipeline) else build_calibration_pipeline(
        pipeline, settings, embedder_model=embedder, region_method=region_method, device=device)
    target.fractions = fractions
    from tqdm.auto import tqdm

    total = selection.runs + len(diversity)
    with tqdm(total=total, desc="calibration runs", unit="run", disable=not show_progress) as bar:
        runner = _Runner(target, score, prompt_list, progress, bar)
        try:
            measured = _measure(runner, selection, diversity, fractions)
        finally:
            target.close()
    rules_out = _fit(selection, measured, cosines, fractions=fractions, min_pairs=min_pairs, tolerance=tolerance,
                     confidence=confidence, min_diversity=min_diversity, needs_reference=score.needs_reference,
                     steps=steps)
    report = {**rules_out.pop("report"), "settings": header, "fractions": list(fractions), "budget_runs": budget_runs,
              "pairs_per_band": pairs_per_band, "rules_calibrated": list(rules),
              "prompts": len(prompt_list), "runs": runner.target.runs,
              "runs_planned": total, "seconds": round(time.perf_counter() - started, 1),
              "min_pairs": min_pairs, "min_diversity": min_diversity}
    if target.signature is None and "signature" in progress.done:
        target.signature = progress.done["signature"]  # every run was saved: a refit of saved progress
    if target.signature is None:
        raise CalibrationError("no run reached the cache: remove the progress file and calibrate again")
    result = CalibratedRules(signature=target.signature, scorer=header["scorer"], tolerance=tolerance,
                             confidence=confidence, embedder=embedder,
                             created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                             region_method=region_method if rules_out["region_table"] else None,
                             checkpoint_fractions=fractions, report=report, **rules_out)
    if out is not None:
        save_rules(result, out)
    return result


def _diversity_pairs(selection, count: int, runs_left: int) -> list[Pair]:
    """Whole-latent pairs of the full prompt's top bands whose target also runs at another seed."""
    top = [b for b, edge in enumerate(BAND_EDGES["full"]) if edge >= 0.95]
    pairs = [p for (rule, band), ps in selection.pairs.items() if rule == "full" and band in top for p in ps]
    return pairs[: max(0, min(count, runs_left))]


def _measure(runner: _Runner, selection, diversity: list[Pair], fractions) -> dict[str, Any]:
    by_target: dict[int, list[tuple[Pair, str]]] = {}
    for source, target, method in sorted(selection.resumed):
        by_target.setdefault(target, []).append((Pair(source, target), method))
    resumed: dict[tuple[int, int, str, float], dict | None] = {}
    for target in sorted(by_target):  # one target's reference video at a time
        for pair, method in by_target[target]:
            for fraction in fractions:
                resumed[(pair.source, pair.target, method, fraction)] = runner.resumed(pair, method, fraction)
    spread = {}
    for pair in diversity:  # the target at another seed: how far apart uncached seeds land
        spread[(pair.source, pair.target)] = _distance(runner.full(pair.target, 1).float(),
                                                       runner.full(pair.source).float())
    full_scores = {int(k.split("|")[1]): v for k, v in runner.progress.done.items()
                   if k.startswith("full|") and k.endswith("|0")}
    return {"resumed": resumed, "full": full_scores, "spread": spread}


def typical_loss(measured, needs_reference: bool) -> float | None:
    """The mean of the drops that were losses (> 0) over every resumed run measured; None: no run lost."""
    losses = []
    for (source, target, _, _), value in measured["resumed"].items():
        if value is not None:
            drop = (1.0 if needs_reference else measured["full"][target]) - value["score"]
            if drop > 1e-9:
                losses.append(drop)
    return sum(losses) / len(losses) if losses else None


def _fit(selection, measured, cosines, *, fractions, min_pairs, tolerance, confidence, min_diversity,
         needs_reference, steps) -> dict[str, Any]:
    tables: dict[str, list] = {"similarity_table": [], "part_table": [], "region_table": []}
    # A band whose pairs all kept their quality does not prove a mean drop of 0: each band's drops get one
    # virtual pair that lost what a loss typically costs here, so n clean pairs bound it near loss / (n + 1).
    virtual = typical_loss(measured, needs_reference)
    report: dict[str, Any] = {"rules": {}, "virtual_loss": virtual}
    for rule, (method, kind) in RULES.items():
        edges = BAND_EDGES[kind]
        bands = []
        for band in range(len(edges)):
            pairs = selection.pairs.get((rule, band))
            if pairs is None:
                continue
            bands.append(_fit_band(rule, band, edges, pairs, method, measured, fractions=fractions,
                                   min_pairs=min_pairs, tolerance=tolerance, confidence=confidence,
                                   min_diversity=min_diversity, needs_reference=needs_reference, virtual=virtual))
        _inherit_and_make_monotone(bands)
        rows = []
        for row in bands:
            if row["fitted"] > 0 and (not rows or row["fitted"] > rows[-1][1]):
                rows.append((row["lower"], row["fitted"]))
        threshold = rows[0][0] if rows else None
        matrix = cosines.of(kind)
        off_diagonal = matrix[~torch.eye(matrix.shape[0], dtype=torch.bool)]
        off_diagonal = off_diagonal[~off_diagonal.isnan()]
        harmful = [d for row in bands if row["fitted"] > 0 for d in row["drops_at_fitted"]]
        report["rules"][rule] = {
            "method": method, "cosine": kind, "bands": bands, "rows": [list(r) for r in rows],
            "threshold": threshold,
            # false matches: how many random prompt pairs of the file the rule admits, and how many of the
            # measured admitted pairs lost more than the tolerance at the depth served
            "random_pairs_admitted": None if threshold is None or not off_diagonal.numel()
            else float((off_diagonal >= threshold).float().mean()),
            "harmful_share": float(sum(d > tolerance for d in harmful) / len(harmful)) if harmful else None,
        }
        if rule == "full":
            tables["similarity_table"] = rows
        elif rule == "object_part":
            tables["part_table"] += [(lower, -1.0, f) for lower, f in rows]
        elif rule == "background_part":
            tables["part_table"] += [(-1.0, lower, f) for lower, f in rows]
        elif rule == "region_background":
            tables["region_table"] += [("background", lower, f) for lower, f in rows]
        elif rule == "region_object":
            tables["region_table"] += [("object", lower, f) for lower, f in rows]
    report["steps"] = steps
    return {**tables, "report": report}


def _fit_band(rule, band, edges, pairs, method, measured, *, fractions, min_pairs, tolerance, confidence,
              min_diversity, needs_reference, virtual: float | None = None) -> dict[str, Any]:
    by_fraction, fitted, stop = {}, 0.0, False
    drops_by_fraction: dict[float, list[float]] = {}
    for fraction in fractions:
        drops, unservable, to_source = [], 0, []
        for pair in pairs:
            value = measured["resumed"].get((pair.source, pair.target, method, fraction))
            if value is None:
                unservable += 1
                continue
            baseline = 1.0 if needs_reference else measured["full"][pair.target]
            drops.append(baseline - value["score"])
            if (pair.source, pair.target) in measured["spread"]:
                to_source.append(value["to_source"] / max(measured["spread"][(pair.source, pair.target)], 1e-9))
        bound = upper_bound(drops + ([virtual] if virtual else []), confidence, seed=band) if drops else float("inf")
        diversity = sum(to_source) / len(to_source) if to_source else None
        by_fraction[f"{fraction:g}"] = {"pairs": len(drops), "unservable": unservable,
                                        "mean_drop": sum(drops) / len(drops) if drops else None,
                                        "drop_upper": None if bound == float("inf") else bound,
                                        "diversity": diversity}
        drops_by_fraction[fraction] = drops
        ok = len(drops) >= min_pairs and bound <= tolerance and (
            diversity is None or min_diversity <= 0 or diversity >= min_diversity)
        if ok and not stop:
            fitted = fraction
        else:
            stop = True  # depths are kept only up to the first that fails
    measured_pairs = max((v["pairs"] for v in by_fraction.values()), default=0)
    # Too few pairs to admit anything even had they all kept their quality: no evidence either way
    # (the band takes the depth of the band below), not a measured loss (which caps the bands below).
    clean = upper_bound([0.0] * measured_pairs + ([virtual] if virtual else []), confidence, seed=band) \
        if measured_pairs else float("inf")
    return {"band": band_label(edges, band) if not (rule == "full" and edges[band] == SAME_TEXT) else "same text",
            "lower": edges[band], "pairs": len(pairs), "measured_pairs": measured_pairs,
            "fitted": fitted, "inherited": False,
            "enough_pairs": measured_pairs >= min_pairs and clean <= tolerance,
            "by_fraction": by_fraction, "drops_at_fitted": drops_by_fraction.get(fitted, [])}


def _inherit_and_make_monotone(bands: list[dict[str, Any]]) -> None:
    """A band with too few pairs takes the band below's depth; no band is deeper than one above it."""
    below = 0.0
    for row in bands:
        if not row["enough_pairs"]:
            row["fitted"], row["inherited"] = below, True
        below = row["fitted"]
    above = None
    for row in reversed(bands):
        if above is not None and row["fitted"] > above:
            row["fitted"] = above
        above = row["fitted"]


__all__ = ["DEFAULT_FRACTIONS", "calibrate", "read_prompts", "upper_bound"]
