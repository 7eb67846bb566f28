"""`flexcache bench serve`: run every system over one trace and report throughput, latency, cost, hit rate.

Whenever a flexcache system runs, `flexcache` (default defences) and
`flexcache-undefended` run too, on the same trace and budgets, and
`defence_cost` reports what the defences between users cost.
"""

from __future__ import annotations

import platform
import time
from typing import Any

import torch

from flexcache.benchmarks.serve.parallel import beside, default_processes, run_jobs
from flexcache.benchmarks.serve.profiles import ModelProfile
from flexcache.benchmarks.serve.simulate import (
    SYSTEMS,
    CachePathCosts,
    SystemSpec,
    MemoizedEmbedder,
    defence_costs,
    flexcache_ratios,
    parse_system,
    simulate,
    summarize,
    with_undefended,
)
from flexcache.benchmarks.serve.sized import measure_entry_sizes
from flexcache.benchmarks.serve.workload import TraceRequest, near_duplicate_share
from flexcache.engine import build_embedder

# On-demand prices as published (shared/SERVING-FACTS.md, 2026-11).
DEFAULT_GPU_PRICE = 3.0  # USD per H100-hour (Lambda ~3, GCP A3 ~3, AWS ~3.9, RunPod ~2)
DEFAULT_STORAGE_PRICE = 0.11  # USD per GB-month (S3 Express; host memory / NVMe comes with the GPU)
DEFAULT_SWEEP_GB = (1.0, 4.0, 16.0, 64.0)  # the storage budgets the plots span
UNBOUNDED_BYTES = 10**18  # a budget nothing fills: NIRVANA's peak there is the trace's working set


