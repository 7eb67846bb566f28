"""`flexcache bench serve` from its parsed flags: the preset, the profile, the trace and the run (cli.py prints).

Both modes run `flexcache` beside `flexcache-undefended` whenever a
flexcache system is asked for (`simulate.with_undefended`), and report
`defence_cost`.
"""

from __future__ import annotations

import argparse
from typing import Any

from flexcache.benchmarks.serve.workload import TraceRequest


def simulated_result(args: argparse.Namespace, systems: tuple[str, ...] | None, trace: list[TraceRequest] | None,
                     *, sweep_gb: tuple[float, ...], workload_flags) -> dict[str, Any]:
    """The simulated bench's result for the flags in `args` (`--quick` preset applied to `args`).

    Args:
        args: the parsed `bench serve` flags.
        systems: the systems asked for; None: every simulated system.
        trace: the replayed trace; None: a synthetic one from the workload flags.
        sweep_gb: the budgets of the sweep, GB.
        workload_flags: names of the `SyntheticWorkload` fields that have a flag.

    Raises:
        FlexCacheError: a negative budget in `sweep_gb`.
    """
    from flexcache.benchmarks.serve.profiles import (
        get_profile,
        measure_toyworld_profile,
    )
    from flexcache.benchmarks.serve.run import run_serve_bench
    from flexcache.benchmarks.serve.simulate import SYSTEMS
    from flexcache.benchmarks.serve.workload import SyntheticWorkload, generate_trace
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
        shape = {flag: getattr(args, flag) for flag in workload_flags if getattr(args, flag) is not None}
        users = args.users or (200 if args.quick else None)  # --quick keeps its 200 users
        trace = generate_trace(SyntheticWorkload(requests=args.requests or SyntheticWorkload.requests, users=users,
                                                 seed=args.seed, requests_per_hour=rate, **shape))
    return run_serve_bench(trace, profile, systems=systems or tuple(SYSTEMS),
                           budget_bytes=int(args.budget_gb * 1e9), sweep_bytes=tuple(int(b * 1e9) for b in sweep_gb),
                           workers=workers, gpu_price=args.gpu_price, storage_price=args.storage_price,
                           progress=not args.no_progress, audit_rate=getattr(args, "audit_rate", 0.0) or 0.0)


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
