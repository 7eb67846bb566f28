"""Online audits on the toy world: does an over-deep rule step back, and does a sound one stay?

    python bench/e2e/audit_catch.py --json bench/results/2026-12-08-cpu-audits.json

Two runs of the same stream, each on a fresh cache, full-prompt look-up only (no part or region
rules), the default embedder, 20 steps. The rule under audit is the shipped near-duplicate row
``full@0.8663`` (full-prompt cosine >= 0.8663 and below the same-text row at 0.9999):

* ``over-deep``: the row serves 0.40 of N, 20 % of N deeper than its calibration (0.20);
* ``calibrated``: the row serves 0.20 of N, as shipped (the false-alarm check).

The stream: a toy-world request (a miss that fills the cache), then those of its related requests
(a rewording, an object edit, a background edit: `toyworld.cases`) whose cosine to it puts them in
the rule's band, so they hit it. Every hit is audited (``audit_rate`` 1, the toy world's reader as
the scorer, the default tolerance 0.02 and confidence 0.9) right after its call. Reported: after how
many audited hits of the rule each step-down came, what it measured, and the depth at the end.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import time

import torch

from flexcache import CacheConfig, FlexCache, enable_flexcache, last_call_report, run_pending_audits
from flexcache.quality.scorers import build_scorer, from_toyworld
from flexcache.toyworld.cases import related_request, request_for
from flexcache.toyworld.model import MODEL_ID, PromptEncoder, pipeline_kwargs, toyworld_pipeline
from flexcache.toyworld.world import all_specs

THRESHOLD, SAME_TEXT = 0.8663, 0.9999
RULE = f"full@{THRESHOLD:.4g}"
CASES = ("near-duplicate", "object-edit", "background-edit")


def run(depth: float, *, audits: int, stop_at: float, seed: int, encode: PromptEncoder) -> dict:
    """Serve the stream with the rule at `depth` until `audits` audited hits of it, or it serves <= `stop_at`."""
    cache = FlexCache(CacheConfig.from_dict({
        "embedder": {"device": "cpu"}, "index": {"device": "cpu"},
        "planner": {"lookup": "full", "regions": False, "uncalibrated": "tables",
                    "similarity_table": [[THRESHOLD, depth], [SAME_TEXT, 0.5]]},
        "quality": {"audit_rate": 1.0}}))
    pipe = toyworld_pipeline()
    pipe.set_progress_bar_config(disable=True)
    enable_flexcache(pipe, cache, model_id=MODEL_ID, audit_scorer=build_scorer("toyworld"),
                     audit_video=lambda out: from_toyworld(out.frames.clamp(-1, 1)))
    planner = cache.planners.configured
    rng, specs = random.Random(seed), all_specs()
    started, calls, cases_hit = time.perf_counter(), 0, {case: 0 for case in ("anchor", *CASES)}
    step_downs: list[dict] = []

    def rule_audits() -> int:  # audits of the rule so far, whichever call's hit they came from (anchors too)
        return cache.auditor.estimates().get(f"configured|{RULE}", {}).get("audits", 0)

    def serve(prompt: str, case: str | None = None) -> None:
        nonlocal calls
        with torch.inference_mode():
            pipe(prompt=prompt, generator=torch.Generator().manual_seed(rng.randrange(2**31)),
                 flexcache_any_seed=True, **pipeline_kwargs(encode([prompt])))
        calls += 1
        report = last_call_report(pipe)
        before = cache.auditor.generation("configured", RULE)
        run_pending_audits(pipe)
        if report.hit and report.rule == RULE:
            cases_hit[case or "anchor"] += 1
        if cache.auditor.generation("configured", RULE) > before:
            event = cache.auditor.stats()["step_down_events"][-1]
            step_downs.append({"after_audited_hits": rule_audits(), "window_audits": event["audits"],
                               "mean_drop": round(event["mean_drop"], 4),
                               "drop_lower_bound": round(event["drop_lower"], 4), "fraction_now": event["fraction"]})

    while rule_audits() < audits and planner.rule_fractions()[RULE] > stop_at + 1e-9:
        anchor = request_for(rng.choice(specs), rng)
        related = [(case, related_request(anchor, case, rng)) for case in CASES]
        cosines = cache.embedder.embed([anchor.prompt] + [r.prompt for _, r in related])
        in_band = [(case, r) for (case, r), cosine in zip(related, (cosines[1:] @ cosines[0]).tolist())
                   if THRESHOLD <= cosine < SAME_TEXT]
        if not in_band:
            continue
        serve(anchor.prompt)
        for case, request in in_band:
            if rule_audits() >= audits:
                break
            serve(request.prompt, case)
    audited = rule_audits()
    stats = cache.stats()["audits"]
    estimate = stats["rules"].get(f"configured|{RULE}", {})
    result = {"depth": depth, "rule": RULE, "calls": calls, "audited_hits_of_rule": audited, "cases_hit": cases_hit,
              "step_downs": step_downs, "depth_after": planner.rule_fractions()[RULE],
              "window_now": {k: estimate.get(k) for k in ("window", "mean_drop", "drop_lower")},
              "audits_all_rules": stats["audits"], "other_step_downs": [e for e in stats["step_down_events"]
                                                                         if e["rule"] != RULE],
              "audit_seconds": round(stats["seconds"], 1), "failed": stats["failed"], "skipped": stats["skipped"],
              "wall_seconds": round(time.perf_counter() - started, 1)}
    cache.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deep", type=float, default=0.4, help="the over-deep run's depth (default 0.4)")
    parser.add_argument("--calibrated", type=float, default=0.2, help="the false-alarm run's depth (default 0.2)")
    parser.add_argument("--audits", type=int, default=200, help="audited hits of the rule per run at most")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="write the result here")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    encode = PromptEncoder()
    result = {
        # The over-deep run stops once the rule is back at its calibrated depth; the sound one runs all audits.
        "over-deep": run(args.deep, audits=args.audits, stop_at=args.calibrated, seed=args.seed, encode=encode),
        "calibrated": run(args.calibrated, audits=args.audits, stop_at=0.0, seed=args.seed + 1, encode=encode),
        "settings": {"steps": 20, "scorer": "toyworld", "tolerance": 0.02, "confidence": 0.9, "min_audits": 20,
                     "window": 200, "audit_rate": 1.0, "seed": args.seed},
        "machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": torch.get_num_threads(),
                    "cuda": torch.cuda.is_available()}}
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=2)


if __name__ == "__main__":
    main()
