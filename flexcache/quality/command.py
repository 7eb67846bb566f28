"""`flexcache calibrate` and `flexcache bench quality --rules` (the command-line side of `quality`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from flexcache.errors import CalibrationError


def _fractions(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError as exc:
        raise CalibrationError(f"--fractions takes comma-separated fractions of N such as 0.1,0.2; got {text!r}") from exc


def _calibrate(args: argparse.Namespace) -> int:
    from flexcache.quality.calibrate import calibrate
    from flexcache.quality.pairs import RULES
    from flexcache.quality.report import format_calibration, plot_calibration

    rules = tuple(r.strip() for r in args.rules.split(",")) if args.rules else tuple(RULES)
    result = calibrate(args.pipeline, args.prompts, scorer=args.scorer, scorer_model=args.scorer_model,
                       steps=args.steps, shift=args.shift, guidance=args.guidance, height=args.height,
                       width=args.width, frames=args.frames, seed=args.seed, fractions=_fractions(args.fractions),
                       budget_runs=args.budget_runs, pairs_per_band=args.pairs_per_band, min_pairs=args.min_pairs,
                       tolerance=args.tolerance, confidence=args.confidence, min_diversity=args.min_diversity,
                       rules=rules, region_method=args.region_method, embedder=args.embedder, out=args.out,
                       show_progress=not args.no_progress, device=args.device)
    table = format_calibration(result)
    print(table)
    print(f"\nrules written to {args.out}; serve them with planner.rules_file: {args.out}")
    if args.report:
        Path(args.report).write_text(table + "\n")
    if args.plot:
        print(f"plot written to {plot_calibration(result, args.plot)}")
    return 0


def add_calibrate_command(commands) -> None:
    parser = commands.add_parser(
        "calibrate", help="fit each rule's depth per similarity band on your model and prompts; writes a rules file")
    parser.add_argument("--pipeline", required=True, help="toyworld, or a diffusers model id / local path")
    parser.add_argument("--prompts", required=True, help="your prompts: one per line, or JSONL with \"prompt\"")
    parser.add_argument("--scorer", default="toyworld", help="toyworld, clip (with --scorer-model) or reference")
    parser.add_argument("--scorer-model", help="the scorer's local model path (clip)")
    parser.add_argument("--steps", type=int, default=20, help="denoising steps N (default 20)")
    parser.add_argument("--shift", type=float, help="the flow-matching scheduler's shift (default: the pipeline's)")
    parser.add_argument("--guidance", type=float, help="guidance scale (default: the pipeline's; toy world 3)")
    parser.add_argument("--height", type=int)
    parser.add_argument("--width", type=int)
    parser.add_argument("--frames", type=int)
    parser.add_argument("--seed", type=int, default=0, help="the seed every run uses (default 0)")
    parser.add_argument("--budget-runs", type=int, default=600, help="pipeline runs allowed in all (default 600)")
    parser.add_argument("--fractions", default="0.1,0.2,0.3,0.4,0.5", help="candidate depths, fractions of N")
    parser.add_argument("--pairs-per-band", type=int, default=30, help="most pairs measured per band (default 30)")
    parser.add_argument("--min-pairs", type=int, default=4, help="fewest pairs a band is fitted on (default 4)")
    parser.add_argument("--tolerance", type=float, default=0.02,
                        help="largest mean quality drop a rule may cost, in the scorer's units (default 0.02)")
    parser.add_argument("--confidence", type=float, default=0.9, help="of the bootstrap bound (default 0.9)")
    parser.add_argument("--min-diversity", type=float, default=0.0,
                        help="least share of the across-seed difference same-text hits keep (default 0: unbounded)")
    parser.add_argument("--rules", help="calibrate only these rules (comma-separated; default all)")
    parser.add_argument("--region-method", default="restart", choices=("restart", "renoise"))
    parser.add_argument("--embedder", default="multilingual", help="embedder.model of the cache that will serve")
    parser.add_argument("--device", help="torch device for the pipeline and scorer (default: CPU)")
    parser.add_argument("--out", required=True, help="the rules file to write (YAML)")
    parser.add_argument("--report", help="also write the table (Markdown) here")
    parser.add_argument("--plot", help="also plot the drop against K per band here (PNG)")
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(run=_calibrate)


def bench_quality_rules(args: argparse.Namespace) -> int:
    """`flexcache bench quality --rules RULES.yaml --prompts FILE`."""
    from flexcache.quality.evaluate import evaluate_rules, format_rules_eval

    if not args.prompts:
        raise CalibrationError("--rules needs --prompts FILE: held-out prompts (not the ones calibrated on)")
    result = evaluate_rules(args.rules, args.prompts, pairs_per_band=args.pairs_per_band, seed=args.seed + 1,
                            scorer_model=args.scorer_model, show_progress=True)
    print(format_rules_eval(result))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        print(f"results written to {args.json}", file=sys.stderr)
    return 0


__all__ = ["add_calibrate_command", "bench_quality_rules"]