def run_serve_bench(trace: list[TraceRequest], profile: ModelProfile, *, systems: tuple[str, ...] = tuple(SYSTEMS),
                    budget_bytes: int = 16 * 10**9, sweep_bytes: tuple[int, ...] = (), workers: int = 8,
                    gpu_price: float = DEFAULT_GPU_PRICE, storage_price: float = DEFAULT_STORAGE_PRICE,
                    costs: CachePathCosts = CachePathCosts(), progress: bool = True,
                    audit_rate: float = 0.0) -> dict[str, Any]:
    """Every system over `trace` at `budget_bytes`, and at each budget of `sweep_bytes` (the plots' points).

    Any flexcache system brings `flexcache` and `flexcache-undefended` (with
    its in-request method, if any): their throughputs give `defence_cost`.
    """
    from tqdm.auto import tqdm

    from flexcache.core import EmbedderConfig, PlannerConfig

    started = time.perf_counter()
    systems = with_undefended(systems)
    processes = default_processes()
    defaults = PlannerConfig()
    # The entry sizes are measured in a process of their own (one thread) while the prompts are split here
    # (one thread: the splitter's classifier, in order) and then embedded by workers (one thread each).
    sizes_future = beside(measure_entry_sizes, profile, defaults.checkpoint_fractions,
                          solver_state=defaults.solver_state)
    embedder = MemoizedEmbedder(build_embedder(EmbedderConfig(device="cpu")))
    prompts = [r.prompt for r in trace]
    embedder.prefill(prompts, words=True, processes=processes)
    sizes = sizes_future.result()
    span_h = max(trace[-1].t - trace[0].t, 1.0) / 3600
    offered = len(trace) / span_h
    budgets = sorted(set(sweep_bytes) | {budget_bytes})
    # nocache does not depend on the budget: one run serves every point.
    specs = {name: parse_system(name) for name in systems}
    runs = [(name, budget) for name in systems for budget in (budgets if specs[name][0].cached else budgets[:1])]

    def system_job(name: str, budget: int):
        spec, method = specs[name]
        return lambda tick: summarize(
            simulate(trace, profile, spec, budget_bytes=budget, workers=workers, embedder=embedder, entry_sizes=sizes,
                     costs=costs, on_request=tick, in_request=method, name=name, audit_rate=audit_rate),
            workers=workers, gpu_price_per_hour=gpu_price, storage_price_per_gb_month=storage_price, offered_rph=offered)

    # One matmul of every unique prompt with every other: on every core, before the runs take them.
    near_duplicates = near_duplicate_share(prompts, embedder)
    # Each system at each budget and NIRVANA's working set (its peak with no budget limit): independent jobs,
    # on every core (`serve.parallel`), the heaviest first.
    jobs = [system_job(name, budget) for name, budget in runs]
    weights = [_expected_cost(specs[name][0], len(trace)) for name, _ in runs]
    if "nirvana" in systems:
        jobs.append(lambda tick: simulate(trace, profile, SYSTEMS["nirvana"], budget_bytes=UNBOUNDED_BYTES,
                                          workers=workers, embedder=embedder, entry_sizes=sizes, costs=costs,
                                          on_request=tick).bytes_peak)
        weights.append(1.5 * _expected_cost(SYSTEMS["nirvana"], len(trace)))  # its index grows to every prompt
    with tqdm(total=len(trace) * len(jobs), desc="requests", unit="req", disable=not progress) as bar:
        outcomes = run_jobs(jobs, processes=processes, weights=weights, on_progress=bar.update)
    rows: dict[tuple[str, int], dict[str, Any]] = dict(zip(runs, outcomes))
    working_set = outcomes[len(runs)] if "nirvana" in systems else None
    for name in systems:
        if not specs[name][0].cached:
            for budget in budgets:
                rows[name, budget] = rows[name, budgets[0]]
    out = {name: rows[name, budget_bytes] for name in systems}
    sweep = {name: [{"budget_bytes": b} | rows[name, b] for b in sorted(set(sweep_bytes))] for name in systems}
    ratios = flexcache_ratios(out)
    defence = defence_costs({b: {name: rows[name, b] for name in systems} for b in budgets})
    workload = {"requests": len(trace), "unique_prompts": len(set(prompts)),
                "nirvana_working_set_bytes": working_set,
                # At each budget, the share of that working set NIRVANA can hold.
                "nirvana_held_share_by_budget": ({str(b): min(1.0, b / working_set) for b in budgets}
                                                 if working_set else None),
                "near_duplicate_share": near_duplicates,
                "near_duplicate_threshold": 0.9,
                "public_reference": "VidProM ~38 %, DiffusionDB ~59 % of unique prompts have a near-duplicate"}
    return {
        "mode": "simulated",
        "workload": workload,
        "systems": out,
        "ratios": ratios,
        "defence_cost": defence,
        "sweep": sweep,
        "profile": vars(profile) | {"latent_shape": list(profile.latent_shape)},
        "entry_bytes_by_step": sizes,
        "in_request": {name: method.describe(profile.name) for name, (_, method) in specs.items() if method is not None},
        "settings": {"requests": len(trace), "budget_bytes": budget_bytes, "sweep_bytes": sorted(set(sweep_bytes)),
                     "workers": workers,
                     "gpu_price_per_hour": gpu_price, "storage_price_per_gb_month": storage_price,
                     "tier": "one host-memory tier of budget_bytes per system (accounted sizes)",
                     "cache_path_costs": vars(costs)},
        "wall_seconds": time.perf_counter() - started,
        "machine": {"platform": platform.platform(), "torch": torch.__version__,
                    "cuda": torch.cuda.is_available()},
    }


def _expected_cost(spec: SystemSpec, requests: int) -> float:
    """Seconds a simulated run of `spec` is expected to take on one thread (job order only, never reported)."""
    if not spec.cached:
        return 1e-5 * requests
    # Measured at 20,000 open-vocabulary requests: 2.3 ms a request decoupled (three look-ups a plan, region
    # hits), 1.1 ms with full-prompt look-ups.
    return (2.3e-3 if spec.lookup == "decoupled" else 1.1e-3) * requests


