"""The `flexcache` command."""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

from flexcache import __version__
from flexcache.core import LOOKUPS, POLICIES, CacheConfig, FlexCacheError


def _config(args: argparse.Namespace) -> CacheConfig:
    config = CacheConfig.load(args.config)
    overrides = config.to_dict()
    if getattr(args, "policy", None):
        overrides["policy"] = args.policy
    if getattr(args, "lookup", None):
        overrides["planner"]["lookup"] = args.lookup
    if getattr(args, "capacity", None):
        overrides["store"]["capacity_bytes"] = args.capacity
    return CacheConfig.from_dict(overrides)


def _write_json(path: str | None, data: dict, label: str) -> None:
    if path:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(data, indent=2) + "\n")
        print(f"{label} written to {target}")


def _demo(args: argparse.Namespace) -> int:
    from flexcache.demo import format_report, run_demo, write_grid_gif

    if args.requests < 1 or args.steps < 2 or args.guidance < 1:
        raise FlexCacheError("--requests must be >= 1, --steps >= 2 and --guidance >= 1")
    header = f"{'#':>3}  {'prompt':<58} {'relation':<15} {'result':<6} {'sim':>5} {'K/N':>7} {'adh':>4} {'ms':>7}"
    lines = [header, "-" * len(header)]

    def on_row(row) -> None:
        sim = "-" if row.similarity is None else f"{row.similarity:.2f}"
        prompt = row.prompt if len(row.prompt) <= 58 else row.prompt[:55] + "..."
        result = "hit" if row.hit else "miss"
        result = "hit*" if row.via_parts else result
        lines.append(f"{row.index:>3}  {prompt:<58} {row.relation:<15} {result:<6} {sim:>5} "
                     f"{f'{row.skip_steps}/{row.num_steps}':>7} {row.adherence:>4.1f} {row.seconds * 1000:>7.1f}")

    summary, clips = run_demo(requests=args.requests, steps=args.steps, guidance=args.guidance, seed=args.seed,
                              config=_config(args), progress=not args.no_progress, on_row=on_row)
    print("\n".join(lines))
    print(
        f"\n{summary['lookup']} look-up: {summary['requests']} requests, {summary['hits']} hits "
        f"({summary['decoupled_hits']} decoupled, marked hit*; hit rate {summary['hit_rate']:.0%}), "
        f"{summary['steps_saved']} of {summary['steps_total']} denoising steps skipped "
        f"({summary['steps_saved'] / max(1, summary['steps_total']):.0%}); "
        f"{summary['entries']} entries, {summary['bytes_stored'] / 2**20:.2f} MiB stored\n"
        f"adherence {summary['adherence']:.3f} with the cache, {summary['adherence_uncached']:.3f} without "
        f"(same requests and seeds, full steps)"
    )
    if args.json:
        target = Path(args.json)
        write_grid_gif(target.with_suffix(".gif"), clips, summary["rows"])
        target.with_suffix(".md").parent.mkdir(parents=True, exist_ok=True)
        target.with_suffix(".md").write_text(format_report(summary))
        print(f"grid written to {target.with_suffix('.gif')}, report to {target.with_suffix('.md')}")
    _write_json(args.json, summary, "summary")
    return 0


def _bench_codec(args: argparse.Namespace) -> int:
    from flexcache.benchmarks.codec_bench import format_table, run_codec_bench

    try:
        shape = tuple(int(v) for v in args.shape.split(","))
    except ValueError:
        raise FlexCacheError(f"--shape takes C,T,H,W integers such as 16,21,60,104; got {args.shape!r}") from None
    if len(shape) != 4 or min(shape) < 1 or args.steps < 2:
        raise FlexCacheError("--shape needs four positive sizes (C,T,H,W) and --steps must be >= 2")
    result = run_codec_bench(shape=shape, num_steps=args.steps, seed=args.seed, config=_config(args).codec,
                             include_wan=not args.no_wan,
                             progress=lambda message: print(message, file=sys.stderr, flush=True))
    print(format_table(result))
    _write_json(args.json, result, "results")
    return 0


