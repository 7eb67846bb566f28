"""Online audits on the toy world: does an over-deep rule step back, and does a sound one stay?

    python bench/e2e/audit_catch.py --deep 0.4 --settle 0.2 --json bench/results/2026-12-08-cpu-audits-deep.json
    python bench/e2e/audit_catch.py --deep 0.1 --json bench/results/2026-12-08-cpu-audits-sound.json  # calibrated

Full-prompt look-up only, one rule: cosine >= 0.8663 (the shipped near-duplicate threshold of the
default embedder) resumes at `--deep` of N, the same text at 0.5. A stream of toy-world requests
with related requests (rewordings and one-attribute edits, `toyworld.cases`) hits it; every hit is
audited (audit_rate 1, the toy world's reader as the scorer) right after the call. Reports each
step-down (after how many audited hits of the rule, the drop it measured, the new depth).
"""

import argparse
import json
import random
import time

import torch

from flexcache import CacheConfig, FlexCache, enable_flexcache, last_call_report, run_pending_audits
from flexcache.quality.scorers import build_scorer, from_toyworld
from flexcache.toyworld.cases import related_request, request_for
from flexcache.toyworld.model import MODEL_ID, PromptEncoder, pipeline_kwargs, toyworld_pipeline
from flexcache.toyworld.world import held_out_specs, training_specs

RULE = "full@0.8663"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--deep", type=float, default=0.4, help="the near-duplicate rule's depth (calibrated: 0.1-0.2)")
    parser.add_argument("--audits", type=int, default=200, help="audited hits of the rule at most")
    parser.add_argument("--settle", type=float, default=0.0,
                        help="stop once the rule serves this fraction of N or less (0: run all --audits)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json")
    args = parser.parse_args()
    cache = FlexCache(CacheConfig.from_dict({
        "embedder": {"device": "cpu"}, "index": {"device": "cpu"},
        "planner": {"lookup": "full", "regions": False, "uncalibrated": "tables",
                    "similarity_table": [[0.8663, args.deep], [0.9999, 0.5]],
                    "checkpoint_fractions": [0.1, 0.2, 0.3, 0.4, 0.5]},
        "quality": {"audit_rate": 1.0}}))
    pipe = toyworld_pipeline()
    pipe.set_progress_bar_config(disable=True)
    enable_flexcache(pipe, cache, model_id=MODEL_ID, audit_scorer=build_scorer("toyworld"),
                     audit_video=lambda out: from_toyworld(out.frames.clamp(-1, 1)))
    encode = PromptEncoder()
    rng = random.Random(args.seed)
    specs = training_specs() + held_out_specs()
    started, calls, audited = time.perf_counter(), 0, 0
    while audited < args.audits and cache.planners.configured.rule_fractions()[RULE] > args.settle + 1e-9:
        anchor = request_for(rng.choice(specs), rng)
        for request in [anchor] + [related_request(anchor, case, rng)
                                   for case in rng.sample(["near-duplicate", "object-edit", "background-edit"], 2)]:
            seed = rng.randrange(2**31)
            with torch.inference_mode():
                pipe(prompt=request.prompt, generator=torch.Generator().manual_seed(seed), flexcache_any_seed=True,
                     **pipeline_kwargs(encode([request.prompt])))
            calls += 1
            report = last_call_report(pipe)
            run_pending_audits(pipe)
            if report.hit and report.rule == RULE:
                audited += 1
                if audited >= args.audits:
                    break
    stats = cache.stats()["audits"]
    result = {"deep": args.deep, "rule": RULE, "calls": calls, "audited_hits_of_rule": audited,
              "depth_after": cache.planners.configured.rule_fractions()[RULE],
              "step_downs": stats["step_down_events"],
              "estimate": stats["rules"].get(f"configured|{RULE}"), "audits": stats["audits"],
              "audit_seconds": round(stats["seconds"], 1), "failed": stats["failed"],
              "wall_seconds": round(time.perf_counter() - started, 1)}
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=2)
    cache.close()


if __name__ == "__main__":
    main()
