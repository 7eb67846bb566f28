"""`flexcache bench quality`: what resuming from a cached latent costs in quality, on the toy world.

* ``adherence_full_steps``: the shipped toy-world model at full steps on the
  held-out attribute combinations (`world.held_out_specs`), as
  `flexcache.toyworld.evaluate` measures it.
* One row per (case, K, budget): a target request (a held-out combination)
  resumes at step K from the latent x_K of a source request related to it as
  `case` says (`toyworld.cases`), after x_K went through the compressing codec
  at that error budget (``budget`` is the sigma budget, a fraction of sigma_K;
  None: stored exactly). Source and target share the seed of their initial
  noise, so K = 0 is the target's own full-step run. Each row reports the
  target's adherence, the pixel distance to the target's own full-step clip
  (RMS in [0, 1] pixel units), the stored bytes, and the full-prompt
  similarity of the pairs (the packaged MiniLM, as the engine's look-up sees it).
* ``seed_diversity``: how much of the across-seed difference a request for
  another seed keeps when served from the first seed's x_K
  (`benchmarks.seed_diversity`; read with ``planner.cross_seed_max_fraction``).

These rows calibrate the similarity -> K thresholds of the planner.
"""

from __future__ import annotations

import math
import platform
import random
import time
from collections.abc import Callable
from typing import Any

import torch

from flexcache.benchmarks.seed_diversity import format_seed_diversity, seed_diversity
from flexcache.core import CodecConfig
from flexcache.toyworld.cases import CASES, related_request, request_for
from flexcache.toyworld.model import (
    DEFAULT_GUIDANCE,
    DEFAULT_STEPS,
    MODEL_ID,
    WEIGHTS,
    PromptEncoder,
    initial_noise,
    sample,
    toyworld_pipeline,
)
from flexcache.toyworld.world import ATTRIBUTES, held_out_specs

DEFAULT_SKIPS = (0, 4, 8, 12, 16)
DEFAULT_BUDGETS: tuple[float | None, ...] = (None, 0.02, 0.1)


def _sigmas(pipe, steps: int) -> list[float]:
    import copy

    scheduler = copy.deepcopy(pipe.scheduler)
    scheduler.set_timesteps(steps)
    return [float(s) for s in scheduler.sigmas]


def _code(latents: torch.Tensor, seeds: list[int], sigma: float, budget: float | None) -> tuple[torch.Tensor, int]:
    """x_K as a cache entry would return it, and the bytes it took."""
    from flexcache.codec import build_codec

    if budget is None:
        return latents, latents.numel() * latents.element_size()
    codec = build_codec(CodecConfig(name="flexcache", budget_mode="sigma", sigma_budget=budget))
    decoded, stored = [], 0
    for latent, seed in zip(latents, seeds):
        blob = codec.encode(latent, seed=seed, sigma=sigma, frame_axis=1)
        stored += len(blob)
        decoded.append(codec.decode(blob))
    return torch.stack(decoded), stored


def _pair_similarities(embedder, targets: list[str], sources: list[str]):
    """Cosines of the full prompts, the object parts and the background parts (`engine.splitter`)."""
    from flexcache.engine import split_prompt

    def cosines(a: list[str], b: list[str]) -> torch.Tensor:
        return (embedder.embed(a).cpu() * embedder.embed(b).cpu()).sum(dim=1)

    parts_t = [split_prompt(p) for p in targets]
    parts_s = [split_prompt(p) for p in sources]
    return (cosines(targets, sources), cosines([p.object for p in parts_t], [p.object for p in parts_s]),
            cosines([p.background or "-" for p in parts_t], [p.background or "-" for p in parts_s]))


def _score(clips: torch.Tensor, specs, reference: torch.Tensor) -> dict[str, Any]:
    from flexcache.toyworld.reader import match_counts

    clips = clips.clamp(-1, 1)
    per_attribute = {name: count / len(specs) for name, count in match_counts(clips, specs).items()}
    distance = ((clips - reference.clamp(-1, 1)) / 2).pow(2).mean(dim=(1, 2, 3, 4)).sqrt()
    return {"adherence": sum(per_attribute.values()) / len(ATTRIBUTES),
            "per_attribute": {k: round(v, 4) for k, v in per_attribute.items()},
            "pixel_distance": float(distance.mean())}