def _bench_store(args: argparse.Namespace) -> int:
    from flexcache.benchmarks.store_bench import format_store_table, run_store_bench

    try:
        sizes = tuple(int(v) for v in args.sizes_mb.split(","))
    except ValueError:
        raise FlexCacheError(f"--sizes-mb takes integers such as 1,8,32; got {args.sizes_mb!r}") from None
    if not sizes or min(sizes) < 1 or args.repeats < 1:
        raise FlexCacheError("--sizes-mb needs positive sizes and --repeats must be >= 1")
    result = run_store_bench(sizes_mb=sizes, repeats=args.repeats, disk_path=args.disk_path,
                             redis_url=args.redis_url)
    print(format_store_table(result))
    _write_json(args.json, result, "results")
    return 0


def _parse_list(text: str, flag: str, parse) -> tuple:
    try:
        return tuple(parse(v.strip()) for v in text.split(",") if v.strip())
    except ValueError:
        raise FlexCacheError(f"{flag} takes a comma-separated list; got {text!r}") from None


def _bench_quality(args: argparse.Namespace) -> int:
    from flexcache.benchmarks.quality_bench import (
        format_quality_table,
        run_quality_bench,
    )
    from flexcache.toyworld.model import WEIGHTS

    if args.rules:
        from flexcache.quality.command import bench_quality_rules

        return bench_quality_rules(args)
    if args.quick:
        args.pairs, args.skips, args.budgets, args.held_out_prompts = 4, "0,10", "exact,0.05", 1
    skips = _parse_list(args.skips, "--skips", int)
    budgets = _parse_list(args.budgets, "--budgets", lambda v: None if v == "exact" else float(v))
    if args.pairs < 1 or args.steps < 2 or not skips or any(not 0 <= k < args.steps for k in skips):
        raise FlexCacheError(f"--pairs must be >= 1, --steps >= 2 and every --skips value in [0, {args.steps})")
    if not budgets or any(b is not None and b <= 0 for b in budgets):
        raise FlexCacheError("--budgets takes 'exact' and/or positive sigma fractions such as 0.02")
    result = run_quality_bench(weights=args.weights or WEIGHTS, pairs=args.pairs, skips=skips, budgets=budgets,
                               steps=args.steps, guidance=args.guidance, held_out_prompts=args.held_out_prompts,
                               seed=args.seed, regions=not args.no_regions,
                               region_skips=(8,) if args.quick else None,
                               progress=lambda message: print(message, file=sys.stderr, flush=True))
    print(format_quality_table(result))
    _write_json(args.json, result, "results")
    return 0


def _bench_solvers(args: argparse.Namespace) -> int:
    from flexcache.benchmarks.solver_bench import (
        SOLVERS,
        format_solver_table,
        run_solver_bench,
    )
    from flexcache.toyworld.model import WEIGHTS

    skips = _parse_list(args.skips, "--skips", int)
    solvers = _parse_list(args.solvers, "--solvers", str)
    if args.prompts < 1 or args.steps < 2 or not skips or any(not 0 < k < args.steps for k in skips):
        raise FlexCacheError(f"--prompts must be >= 1, --steps >= 2 and every --skips value in (0, {args.steps})")
    unknown = sorted(set(solvers) - set(SOLVERS))
    if unknown or not solvers:
        raise FlexCacheError(f"--solvers takes some of {', '.join(SOLVERS)}; got {args.solvers!r}")
    result = run_solver_bench(prompts=args.prompts, steps=args.steps, skips=skips, solvers=solvers,
                              weights=args.weights or WEIGHTS, seed=args.seed)
    print(format_solver_table(result))
    _write_json(args.json, result, "results")
    return 0


