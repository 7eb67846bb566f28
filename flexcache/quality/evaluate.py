"""`flexcache bench quality --rules`: a rules file judged on held-out pairs from another prompt file.

Each row of each rule of the file is a band (from its threshold to the next row's). Pairs of the
held-out prompts whose rule cosine falls in a band are served as the rules would serve them: the
target resumed from the source at the band's depth, by the rule's method, at the generation
settings the file records. Each band reports the scorer's mean score of the resumed targets
(``adherence``) beside that of the targets' own full runs (``adherence_full_steps``).
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

from flexcache.errors import CalibrationError
from flexcache.quality.calibrate import Progress, _Runner, read_prompts, upper_bound
from flexcache.quality.pairs import RULES, Pair, prompt_cosines
from flexcache.quality.rules import load_rules


def rule_rows(rules) -> dict[str, list[tuple[float, float]]]:
    """Per rule of `quality.pairs.RULES`: its (threshold, fraction) rows in the file."""
    rows: dict[str, list[tuple[float, float]]] = {"full": list(rules.similarity_table)}
    rows["object_part"] = [(o, f) for o, b, f in rules.part_table if b <= -1.0]
    rows["background_part"] = [(b, f) for o, b, f in rules.part_table if o <= -1.0]
    rows["region_background"] = [(t, f) for part, t, f in rules.region_table if part == "background"]
    rows["region_object"] = [(t, f) for part, t, f in rules.region_table if part == "object"]
    return {rule: sorted(r) for rule, r in rows.items() if r}


def evaluate_rules(rules_path: str | Path, prompts, *, pairs_per_band: int = 8, seed: int = 1,
                   scorer_model: str | None = None, device: str | None = None,
                   show_progress: bool = True) -> dict[str, Any]:
    """Serve held-out pairs with a rules file's depths; per rule and band, quality against full steps.

    Raises:
        RulesFileError: the file is missing, truncated or edited.
        RulesSignatureError: the pipeline the file records does not produce the file's signature.
        CalibrationError: no held-out pair falls in any band.
    """
    from tqdm.auto import tqdm

    from flexcache import GenerationSignature
    from flexcache.quality.pipelines import GenerationSettings, build_calibration_pipeline
    from flexcache.quality.scorers import build_scorer
    from flexcache.config import EmbedderConfig
    from flexcache.engine import build_embedder

    started = time.perf_counter()
    rules = load_rules(rules_path)
    header = rules.report.get("settings") or {}
    if "pipeline" not in header or "settings" not in header:
        raise CalibrationError(f"{rules_path} records no generation settings (written by another tool?)")
    if not rule_rows(rules):
        raise CalibrationError(f"{rules_path} serves no rule (its calibration found no depth safe): nothing to judge")
    prompt_list = read_prompts(prompts) if isinstance(prompts, (str, Path)) else list(dict.fromkeys(prompts))
    cosines = prompt_cosines(prompt_list, build_embedder(EmbedderConfig(model=rules.embedder, device="cpu")))
    rng = random.Random(seed)
    chosen: dict[tuple[str, int], list[Pair]] = {}
    for rule, rows in rule_rows(rules).items():
        method, kind = RULES[rule]
        matrix = cosines.of(kind)
        for index, (threshold, _) in enumerate(rows):
            high = rows[index + 1][0] if index + 1 < len(rows) else 2.0
            pool = [Pair(s, t) for s in range(len(prompt_list)) for t in range(len(prompt_list))
                    if (s != t or rule == "full") and threshold <= (1.0 if s == t else float(matrix[s, t])) < high
                    and not (method == "region:background" and not (cosines.has_background[s]
                                                                    and cosines.has_background[t]))]
            rng.shuffle(pool)
            chosen[(rule, index)] = pool[:pairs_per_band]
    if not any(chosen.values()):
        raise CalibrationError(f"no pair of the {len(prompt_list)} held-out prompts falls in a band of {rules_path}; "
                               "give a prompt file with related prompts")
    scorer = build_scorer(rules.scorer, model_path=scorer_model, device=device or "cpu")
    settings = GenerationSettings(**header["settings"])
    target = build_calibration_pipeline(header["pipeline"], settings, embedder_model=rules.embedder,
                                        region_method=rules.region_method or "restart", device=device)
    target.fractions = tuple(sorted({f for rows in rule_rows(rules).values() for _, f in rows}))
    total = sum(len(p) for p in chosen.values())
    out: dict[str, Any] = {}
    try:
        with tqdm(total=total, desc="held-out pairs", unit="pair", disable=not show_progress) as bar:
            runner = _Runner(target, scorer, prompt_list, Progress(None, {}), bar)
            for (rule, index), pairs in chosen.items():
                method = RULES[rule][0]
                threshold, fraction = rule_rows(rules)[rule][index]
                scores, full_scores = [], []
                for pair in pairs:
                    runner.full(pair.target)
                    if target.signature is not None:
                        rules.check_signature(GenerationSignature.from_dict(target.signature),
                                              where=f"the pipeline {header['pipeline']!r} as recorded")
                    value = runner.resumed(pair, method, fraction)
                    if value is not None:
                        scores.append(value["score"])
                        full_scores.append(1.0 if scorer.needs_reference else runner.progress.done[f"full|{pair.target}|0"])
                drops = [f - s for f, s in zip(full_scores, scores)]
                band = f"{threshold:.4g}+"
                out.setdefault(rule, {})[band] = {
                    "fraction": fraction, "pairs": len(scores), "unservable": len(pairs) - len(scores),
                    "adherence": sum(scores) / len(scores) if scores else None,
                    "adherence_full_steps": sum(full_scores) / len(full_scores) if full_scores else None,
                    "drop": sum(drops) / len(drops) if drops else None,
                    "drop_upper": upper_bound(drops, rules.confidence) if len(drops) > 1 else None,
                }
    finally:
        target.close()
    return {"rules_eval": out, "rules": {"file": str(rules_path), "described": rules.describe(),
                                         "tolerance": rules.tolerance, "confidence": rules.confidence},
            "prompts": len(prompt_list), "runs": target.runs, "seconds": round(time.perf_counter() - started, 1)}


def format_rules_eval(result: dict[str, Any]) -> str:
    lines = [f"Rules: {result['rules']['described']}", "",
             "| rule | band | K/N | pairs | score served | score full steps | drop (upper bound) |",
             "|---|---|---|---|---|---|---|"]
    for rule, bands in result["rules_eval"].items():
        for band, row in bands.items():
            def number(value):
                return "-" if value is None else f"{value:.3f}"
            lines.append(f"| {rule} | {band} | {row['fraction']:.2f} | {row['pairs']} | {number(row['adherence'])} | "
                         f"{number(row['adherence_full_steps'])} | {number(row['drop'])} ({number(row['drop_upper'])}) |")
    return "\n".join(lines)


__all__ = ["evaluate_rules", "format_rules_eval", "rule_rows"]
