"""`flexcache bench serve`: its flags, and its results from the parsed flags (cli.py prints).

The preset, the profile, the trace (a replayed one or a synthetic workload
by name) and the run. Both modes run `flexcache` beside
`flexcache-undefended` whenever a flexcache system is asked for
(`simulate.with_undefended`), and report `defence_cost`.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
from typing import Any

from flexcache.benchmarks.serve.workload import TraceRequest

# The synthetic workloads, by name: the default first.
WORKLOADS = ("open-vocabulary", "topics")
# The synthetic workloads' shape, one flag each (defaults and sources: `workload.DEFAULT_SOURCES`,
# `open_vocab.OPEN_VOCABULARY_SOURCES`). All but the topics-only ones shape the open-vocabulary workload too.
WORKLOAD_FLAGS = {
    "session_mean": "mean prompts per user session",
    "session_median": "median prompts per session",
    "edit_share": "share of in-session prompts that edit the previous one",
    "repeat_share": "share of exact resubmissions",
    "zipf_exponent": "topic / word popularity Zipf exponent",
    "trough_to_peak": "diurnal arrival trough / peak",
}
TOPICS_ONLY_FLAGS = ("edit_share",)


def add_serve_bench_arguments(serve: argparse.ArgumentParser) -> None:
    """The flags of `flexcache bench serve`."""
    from flexcache.benchmarks.serve.open_vocab import DEFAULT_NEAR_DUPLICATE_SHARE, SHARE_CALIBRATION
    from flexcache.benchmarks.serve.workload import DEFAULT_SOURCES, SyntheticWorkload

    serve.add_argument("--trace", help="JSONL request trace (default: a synthetic one, see --workload; docs: "
                       "bench/e2e/README.md)")
    serve.add_argument("--workload", choices=WORKLOADS,
                       help="the synthetic trace: open-vocabulary (default: compositional, long-tailed prompts in "
                            "sessions of edits, trends, several languages) or topics (a finite set of subjects and "
                            "settings recombined, the earlier default)")
    low, high = SHARE_CALIBRATION[0][0], SHARE_CALIBRATION[-1][0]
    serve.add_argument("--near-duplicate-share", type=float,
                       help=f"open-vocabulary: share of unique prompts with a near-duplicate at cosine >= 0.9, "
                            f"{low}-{high} (default {DEFAULT_NEAR_DUPLICATE_SHARE}: VidProM's figure)")
    serve.add_argument("--profile",
                       help="model profile (wan2.1-1.3b-480p, wan2.1-14b-720p, hunyuanvideo-720p, cogvideox-5b, "
                            "ltx-video, or 'measure': time the toy-world pipeline here; default wan2.1-14b-720p)")
    serve.add_argument("--systems", help="systems to compare (default: every system simulated; "
                       "nocache,nirvana,flexcache live); simulated ones take +fbc, +magcache or +taylorseer "
                       "(an in-request cache on every run: nocache+magcache,nirvana+magcache,flexcache+magcache). "
                       "Any flexcache system brings flexcache and flexcache-undefended (their ratio is the "
                       "defence cost); the ablations (flexcache-no-*) keep the default defences")
    serve.add_argument("--budget-gb", type=float, default=16.0, help="storage budget per system, GB (default 16)")
    serve.add_argument("--sweep-gb", help="also run at these budgets, for the plots (default 1,4,16,64; '' for none)")
    serve.add_argument("--plots", metavar="PREFIX", help="write PREFIX-throughput.png and PREFIX-hit-rate.png "
                       "(default: next to --json)")
    serve.add_argument("--workers", type=int, help="simulated GPUs (default 8) or live worker processes (default 3)")
    serve.add_argument("--requests", type=int, help="synthetic trace length (default 20000; live: 60)")
    serve.add_argument("--users", type=int, help="synthetic users (default: requests / 10; --quick: 200)")
    for name, help_text in WORKLOAD_FLAGS.items():
        serve.add_argument(f"--{name.replace('_', '-')}", dest=name, type=float,
                           help=f"{'topics' if name in TOPICS_ONLY_FLAGS else 'synthetic'}: {help_text} "
                                f"(default {getattr(SyntheticWorkload, name)}; {DEFAULT_SOURCES[name]})")
    serve.add_argument("--rph", type=float, help="synthetic offered load, requests/hour (default: 80%% of the "
                       "workers' uncached capacity)")
    serve.add_argument("--gpu-price", type=float, default=3.0, help="USD per GPU-hour (default 3, H100 on-demand 2026)")
    serve.add_argument("--storage-price", type=float, default=0.11,
                       help="USD per GB-month (default 0.11, S3 Express 2026)")
    serve.add_argument("--seed", type=int, default=0)
    serve.add_argument("--audit-rate", type=float, default=0.0,
                       help="simulated: quality.audit_rate of the cached systems (each audit a full run; default 0)")
    serve.add_argument("--json", metavar="PATH", help="write the full results as JSON here")
    serve.add_argument("--quick", action="store_true",
                       help="small preset: 120 requests, 2 workers, the Wan2.1-1.3B profile unless --profile "
                            "(live: 24 requests)")
    serve.add_argument("--live", action="store_true", help="run real toy-world worker processes sharing one Redis")
    serve.add_argument("--redis-url", help="live: the shared Redis (default: start a local redis-server per system)")
    serve.add_argument("--stop-redis-after", type=int, metavar="N",
                       help="live: stop the local Redis after N requests (checks the fall-back to local tiers)")
    serve.add_argument("--time-scale", type=float, default=0.0,
                       help="live: release requests at trace time x this (default 0: all at once, saturation)")
    serve.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def check_workload_flags(args: argparse.Namespace) -> None:
    """Refuse workload flags that the chosen trace would ignore, naming the flag.

    Raises:
        ConfigError: `--workload` or `--near-duplicate-share` with `--trace` or `--live`;
            `--near-duplicate-share` with the topics workload; a topics-only flag with open-vocabulary.
    """
    from flexcache.core import ConfigError

    named = [flag for flag, value in (("--workload", args.workload),
                                      ("--near-duplicate-share", args.near_duplicate_share)) if value is not None]
    if named and args.trace:
        raise ConfigError(f"{' and '.join(named)} shape a synthetic trace; --trace replays its own requests "
                          "(drop one of them)")
    if named and args.live:
        raise ConfigError(f"{' and '.join(named)} apply to the simulated mode; --live serves the toy world's own "
                          "trace")
    workload = args.workload or WORKLOADS[0]
    if workload == "topics" and args.near_duplicate_share is not None:
        raise ConfigError("--near-duplicate-share applies to --workload open-vocabulary; the topics workload's "
                          "edits follow --edit-share")
    for name in TOPICS_ONLY_FLAGS:
        if workload != "topics" and getattr(args, name, None) is not None:
            raise ConfigError(f"--{name.replace('_', '-')} applies to --workload topics only; the "
                              "open-vocabulary workload's edits follow --near-duplicate-share")


def synthetic_trace(args: argparse.Namespace, requests_per_hour: float,
                    render_seconds: float) -> tuple[list[TraceRequest], dict[str, Any]]:
    """The synthetic trace the flags ask for, and its `workload` description (name and parameters).

    Args:
        args: the parsed `bench serve` flags (`check_workload_flags` passed).
        requests_per_hour: the offered load.
        render_seconds: a full run of the profile: how long open-vocabulary users wait before editing.

    Raises:
        InvalidTraceError: a workload parameter out of its range.
    """
    from flexcache.benchmarks.serve.open_vocab import OpenVocabularyWorkload, generate_open_vocabulary_trace
    from flexcache.benchmarks.serve.workload import SyntheticWorkload, generate_trace

    name = args.workload or WORKLOADS[0]
    shape = {flag: getattr(args, flag) for flag in WORKLOAD_FLAGS if getattr(args, flag, None) is not None}
    common = {"requests": args.requests or SyntheticWorkload.requests, "seed": args.seed,
              "users": args.users or (200 if args.quick else None),  # --quick keeps its 200 users
              "requests_per_hour": requests_per_hour}
    if name == "topics":
        spec = SyntheticWorkload(**common, **shape)
        return generate_trace(spec), {"name": name, "parameters": asdict(spec)}
    if args.near_duplicate_share is not None:
        shape["near_duplicate_share"] = args.near_duplicate_share
    spec = OpenVocabularyWorkload(**common, **shape, render_seconds=render_seconds)
    return generate_open_vocabulary_trace(spec), {"name": name, "parameters": spec.to_dict()}


def simulated_result(args: argparse.Namespace, systems: tuple[str, ...] | None, trace: list[TraceRequest] | None,
                     *, sweep_gb: tuple[float, ...]) -> dict[str, Any]:
    """The simulated bench's result for the flags in `args` (`--quick` preset applied to `args`).

    Args:
        args: the parsed `bench serve` flags.
        systems: the systems asked for; None: every simulated system.
        trace: the replayed trace; None: a synthetic one from the workload flags (`synthetic_trace`).
        sweep_gb: the budgets of the sweep, GB.

    Returns:
        `run.run_serve_bench`'s result; its `workload` block also names the workload and its parameters
        (``"name": "trace"`` and the file for a replayed trace).

    Raises:
        FlexCacheError: a negative budget in `sweep_gb`, a workload parameter out of its range.
    """
    from flexcache.benchmarks.serve.profiles import (
        get_profile,
        measure_toyworld_profile,
    )
    from flexcache.benchmarks.serve.run import run_serve_bench
    from flexcache.benchmarks.serve.simulate import SYSTEMS
    from flexcache.core import FlexCacheError

    if any(b < 0 for b in sweep_gb):
        raise FlexCacheError("--sweep-gb budgets must be >= 0")
    if args.quick:
        args.requests, args.profile, args.workers = 120, args.profile or "wan2.1-1.3b-480p", args.workers or 2
    workers = args.workers or 8
    name = args.profile or "wan2.1-14b-720p"
    profile = measure_toyworld_profile() if name == "measure" else get_profile(name)
    if trace is None:
        # Offered load: 80 % of what the workers serve uncached, unless given.
        rate = args.rph or 0.8 * workers * 3600 / profile.seconds_full
        trace, workload = synthetic_trace(args, rate, profile.seconds_full)
    else:
        workload = {"name": "trace", "trace": args.trace}
    result = run_serve_bench(trace, profile, systems=systems or tuple(SYSTEMS),
                             budget_bytes=int(args.budget_gb * 1e9),
                             sweep_bytes=tuple(int(b * 1e9) for b in sweep_gb), workers=workers,
                             gpu_price=args.gpu_price, storage_price=args.storage_price,
                             progress=not args.no_progress, audit_rate=getattr(args, "audit_rate", 0.0) or 0.0)
    result["workload"] = workload | result["workload"]
    return result


def live_result(args: argparse.Namespace, systems: tuple[str, ...] | None,
                trace: list[TraceRequest] | None) -> dict[str, Any]:
    """The live bench's result for the flags in `args`, with `defence_cost` added.

    Raises:
        FlexCacheError: `--profile` other than `measure` (live mode serves the toy world).
    """
    from flexcache.benchmarks.serve.live import run_live_bench, toyworld_trace
    from flexcache.benchmarks.serve.simulate import defence_costs, with_undefended
    from flexcache.core import FlexCacheError

    if args.profile not in (None, "measure"):  # the toy world is what live mode serves (and measures)
        raise FlexCacheError("--live serves the toy-world pipeline on this machine; --profile applies to the "
                             "simulated mode only")
    if args.quick:
        args.requests = args.requests or 24
    trace = trace if trace is not None else toyworld_trace(args.requests or 60, args.seed)
    budget_bytes = int(args.budget_gb * 1e9)
    result = run_live_bench(trace, systems=with_undefended(systems or ("nocache", "nirvana", "flexcache")),
                            workers=args.workers or 3, budget_bytes=budget_bytes, redis_url=args.redis_url,
                            stop_redis_after=args.stop_redis_after, time_scale=args.time_scale,
                            gpu_price=args.gpu_price, storage_price=args.storage_price,
                            progress=not args.no_progress)
    result["defence_cost"] = defence_costs({budget_bytes: result["systems"]})
    return result