def _bench_compose(args: argparse.Namespace) -> int:
    from flexcache.benchmarks.compose_bench import (
        METHODS,
        format_compose_table,
        run_compose_bench,
    )
    from flexcache.toyworld.cases import CASES
    from flexcache.toyworld.model import WEIGHTS

    cache_dit_installed = importlib.util.find_spec("cache_dit") is not None
    default_methods = [m for m in METHODS if m != "cachedit" or cache_dit_installed]
    methods = _parse_list(args.methods, "--methods", str) if args.methods else default_methods
    cases = _parse_list(args.cases, "--cases", str)
    if sorted(set(methods) - set(METHODS)) or "none" not in methods:
        raise FlexCacheError(f"--methods takes some of {', '.join(METHODS)}, with none (the uncached baseline); "
                             f"got {args.methods!r}")
    if "cachedit" in methods and not cache_dit_installed:
        raise FlexCacheError("--methods cachedit needs cache-dit: pip install 'flexcache[cache-dit]'")
    if sorted(set(cases) - set(CASES)) or not cases:
        raise FlexCacheError(f"--cases takes some of {', '.join(CASES)}; got {args.cases!r}")
    if args.pairs < 1 or args.steps < 2:
        raise FlexCacheError("--pairs must be >= 1 and --steps >= 2")
    result = run_compose_bench(pairs=args.pairs, steps=args.steps, methods=methods, cases=cases,
                               weights=args.weights or WEIGHTS, seed=args.seed,
                               progress=lambda message: print(message, file=sys.stderr, flush=True))
    print(format_compose_table(result))
    _write_json(args.json, result, "results")
    return 0


def _bench_attacks(args: argparse.Namespace) -> int:
    from flexcache.benchmarks.attacks import (
        ATTACKS,
        DEFENCES,
        SIZES,
        format_attacks_table,
        run_attacks_bench,
    )

    defences = _parse_list(args.defences, "--defences", str) if args.defences else list(DEFENCES)
    attacks = _parse_list(args.attacks, "--attacks", str) if args.attacks else list(ATTACKS)
    if sorted(set(attacks) - set(ATTACKS)) or not attacks:
        raise FlexCacheError(f"--attacks takes some of {', '.join(ATTACKS)}; got {args.attacks!r}")
    modes = _parse_list(args.modes, "--modes", str)
    if sorted(set(defences) - set(DEFENCES)) or not {"none", "defaults"} <= set(defences):
        raise FlexCacheError(f"--defences takes some of {', '.join(DEFENCES)}, with none and defaults; "
                             f"got {args.defences!r}")
    if sorted(set(modes) - {"engine", "pipeline"}) or not modes:
        raise FlexCacheError(f"--modes takes engine and/or pipeline; got {args.modes!r}")
    if args.size not in SIZES:
        raise FlexCacheError(f"--size takes {' or '.join(SIZES)}; got {args.size!r}")
    result = run_attacks_bench(size=args.size, defences=tuple(defences), modes=tuple(modes), seed=args.seed,
                               throughput=args.throughput, attacks=tuple(attacks),
                               progress=lambda message: print(message, file=sys.stderr, flush=True))
    print(format_attacks_table(result))
    _write_json(args.json, result, "results")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from flexcache import CacheConfig
    from flexcache.core import parse_bytes
    from flexcache.serving import serve

    if args.workers < 1 or args.steps < 2:
        raise FlexCacheError("--workers must be >= 1 and --steps >= 2")
    serve(CacheConfig.load(args.config).to_dict(), workers=args.workers, model=args.model, steps=args.steps,
          guidance=args.guidance, threads=args.threads, host=args.host, port=args.port, redis_url=args.redis_url,
          memory_bytes=None if args.memory is None else parse_bytes(args.memory),
          redis_bytes=None if args.redis_capacity is None else parse_bytes(args.redis_capacity))
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from flexcache.engine import disk_entries, format_inspection, inspect_entries, redis_entries

    source = disk_entries(args.disk) if args.disk else redis_entries(args.redis, cache_name=args.cache_name,
                                                                      prefix=args.prefix)
    report = inspect_entries(source, verify=args.verify)
    print(format_inspection(report))
    _write_json(args.json, report, "report")
    return 1 if report["damaged"] else 0