def run_quality_bench(*, weights=WEIGHTS, pairs: int = 24, skips: tuple[int, ...] = DEFAULT_SKIPS,
                      budgets: tuple[float | None, ...] = DEFAULT_BUDGETS, steps: int = DEFAULT_STEPS,
                      guidance: float = DEFAULT_GUIDANCE, held_out_prompts: int = 2, seed: int = 0,
                      regions: bool = True, region_skips: tuple[int, ...] | None = None, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    from flexcache.core import EmbedderConfig
    from flexcache.engine import build_embedder
    from flexcache.toyworld.evaluate import evaluate

    say = progress or (lambda message: None)
    if pairs < 1 or steps < 2 or any(not 0 <= k < steps for k in skips):
        raise ValueError(f"pairs must be >= 1 and every K in [0, {steps})")
    started = time.perf_counter()
    pipe = toyworld_pipeline(weights)
    pipe.set_progress_bar_config(disable=True)
    encoder = PromptEncoder()
    embedder = build_embedder(EmbedderConfig(device="cpu"))  # the default embedder, as a cache has it
    sigmas = _sigmas(pipe, steps)

    held_out = held_out_specs()
    say(f"full-step adherence on {len(held_out)} held-out combinations")
    full = evaluate(pipe, encoder, held_out, prompts_per_spec=held_out_prompts, steps=steps,
                    guidance=guidance, seed=seed)
    rows: list[dict[str, Any]] = []
    pair_similarities: dict[str, dict[str, list[float]]] = {}
    targets_pool = held_out_specs()
    for case_index, case in enumerate(CASES):
        rng = random.Random(seed * 7919 + case_index)
        specs = [targets_pool[i % len(targets_pool)] for i in rng.sample(range(len(targets_pool)),
                                                                         min(pairs, len(targets_pool)))]
        specs += [rng.choice(targets_pool) for _ in range(pairs - len(specs))]
        targets = [request_for(spec, rng) for spec in specs]
        sources = [related_request(target, case, rng) for target in targets]
        seeds = [seed * 1_000_003 + case_index * 10_007 + i for i in range(pairs)]
        target_embeds = encoder([t.prompt for t in targets])
        source_embeds = encoder([s.prompt for s in sources])
        similarity, object_similarity, background_similarity = _pair_similarities(
            embedder, [t.prompt for t in targets], [s.prompt for s in sources])
        pair_similarities[case] = {"full": similarity.tolist(), "object": object_similarity.tolist(),
                                   "background": background_similarity.tolist()}
        noise = initial_noise(seeds)
        say(f"{case}: source and reference runs ({pairs} pairs)")
        _, trajectory = sample(pipe, source_embeds, noise, steps=steps, guidance=guidance, capture=True)
        reference, _ = sample(pipe, target_embeds, noise, steps=steps, guidance=guidance)
        for skip in skips:
            for budget in budgets:
                if skip == 0 and budget is not None:
                    continue  # x_0 is the seed's noise: nothing to code
                latents, stored = _code(trajectory[skip], seeds, sigmas[skip], budget)
                clips = reference if skip == 0 else sample(pipe, target_embeds, latents, skip=skip, steps=steps,
                                                            guidance=guidance)[0]
                rows.append({
                    "case": case, "skip_steps": skip, "skip_frac": skip / steps, "budget": budget,
                    **_score(clips, [t.spec for t in targets], reference),
                    "bytes_per_entry": stored / pairs,
                    "similarity_mean": float(similarity.mean()), "similarity_min": float(similarity.min()),
                    "similarity_max": float(similarity.max()),
                    "object_similarity_mean": float(object_similarity.mean()),
                    "background_similarity_mean": float(background_similarity.mean()), "pairs": pairs,
                })
                say(f"{case} K={skip} budget={budget}: adherence {rows[-1]['adherence']:.3f}")
    result = {
        "adherence_full_steps": full["adherence"],
        "adherence_full_steps_per_attribute": full["per_attribute"],
        "held_out_combinations": len(held_out),
        "held_out_clips": full["clips"],
        "rows": rows,
        "pair_similarities": pair_similarities,
        "settings": {"model_id": MODEL_ID, "weights": str(weights), "steps": steps, "guidance": guidance,
                     "pairs": pairs, "skips": list(skips), "budgets": list(budgets), "seed": seed,
                     "budget_mode": "sigma (rms error <= budget x sigma_K)", "cases": list(CASES)},
        "wall_seconds": time.perf_counter() - started,
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "torch": torch.__version__, "cuda": torch.cuda.is_available()},
    }
    say("seed diversity: another seed served from the first seed's entry")
    result["seed_diversity"] = seed_diversity(pipe, encoder, pairs=pairs, skips=skips, steps=steps,
                                              guidance=guidance, seed=seed)
    if regions:
        from flexcache.benchmarks.region_bench import REGION_FRACTIONS, run_region_bench

        skips_r = region_skips or tuple(sorted({min(steps - 1, max(1, round(f * steps))) for f in REGION_FRACTIONS}))
        result.update(run_region_bench(pipe, encoder, pipe.tokenizer, pairs=pairs, steps=steps, guidance=guidance,
                                       skips=skips_r, seed=seed, progress=say))
    say("part similarity tails (random prompt pairs)")
    result["part_similarity_tails"] = part_similarity_tails(embedder, seed=seed)
    result["calibration"] = calibrate(result)
    if regions:
        result["rule_tables"] = calibrate_rules(result)
    result["wall_seconds"] = time.perf_counter() - started
    return result