def format_serve_table(result: dict[str, Any]) -> str:
    w = result["workload"]
    lines = [
        f"Workload: {w['requests']} requests, {w['unique_prompts']} unique prompts, "
        f"{w['near_duplicate_share']:.0%} of them with a near-duplicate (cosine >= {w['near_duplicate_threshold']}; "
        "VidProM ~38 %, DiffusionDB ~59 %)",
    ]
    if w.get("nirvana_working_set_bytes"):
        shares = ", ".join(f"{float(b) / 1e9:g} GB {share:.1%}" for b, share in w["nirvana_held_share_by_budget"].items())
        lines.append(f"NIRVANA's working set (raw entries, no budget limit): "
                     f"{w['nirvana_working_set_bytes'] / 1e9:.1f} GB; share a budget holds: {shares}")
    lines += [
        "",
        "| system | throughput (req/h) | p50 latency (s) | p95 latency (s) | hit rate | decoupled | region | "
        "steps saved | $ / 1k videos | stored (GB) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in result["systems"].items():
        lines.append(f"| {name} | {row['throughput_rph']:.2f} | {row['p50_latency_s']:.0f} | "
                     f"{row['p95_latency_s']:.0f} "
                     f"| {row['hit_rate']:.1%} | {row['decoupled_hits']} | {row.get('region_hits', 0)} | "
                     f"{row['steps_saved_frac']:.1%} | "
                     f"{row['cost_per_1k_videos']:.2f} | {row['bytes_peak'] / 1e9:.2f} |")
    methods = {record["method"]: record for record in (result.get("in_request") or {}).values()}
    if methods:
        lines += ["", "In-request methods (compute kept per step; toy-world adherence with FlexCache):", ""]
        for name, record in methods.items():
            floor = "meets" if record["meets_adherence_floor"] else "BELOW"
            lines.append(f"- {name} (setting {record['setting']:g}): full runs {record['full_run'][0]:.3f} "
                         f"({record['full_run'][1]}), resumed runs {record['resumed_run'][0]:.3f}; adherence "
                         f"{record['composed_adherence']:.1%} of uncached, {floor} the 98 % floor")
    for name, ratio in result["ratios"].items():
        lines.append(f"\n{name}: throughput x{ratio['throughput']:.3f}, "
                     f"cost per video {ratio['cost_reduction']:.1%} lower")
    lines += [text for text in (format_defence_cost(result.get("defence_cost") or {}),
                                format_between_users(result["systems"])) if text]
    sweep = result.get("sweep") or {}
    budgets = [point["budget_bytes"] for point in next(iter(sweep.values()), [])]
    if budgets:
        heads = " | ".join(f"{b / 1e9:g} GB" for b in budgets)
        lines += ["", "Throughput (req/h) / hit rate by storage budget:", "", f"| system | {heads} |",
                  "|---|" + "---|" * len(budgets)]
        for name, points in sweep.items():
            cells = " | ".join(f"{p['throughput_rph']:.2f} / {p['hit_rate']:.0%}" for p in points)
            lines.append(f"| {name} | {cells} |")
    return "\n".join(lines)


def format_defence_cost(defence: dict[str, list[dict[str, Any]]]) -> str:
    """The `defence_cost` table: each defended system against its undefended twin, budget by budget."""
    if not defence:
        return ""
    lines = ["", "Defence cost (default defences between users vs flexcache-undefended; 1 - throughput ratio):", "",
             "| system | budget (GB) | throughput (req/h) | undefended (req/h) | defence cost | hit rate "
             "| undefended hit rate |", "|---|---|---|---|---|---|---|"]
    for name, points in defence.items():
        for p in points:
            lines.append(f"| {name} | {p['budget_bytes'] / 1e9:g} | {p['throughput_rph']:.2f} | "
                         f"{p['undefended_throughput_rph']:.2f} | {p['defence_cost']:.1%} | {p['hit_rate']:.1%} | "
                         f"{p['undefended_hit_rate']:.1%} |")
    return "\n".join(lines)


# The sharing counters the table shows (the JSON's `sharing` holds every counter the engine keeps).
SHARING_SHOWN = ("cross_user_candidates", "withheld_unconfirmed", "gated", "capped", "trusted_hits")


def format_between_users(systems: dict[str, dict[str, Any]]) -> str:
    """Own and cross-user hits, latency padding, and what each defence withheld, per cached system."""
    rows = {name: row for name, row in systems.items() if row.get("sharing") is not None}
    if not rows:
        return ""
    lines = ["", "Between users (hits on the requester's own entries vs another user's; padded: answered no "
             "sooner than a full run; then the guard's counters):", "",
             "| system | own hits | cross-user hits | padded | p50 / p95 unpadded (s) | "
             + " | ".join(name.replace("_", " ") for name in SHARING_SHOWN) + " |",
             "|---|---|---|---|---|" + "---|" * len(SHARING_SHOWN)]
    for name, row in rows.items():
        counters = " | ".join(str(row["sharing"].get(counter, "-")) for counter in SHARING_SHOWN)
        lines.append(f"| {name} | {row['own_hits']} | {row['cross_user_hits']} | {row['padded_requests']} | "
                     f"{row['unpadded_p50_latency_s']:.0f} / {row['unpadded_p95_latency_s']:.0f} | {counters} |")
    return "\n".join(lines)