def _bench_splitter(args: argparse.Namespace) -> int:
    from flexcache.benchmarks.splitter_bench import (
        evaluate_splits,
        failures,
        format_splitter_table,
    )

    labels = Path(args.labels)
    if not labels.is_file():
        raise FlexCacheError(f"--labels {labels} is not a file; run from the repository root or pass the path")
    scores = evaluate_splits(labels)
    print(format_splitter_table(scores))
    missed = failures(labels, args.failures) if args.failures else []
    for row, parts, f1 in missed:
        print(f"\n[{row['split']}] F1 {f1:.2f}: {row['prompt']}\n  object     {parts.object!r} (labelled "
              f"{row['object']!r})\n  background {parts.background!r} (labelled {row['background']!r})")
    _write_json(args.json, {"labels": str(labels), "scores": scores,
                            "failures": [{"row": row, "object": parts.object, "background": parts.background,
                                          "f1": f1} for row, parts, f1 in missed]}, "results")
    return 0


def _bench_languages(args: argparse.Namespace) -> int:
    from flexcache.benchmarks.language_bench import format_embedders_table, format_languages_table, run_language_bench

    data = {}
    for item in args.data or ["dev=bench/data/multilingual-dev.jsonl", "heldout=bench/data/multilingual-heldout.jsonl"]:
        name, _, path = item.rpartition("=")
        data[name or Path(path).stem] = path
    embedders = [name.strip() for name in args.embedders.split(",") if name.strip()]
    result = run_language_bench(data, embedders, progress=None if args.no_progress else print)
    tables = [format_embedders_table(result)] + [format_languages_table(result, name) for name in data]
    print("\n\n".join(tables))
    _write_json(args.json, result, "results")
    if args.json:
        Path(args.json).with_suffix(".md").write_text("\n\n".join(tables) + "\n")
    return 0


def _bench_serve(args: argparse.Namespace) -> int:
    from flexcache.benchmarks.serve.command import check_workload_flags
    from flexcache.benchmarks.serve.in_request import METHODS
    from flexcache.benchmarks.serve.simulate import SYSTEMS, parse_system
    from flexcache.benchmarks.serve.workload import read_trace

    systems = _parse_list(args.systems, "--systems", str) if args.systems else None
    if systems == ():
        raise FlexCacheError(f"--systems: name some of {', '.join(SYSTEMS)}")
    for name in systems or ():
        parse_system(name)  # a ConfigError naming the systems and methods
    if args.live and any("+" in name for name in systems or ()):
        raise FlexCacheError(f"--live serves systems without in-request methods ({', '.join(METHODS)} are "
                             "simulated variants)")
    if (args.workers is not None and args.workers < 1) or args.budget_gb < 0:
        raise FlexCacheError("--workers must be >= 1 and --budget-gb >= 0")
    check_workload_flags(args)
    trace = read_trace(args.trace) if args.trace else None
    if args.live:
        return _bench_serve_live(args, systems, trace)
    if args.redis_url or args.stop_redis_after is not None:
        raise FlexCacheError("--redis-url and --stop-redis-after belong to --live")
    return _bench_serve_simulated(args, systems, trace)


def _bench_serve_simulated(args: argparse.Namespace, systems, trace) -> int:
    from flexcache.benchmarks.serve.command import simulated_result
    from flexcache.benchmarks.serve.run import DEFAULT_SWEEP_GB, format_serve_table

    sweep = DEFAULT_SWEEP_GB if args.sweep_gb is None else _parse_list(args.sweep_gb, "--sweep-gb", float)
    result = simulated_result(args, systems, trace, sweep_gb=sweep)
    print(f"Trace: {result['workload'].get('trace') or 'the ' + result['workload']['name'] + ' workload'}")
    print(format_serve_table(result))
    _write_json(args.json, result, "results")
    prefix = args.plots or (str(Path(args.json).with_suffix("")) if args.json else None)
    if prefix and sweep:
        from flexcache.benchmarks.serve.plots import write_sweep_plots

        for path in write_sweep_plots(result, prefix):
            print(f"plot written to {path}")
    return 0


def _bench_serve_live(args: argparse.Namespace, systems, trace) -> int:
    from flexcache.benchmarks.serve.command import live_result
    from flexcache.benchmarks.serve.live import format_live_table
    from flexcache.benchmarks.serve.run import format_defence_cost

    result = live_result(args, systems, trace)
    print("\n".join(text for text in (format_live_table(result), format_defence_cost(result["defence_cost"])) if text))
    _write_json(args.json, result, "results")
    failed = sum(row["failed"] for row in result["systems"].values())
    if failed:
        print(f"{failed} live requests failed; see 'errors' in the JSON", file=sys.stderr)
    return 1 if failed else 0