def format_quality_table(result: dict[str, Any]) -> str:
    per = result["adherence_full_steps_per_attribute"]
    lines = [
        f"Full steps, {result['held_out_combinations']} held-out combinations ({result['held_out_clips']} clips): "
        f"adherence {result['adherence_full_steps']:.3f} ("
        + ", ".join(f"{name} {value:.2f}" for name, value in per.items()) + ")",
        "",
        "| case | K | budget | adherence | pixel distance | bytes/entry | similarity | object sim | background sim |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    steps = result["settings"]["steps"]
    for row in result["rows"]:
        budget = "exact" if row["budget"] is None else f"{row['budget']:g} sigma"
        lines.append(f"| {row['case']} | {row['skip_steps']}/{steps} | {budget} | {row['adherence']:.3f} | "
                     f"{row['pixel_distance']:.4f} | {row['bytes_per_entry']:.0f} | {row['similarity_mean']:.3f} | "
                     f"{row['object_similarity_mean']:.3f} | {row['background_similarity_mean']:.3f} |")
    calibration = result.get("calibration")
    if calibration:
        lines += ["", f"Calibrated part table (planner.part_table): {calibration['part_table']}; thresholds at "
                  f"{calibration['false_match_rate']:g} false matches: "
                  + ", ".join(f"{k} {v:.3f}" for k, v in calibration["thresholds"].items())
                  + "; recall of same-part pairs there: "
                  + ", ".join(f"{k} {v:.2f}" for k, v in calibration["recall_at_thresholds"].items())
                  + "; deepest safe K per case: "
                  + ", ".join(f"{k} {v}" for k, v in calibration["deepest_safe_k"].items())]
    reuse = result.get("decoupled_reuse")
    if reuse:
        lines += ["", "Decoupled reuse (region hits; deepest K within "
                  f"{result['region_settings']['max_adherence_drop']:g} of full steps):", "",
                  "| case | regenerated | method | deepest safe fraction | adherence there | full steps | "
                  "by method | mask IoU at K |", "|---|---|---|---|---|---|---|---|"]
        for case, row in reuse.items():
            by = ", ".join(f"{m} {v:.2f}" for m, v in row["deepest_safe_fraction_by_method"].items())
            iou = ", ".join(f"{k}: {v:.2f}" for k, v in result["mask_iou"].get(case, {}).items()) or "-"
            lines.append(f"| {case} | {row['regenerated']} | {row['method']} | {row['deepest_safe_fraction']:.2f} | "
                         f"{row['adherence_at_deepest']:.3f} | {row['adherence_full_steps']:.3f} | {by} | {iou} |")
    if result.get("seed_diversity"):
        lines += ["", format_seed_diversity(result["seed_diversity"])]
    tables = result.get("rule_tables")
    if tables:
        lines += ["", f"Calibrated full-prompt table: {tables['similarity_table']}",
                  f"Calibrated region table: {tables['region_table']}"]
    return "\n".join(lines)


# -- calibration: rows -> the decoupled planner's part table ---------------------------------

# Which parts a case's pairs share: (object, background).
SHARED_PARTS = {"identical": (True, True), "near-duplicate": (True, True),
                "same-background": (False, True), "same-object": (True, False),
                "object-edit": (False, True), "background-edit": (True, False)}
# The cases whose pairs a rule admits: its true matches, and the hard negatives
# (one attribute edited) that no threshold keeps out entirely.
RULES = {
    "both": ((True, True), ("identical", "near-duplicate", "object-edit", "background-edit")),
    "object": ((True, False), ("identical", "near-duplicate", "same-object", "background-edit", "object-edit")),
    "background": ((False, True), ("identical", "near-duplicate", "same-background", "object-edit",
                                   "background-edit")),
}
FALSE_MATCH_RATES = (0.1, 0.05, 0.01, 0.001)


def part_similarity_tails(embedder, *, count: int = 1500, seed: int = 0) -> dict[str, Any]:
    """Per part: cosine quantiles over random prompt pairs whose part differs, and the recall they leave.

    Thresholds need many negatives and the generation runs give few; embedding
    `count` random toy-world prompts gives about a million pairs for free.
    """
    from flexcache.engine import split_prompt
    from flexcache.toyworld.world import all_specs

    rng = random.Random(seed)
    requests = [request_for(rng.choice(all_specs()), rng) for _ in range(count)]
    parts = [split_prompt(r.prompt) for r in requests]
    rows, cols = torch.triu_indices(count, count, 1)
    out: dict[str, Any] = {"prompts": count}
    for name, texts, key in (
        ("full", [r.prompt for r in requests], lambda s: tuple(s.as_dict().values())),
        ("object", [p.object for p in parts], lambda s: (s.shape, s.color, s.direction)),
        ("background", [p.background or "-" for p in parts], lambda s: (s.background, s.pattern)),
    ):
        vectors = embedder.embed(texts).cpu()
        cosines = (vectors @ vectors.T)[rows, cols]
        codes: dict[tuple, int] = {}
        labels = torch.tensor([codes.setdefault(key(r.spec), len(codes)) for r in requests])
        same = labels[rows] == labels[cols]
        negatives, positives = cosines[~same], cosines[same]
        sample = negatives[torch.randperm(negatives.numel(), generator=torch.Generator().manual_seed(seed))[:1_000_000]]
        thresholds = {str(rate): float(torch.quantile(sample, 1 - rate)) for rate in FALSE_MATCH_RATES}
        out[name] = {"negative_pairs": int(negatives.numel()), "positive_pairs": int(positives.numel()),
                     "threshold_at_false_match_rate": thresholds,
                     "recall_at_false_match_rate": {rate: float((positives >= t).float().mean())
                                                    for rate, t in thresholds.items()}}
    return out


def calibrate(result: dict[str, Any], *, max_adherence_drop: float = 0.02, budget: float | None = 0.02,
              false_match_rate: float = 0.01) -> dict[str, Any]:
    """The part table a quality run supports.

    Thresholds: a part "matches" above the cosine that only `false_match_rate`
    of random pairs with a different part reach (`part_similarity_tails`).
    Depth: a rule admits its true matches and, at that rate, hard negatives (one
    attribute edited), so its depth is the deepest K within
    `max_adherence_drop` of K = 0 for *every* case it admits (`RULES`; rows at
    `budget`). Rules with depth 0, and rules another rule dominates (looser
    thresholds, same or deeper K), are left out.
    """
    tails = result["part_similarity_tails"]
    rate = str(false_match_rate)
    thresholds = {name: tails[name]["threshold_at_false_match_rate"][rate] for name in ("object", "background")}
    recall = {name: tails[name]["recall_at_false_match_rate"][rate] for name in ("object", "background")}

    def safe_depth(case: str) -> int:
        rows = [r for r in result["rows"] if r["case"] == case]
        base = next(r["adherence"] for r in rows if r["skip_steps"] == 0)
        return max((r["skip_steps"] for r in rows if r["skip_steps"] > 0 and r["budget"] == budget
                    and r["adherence"] >= base - max_adherence_drop), default=0)

    depths = {case: safe_depth(case) for case in SHARED_PARTS}
    steps = result["settings"]["steps"]
    candidates = []
    for name, ((needs_object, needs_background), cases) in RULES.items():
        depth = min(depths[case] for case in cases)
        rule = (thresholds["object"] if needs_object else -1.0, thresholds["background"] if needs_background else -1.0,
                depth / steps)
        candidates.append((name, rule, depth))
    rules = [rule for name, rule, depth in candidates if depth > 0 and not any(
        other is not rule and other[0] <= rule[0] and other[1] <= rule[1] and other[2] >= rule[2]
        and other != rule for _, other, d in candidates if d > 0)]
    return {"part_table": [list(rule) for rule in rules], "thresholds": thresholds,
            "recall_at_thresholds": recall, "deepest_safe_k": depths,
            "rules_considered": {name: {"rule": list(rule), "depth": depth} for name, rule, depth in candidates},
            "max_adherence_drop": max_adherence_drop, "budget": budget, "false_match_rate": false_match_rate}


# -- every rule calibrated: the full-prompt table and the region rules --------------------------

REGION_RULE_PARTS = {"background": "object", "object": "background"}  # part kept -> part regenerated
SAME_TEXT_COSINE = 0.9999


def calibrate_rules(result: dict[str, Any], *, max_adherence_drop: float = 0.02, budget: float | None = 0.02,
                    false_match_rate: float = 0.01) -> dict[str, Any]:
    """Each rule's depth from the measured cases it admits.

    A rule's threshold is the cosine `false_match_rate` of random pairs that
    differ (in the whole spec for the full prompt, in the part for a part
    rule) reach. It *admits* a case when any measured pair of that case
    clears it; its depth is the deepest K safe for every case it admits
    (whole-latent rows for the full-prompt table, region rows regenerating the
    other part for the region rules). The full-prompt table has one row per
    false-match rate in `FALSE_MATCH_RATES`.
    """
    from flexcache.benchmarks.region_bench import deepest_safe

    steps = result["settings"]["steps"]
    tails = result["part_similarity_tails"]
    pairs = result["pair_similarities"]

    def whole_depth(case: str) -> int:
        rows = [r for r in result["rows"] if r["case"] == case]
        base = next(r["adherence"] for r in rows if r["skip_steps"] == 0)
        return deepest_safe({r["skip_steps"]: r["adherence"] for r in rows if r["skip_steps"] > 0
                             and r["budget"] == budget}, base - max_adherence_drop)

    def admitted(kind: str, threshold: float) -> list[str]:
        return [case for case, sims in pairs.items() if max(sims[kind]) >= threshold]

    full_rows, prior = [], 0.0
    candidates = [(rate, tails["full"]["threshold_at_false_match_rate"][str(rate)])
                  for rate in sorted(FALSE_MATCH_RATES, reverse=True)]  # loosest threshold first
    candidates.append((0.0, SAME_TEXT_COSINE))  # the same prompt up to embedding noise
    for rate, threshold in candidates:
        cases = admitted("full", threshold)
        depth = min((whole_depth(c) for c in cases), default=0)
        if depth / steps > prior:
            full_rows.append({"false_match_rate": rate, "min_cosine": threshold, "fraction": depth / steps,
                              "admits": cases})
            prior = depth / steps
    region_rows = {}
    by_case = {(r["case"], r["method"], r["skip_steps"]): r for r in result.get("region_rows", [])}
    reuse = result.get("decoupled_reuse", {})
    for kept, regenerated in REGION_RULE_PARTS.items():
        threshold = tails[kept]["threshold_at_false_match_rate"][str(false_match_rate)]
        cases = [c for c in admitted(kept, threshold) if c in reuse]
        depths = {}
        for case in cases:
            label = "restart" if reuse[case]["regenerated"] == regenerated else f"restart-regenerate-{regenerated}"
            full = reuse[case]["adherence_full_steps"]
            measured = {k: by_case[(case, label, k)]["adherence"] if (case, label, k) in by_case else -math.inf
                        for k in result["region_settings"]["skips"]}  # a K not measured ends the safe run
            depths[case] = deepest_safe(measured, full - max_adherence_drop)
        depth = min(depths.values(), default=0)
        region_rows[kept] = {"min_cosine": threshold, "fraction": depth / steps, "admits": depths,
                             "false_match_rate": false_match_rate}
    return {"similarity_table": [[r["min_cosine"], r["fraction"]] for r in full_rows], "similarity_rows": full_rows,
            "region_table": [[kept, row["min_cosine"], row["fraction"]] for kept, row in region_rows.items()
                             if row["fraction"] > 0],
            "region_rules": region_rows, "max_adherence_drop": max_adherence_drop, "budget": budget}