def _config_show(args: argparse.Namespace) -> int:
    if args.reference:
        from flexcache.core import config_reference

        sys.stdout.write(config_reference() + "\n")
        return 0
    sys.stdout.write(_config(args).to_yaml())
    return 0


def build_parser() -> argparse.ArgumentParser:
    from flexcache.benchmarks.serve.command import add_serve_bench_arguments
    from flexcache.serving.warm import add_warm_command
    parser = argparse.ArgumentParser(prog="flexcache", description="Approximate latent cache for video diffusion.")
    parser.add_argument("--version", action="version", version=f"flexcache {__version__}")
    parser.add_argument("--config", help="YAML config file (default: $FLEXCACHE_CONFIG, then built-in defaults)")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="serve a toy-world prompt stream through the cache")
    demo.add_argument("--json", metavar="PATH",
                      help="write the summary as JSON here, with a GIF grid (.gif) and a report (.md) beside it")
    demo.add_argument("--requests", type=int, default=36, help="prompts to serve (default 36)")
    demo.add_argument("--steps", type=int, default=20, help="denoising steps per request (default 20)")
    demo.add_argument("--guidance", type=float, default=3.0, help="classifier-free guidance scale (default 3)")
    demo.add_argument("--seed", type=int, default=0, help="seed of the prompt order and the noise")
    demo.add_argument("--policy", choices=POLICIES, help="replacement policy (overrides config)")
    demo.add_argument("--lookup", choices=LOOKUPS,
                      help="full-prompt (NIRVANA) or decoupled object/background look-up (overrides config)")
    demo.add_argument("--capacity", help="store capacity, e.g. 64MiB (overrides config)")
    demo.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    demo.set_defaults(run=_demo)

    bench = commands.add_parser("bench", help="benchmarks").add_subparsers(dest="bench", required=True)
    codec = bench.add_parser("codec", help="compression ratio, error and speed of the latent codec")
    codec.add_argument("--json", metavar="PATH", help="write the full results as JSON here")
    codec.add_argument("--shape", default="16,21,60,104", help="latent C,T,H,W (default: Wan2.1 480p, 81 frames)")
    codec.add_argument("--steps", type=int, default=10, help="denoising steps of the trajectories (default 10)")
    codec.add_argument("--seed", type=int, default=1234)
    codec.add_argument("--no-wan", action="store_true",
                       help="skip the tiny-Wan trajectory set (minutes of CPU at the default shape)")
    codec.set_defaults(run=_bench_codec)

    store = bench.add_parser("store", help="put/get throughput and latency per storage tier")
    store.add_argument("--json", metavar="PATH", help="write the full results as JSON here")
    store.add_argument("--sizes-mb", default="1,8,32", help="blob sizes in MB (default 1,8,32)")
    store.add_argument("--repeats", type=int, default=20, help="puts and gets per tier and size (default 20)")
    store.add_argument("--disk-path", help="directory for the disk tier (default: a temporary directory)")
    store.add_argument("--redis-url", help="benchmark a redis tier at this URL too (keys under 'flexcache:bench')")
    store.set_defaults(run=_bench_store)

    quality = bench.add_parser("quality", help="toy-world adherence when resuming from cached latents")
    quality.add_argument("--json", metavar="PATH", help="write the full results as JSON here")
    quality.add_argument("--pairs", type=int, default=24, help="request pairs per case (default 24)")
    quality.add_argument("--no-regions", action="store_true",
                         help="skip the region-hit measurement (decoupled_reuse; about 12 minutes on 2 cores)")
    quality.add_argument("--skips", default="0,4,8,12,16", help="skip depths K, in steps (default 0,4,8,12,16)")
    quality.add_argument("--budgets", default="exact,0.02,0.1",
                         help="codec error budgets as fractions of sigma_K, 'exact' = uncoded (default exact,0.02,0.1)")
    quality.add_argument("--steps", type=int, default=20, help="denoising steps (default 20)")
    quality.add_argument("--guidance", type=float, default=3.0, help="classifier-free guidance scale (default 3)")
    quality.add_argument("--held-out-prompts", type=int, default=2,
                         help="prompts per held-out combination for adherence_full_steps (default 2)")
    quality.add_argument("--weights", default=None, help="toy-world weights (default: the shipped ones)")
    quality.add_argument("--seed", type=int, default=0)
    quality.add_argument("--quick", action="store_true", help="4 pairs, K in {0, 10}, budgets exact and 0.05")
    quality.add_argument("--rules", metavar="RULES.yaml",
                         help="instead: judge a calibrated rules file on held-out pairs of --prompts, per rule and band")
    quality.add_argument("--prompts", metavar="FILE", help="with --rules: held-out prompts (one per line)")
    quality.add_argument("--pairs-per-band", type=int, default=8, help="with --rules: pairs per band (default 8)")
    quality.add_argument("--scorer-model", help="with --rules: the scorer's local model path (clip)")
    quality.set_defaults(run=_bench_quality)

    solvers = bench.add_parser("solvers", help="toy world: a resumed run against the uninterrupted one, per solver, "
                               "with and without the solver state restored")
    solvers.add_argument("--json", metavar="PATH", help="write the full results as JSON here")
    solvers.add_argument("--prompts", type=int, default=16, help="held-out prompts (default 16)")
    solvers.add_argument("--steps", type=int, default=20, help="denoising steps (default 20)")
    solvers.add_argument("--skips", default="4,8,12", help="resume steps K (default 4,8,12)")
    solvers.add_argument("--solvers", default="euler,unipc,dpm++", help="default: euler,unipc,dpm++")
    solvers.add_argument("--weights", default=None, help="toy-world weights (default: the shipped ones)")
    solvers.add_argument("--seed", type=int, default=0)
    solvers.set_defaults(run=_bench_solvers)

    compose = bench.add_parser("compose", help="toy world: in-request caches (FirstBlockCache, MagCache, TaylorSeer, "
                               "PAB, cache-dit) alone and with FlexCache; block evaluations counted")
    compose.add_argument("--json", metavar="PATH", help="write the full results as JSON here")
    compose.add_argument("--pairs", type=int, default=3, help="target/source pairs per case (default 3)")
    compose.add_argument("--steps", type=int, default=20, help="denoising steps (default 20)")
    compose.add_argument("--methods", default=None,
                         help="default: none,fbc,magcache,taylorseer,pab, and cachedit (cache-dit's DBCache) when "
                              "cache-dit is installed (none is the uncached baseline)")
    compose.add_argument("--cases", default=",".join(("identical", "near-duplicate", "same-background", "same-object",
                                                      "object-edit", "background-edit")),
                         help="reuse cases of the quality bench (default: all)")
    compose.add_argument("--weights", default=None, help="toy-world weights (default: the shipped ones)")
    compose.add_argument("--seed", type=int, default=0)
    compose.set_defaults(run=_bench_compose)

    attacks = bench.add_parser("attacks", help="toy world: prompt stealing, poisoning and a covert channel on a "
                               "shared pool (arXiv 2508.20424; timing and output readers, sybils, a text "
                               "poisoner), undefended and under each defence")
    attacks.add_argument("--attacks", default=None, help="default: all of them")
    attacks.add_argument("--json", metavar="PATH", help="write the full results as JSON here")
    attacks.add_argument("--size", default="full",
                         help="full (default), large (more trials) or small (what make test runs)")
    attacks.add_argument("--defences", default=None, help="default: all of them, each on its own, and the defaults")
    attacks.add_argument("--modes", default="engine,pipeline", help="engine API and/or pipeline calls (default both)")
    attacks.add_argument("--throughput", action=argparse.BooleanOptionalAction, default=True,
                         help="also simulate each defence's throughput cost on the default serving workload "
                              "(default: on; minutes per defence)")
    attacks.add_argument("--seed", type=int, default=0)
    attacks.set_defaults(run=_bench_attacks)

    splitter = bench.add_parser("splitter", help="prompt splitter accuracy on a labelled set")
    splitter.add_argument("--labels", default="tests/data/prompt_splits.jsonl",
                          help="labelled JSONL (default: tests/data/prompt_splits.jsonl, from the repository root)")
    splitter.add_argument("--failures", metavar="SPLIT", help="also list the misses of this split (dev, test, dev2, ... or all)")
    splitter.add_argument("--json", metavar="PATH", help="write the scores (and listed failures) as JSON here")
    splitter.set_defaults(run=_bench_splitter)

    languages = bench.add_parser("languages", help="near-duplicate matching across languages per embedder: "
                                 "AUC, recall at 1 %% / 0.1 %% easy false matches, hard negatives, latency")
    languages.add_argument("--data", action="append", metavar="[NAME=]PATH",
                           default=None, help="multilingual prompt JSONL (repeatable; default: "
                           "bench/data/multilingual-dev.jsonl and -heldout.jsonl, from the repository root)")
    languages.add_argument("--embedders", default="all-MiniLM-L6-v2,use-multilingual-v3,multilingual-e5-small",
                           help="comma-separated embedder.model values to compare")
    languages.add_argument("--no-progress", action="store_true")
    languages.add_argument("--json", metavar="PATH", help="write the results here (and the tables beside it as .md)")
    languages.set_defaults(run=_bench_languages)

    serve = bench.add_parser("serve", help="serving benchmark: throughput, latency, cost and hit rate per system "
                             "(simulated GPUs, or --live worker processes)")
    add_serve_bench_arguments(serve)
    serve.set_defaults(run=_bench_serve)
    from flexcache.benchmarks.index_bench import add_index_bench_command
    add_index_bench_command(bench)

    serve = commands.add_parser("serve", help="the reference HTTP server: N worker processes, each with its own "
                                "pipeline and local tier, over one shared Redis (needs the serve extra)")
    serve.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    serve.add_argument("--redis-url", help="the shared Redis (default: the config's redis tier, else a local "
                       "redis-server; one that disagrees with the config's is refused)")
    serve.add_argument("--model", default="toyworld",
                       help="toyworld (default) or a diffusers model id whose weights this machine has (GPU)")
    serve.add_argument("--steps", type=int, default=20, help="default denoising steps (default 20)")
    serve.add_argument("--guidance", type=float, default=3.0, help="guidance scale (default 3)")
    serve.add_argument("--memory", help="each worker's local tier (default: the config's store.capacity_bytes, "
                       "2GiB; with store.tiers in the config, only a value that matches its local tier)")
    serve.add_argument("--redis-capacity", help="the shared Redis tier's capacity (default: the config's redis tier, "
                       "else 16GiB)")
    serve.add_argument("--threads", type=int, default=1, help="torch threads per worker (default 1)")
    serve.set_defaults(run=_serve)

    inspect = commands.add_parser("inspect", help="list what a disk tier's directory or a Redis tier holds, "
                                  "without changing it; damaged entries are reported (exit status 1), a tier "
                                  "that cannot be read is an error (exit status 2)")
    where = inspect.add_mutually_exclusive_group(required=True)
    where.add_argument("--disk", metavar="PATH", help="a disk tier's directory (store.tiers[disk].path)")
    where.add_argument("--redis", metavar="URL", help="a Redis tier's server (store.tiers[redis].url)")
    inspect.add_argument("--cache-name", default="flexcache", help="redis: the cache's name (default flexcache)")
    inspect.add_argument("--prefix", default="flexcache", help="redis: the tier's key prefix (default flexcache)")
    inspect.add_argument("--verify", action="store_true", help="also decode every blob (frames are always checked)")
    inspect.add_argument("--json", metavar="PATH", help="write the report as JSON here")
    inspect.set_defaults(run=_inspect)

    config = commands.add_parser("config", help="print the effective configuration as YAML")
    config.add_argument("--reference", action="store_true",
                        help="print the reference of every config key instead (docs/config.md)")
    config.set_defaults(run=_config_show)
    add_warm_command(commands)
    from flexcache.quality.command import add_calibrate_command

    add_calibrate_command(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except FlexCacheError as exc:
        print(f"flexcache: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
