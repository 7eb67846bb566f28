"""`flexcache bench attacks`: every attack on a shared pool, undefended, under each defence and the defaults.

Victims and attackers are users of one tenant (one namespace), each attack
run on a fresh cache under each `sharing` setting of `DEFENCES`, through the
engine API (`plan` / `fetch` / `insert`, the service computing runs with the
toy world's `sample`) and through pipeline calls (`enable_flexcache` on the
toy-world `WanPipeline`, ``flexcache_user=``). The attacks are in
`timing_attacks` (the attacker reads how long requests take) and
`output_attacks` (it reads the videos too, holds sybils, or poisons with
honest text).
"""

from __future__ import annotations

import dataclasses
import platform
import random
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch

from flexcache.benchmarks.attacks.output_attacks import (
    covert_channel_output,
    prompt_stealing_output,
    text_poisoning,
)
from flexcache.benchmarks.attacks.scoring import with_bound
from flexcache.benchmarks.attacks.services import (
    UNDEFENDED,
    EngineService,
    PipelineService,
    World,
)
from flexcache.benchmarks.attacks.timing_attacks import (
    ATTACKER,
    RECEIVER,
    covert_channel,
    poisoning,
    prompt_stealing,
)
from flexcache.core import SharingConfig

# Each defence on its own, then the defaults (all that are on by default together).
DEFENCES: dict[str, SharingConfig] = {
    "none": UNDEFENDED,
    "min_askers": replace(UNDEFENDED, min_askers=SharingConfig().min_askers),
    "depth_cap": replace(UNDEFENDED, cross_user_max_fraction=SharingConfig().cross_user_max_fraction),
    # The gate caps a hit at cross_user_max_fraction: on its own it needs that cap, which also caps
    # unverified entries (the depth_cap row without the gate).
    "containment_gate": replace(UNDEFENDED, containment_gate=True,
                                cross_user_max_fraction=SharingConfig().cross_user_max_fraction),
    "write_quota": replace(UNDEFENDED, user_max_entries=25),
    "rate_limit": replace(UNDEFENDED, user_inserts_per_minute=10),
    "randomized_choice": replace(UNDEFENDED, randomize_within=0.05),
    "latency_padding": replace(UNDEFENDED, latency_padding=True),
    "defaults": SharingConfig(),
}
TIMING_ATTACKS = ("prompt_stealing", "poisoning", "covert_channel")
OUTPUT_ATTACKS = ("prompt_stealing_output", "covert_channel_output", "text_poisoning")
ATTACKS = TIMING_ATTACKS + OUTPUT_ATTACKS
# Attacks whose service must make real clips (the others read only steps or time).
_READS_CLIPS = ("poisoning",) + OUTPUT_ATTACKS

# Pipeline calls run the model for every probe: fewer trials, and the settings that change what a call shows.
# Output attacks run the model for every request in both modes (two or more a probe): fewer again. The text
# poisoner searches seed_batches x seed_batch seeds per direction offline (kept across defences).
SIZES = {"full": {"engine": dict(victims=20, candidates=48, targets=12, victims_per_target=3, bits=48,
                                 output_victims=10, output_candidates=8, output_bits=32, poison_targets=8),
                  "pipeline": dict(victims=6, candidates=12, targets=6, victims_per_target=3, bits=24,
                                   output_victims=6, output_candidates=6, output_bits=16, poison_targets=6)},
         # More trials where reading latency is noisy: pipeline calls on a shared CPU.
         "large": {"engine": dict(victims=40, candidates=48, targets=24, victims_per_target=3, bits=96,
                                  output_victims=20, output_candidates=8, output_bits=64, poison_targets=16),
                   "pipeline": dict(victims=12, candidates=12, targets=16, victims_per_target=3, bits=72,
                                    output_victims=12, output_candidates=6, output_bits=32, poison_targets=12)},
         "small": {"engine": dict(victims=4, candidates=8, targets=2, victims_per_target=3, bits=12,
                                  output_victims=3, output_candidates=4, output_bits=8, poison_targets=2),
                   "pipeline": dict(victims=2, candidates=6, targets=2, victims_per_target=3, bits=8,
                                    output_victims=2, output_candidates=3, output_bits=6, poison_targets=2)}}
PIPELINE_DEFENCES = ("none", "latency_padding", "defaults")


def run_attack(attack: str, service, world: World, rng: random.Random, n: dict[str, int]) -> dict[str, Any]:
    """One attack's row against `service`, at the sizes `n` (a `SIZES` entry)."""
    if attack == "prompt_stealing":
        row = prompt_stealing(service, world, rng, victims=n["victims"], candidates=n["candidates"], margin=2)
    elif attack == "poisoning":
        row = poisoning(service, world, rng, targets=n["targets"], victims_per_target=n["victims_per_target"])
    elif attack == "covert_channel":
        row = covert_channel(service, world, rng, bits=n["bits"], margin=2)
    elif attack == "prompt_stealing_output":
        row = prompt_stealing_output(service, world, rng, victims=n["output_victims"],
                                     candidates=n["output_candidates"])
    elif attack == "covert_channel_output":
        row = covert_channel_output(service, world, rng, bits=n["output_bits"])
    else:
        row = text_poisoning(service, world, rng, targets=n["poison_targets"],
                             victims_per_target=n["victims_per_target"],
                             **{k: n[k] for k in ("seed_batch", "seed_batches") if k in n})
    return row if "success_upper_95" in row else with_bound(row)


def run_attacks_bench(*, size: str = "full", defences: tuple[str, ...] | None = None, modes=("engine", "pipeline"),
                      attacks: tuple[str, ...] = ATTACKS, seed: int = 0, throughput: bool = False,
                      progress: Callable[[str], None] | None = None, world: World | None = None) -> dict[str, Any]:
    """Each attack under each defence setting, through each mode; a JSON-ready dict.

    Args:
        size: a key of `SIZES`.
        defences: keys of `DEFENCES` (default: all).
        modes: ``"engine"`` and/or ``"pipeline"``.
        attacks: names from `ATTACKS`.
        seed: seeds every attack's choices (prompts, messages).
        throughput: also measure `defence_throughput_cost` (serving simulations, minutes each).
        progress: called with a line after each run.
        world: the toy world to run in (built when omitted; tests share one).

    Returns:
        ``attacks``: per attack, the weaker undefended mode's success rate, the
        stronger defended mode's with its trials and 95 % upper bound, and every row.
    """
    started = time.perf_counter()
    world = world or World()
    names = defences or tuple(DEFENCES)
    results: dict[str, dict[str, dict[str, Any]]] = {attack: {} for attack in attacks}
    for mode in modes:
        for name in names:
            if mode == "engine" and name == "latency_padding":
                continue  # padding is a pipeline call's; through the engine API the service would pad
            if mode == "pipeline" and name not in PIPELINE_DEFENCES:
                continue
            n = SIZES[size][mode]
            sharing = DEFENCES[name]
            for attack in attacks:
                rng = random.Random(f"{seed}-{attack}")
                if mode == "engine":
                    service = EngineService(world, sharing, denoise=attack in _READS_CLIPS)
                else:
                    service = PipelineService(world, sharing)
                    if attack in TIMING_ATTACKS:
                        for user in (ATTACKER, RECEIVER):
                            service.calibrate(user, seed=90_000)
                try:
                    row = run_attack(attack, service, world, rng, n)
                    row["sharing"] = service.cache.stats()["sharing"]
                finally:
                    service.close()
                results[attack].setdefault(mode, {})[name] = row
                if progress is not None:
                    progress(f"{mode} {name} {attack}: {row['success_rate']:.2f} "
                             f"(95 % upper {row['success_upper_95']:.2f}, {row['trials']} trials)")
    summary = {attack: summarize_attack(by_mode) for attack, by_mode in results.items()}
    cost = defence_throughput_cost(progress=progress) if throughput else None
    return {"benchmark": "attacks", "size": size, "attacks": summary, "defense_throughput_cost": cost,
            "defences": {name: _plain(DEFENCES[name]) for name in names},
            "defaults": _plain(SharingConfig()), "machine": f"{platform.machine()} {platform.system()}, "
            f"{torch.get_num_threads()} threads", "seconds": time.perf_counter() - started}


def summarize_attack(by_mode: dict[str, dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """One attack across modes: the weaker undefended mode (conservative) and the stronger defended mode.

    Among modes of equal defended success the one with the larger 95 % upper bound (fewer trials) stands.
    """
    undefended = [(rows["none"]["success_rate"], mode) for mode, rows in by_mode.items() if "none" in rows]
    defended = [(rows["defaults"]["success_rate"], rows["defaults"]["success_upper_95"], mode)
                for mode, rows in by_mode.items() if "defaults" in rows]
    weak, strong = min(undefended, default=None), max(defended, default=None)
    return {
        "success_rate_undefended": weak[0] if weak else None,
        "trials_undefended": by_mode[weak[1]]["none"]["trials"] if weak else None,
        "mode_undefended": weak[1] if weak else None,
        "success_rate_defended": strong[0] if strong else None,
        "trials_defended": by_mode[strong[2]]["defaults"]["trials"] if strong else None,
        "success_upper_95_defended": strong[1] if strong else None,
        "mode_defended": strong[2] if strong else None,
        "by_mode": by_mode,
    }


# The defences whose throughput cost is simulated one by one: those on by default (the quota and the
# randomized choice are off by default; the rate limit counts wall-clock minutes,
# which a simulation does not have; padding holds a response, not a GPU).
COSTED_DEFENCES = ("none", "min_askers", "depth_cap", "defaults")


def defence_throughput_cost(requests: int | None = None, defences: tuple[str, ...] = COSTED_DEFENCES,
                            progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """flexcache under each defence setting on the serving bench's default workload (simulated).

    Wan2.1-14B profile, 8 workers, 16 GB, the default synthetic trace (20,000 requests unless
    `requests`); ``cost`` is 1 - throughput / throughput with every defence off.
    """
    from flexcache.benchmarks.serve.profiles import get_profile
    from flexcache.benchmarks.serve.run import MemoizedEmbedder
    from flexcache.benchmarks.serve.simulate import SYSTEMS, simulate, summarize
    from flexcache.benchmarks.serve.sized import measure_entry_sizes
    from flexcache.benchmarks.serve.workload import SyntheticWorkload, generate_trace
    from flexcache.core import EmbedderConfig, PlannerConfig
    from flexcache.engine import build_embedder

    profile, workers, budget = get_profile("wan2.1-14b-720p"), 8, 16 * 10**9
    workload = SyntheticWorkload(requests_per_hour=0.8 * workers * 3600 / profile.seconds_full,
                                 **({"requests": requests} if requests else {}))
    trace = generate_trace(workload)
    embedder = MemoizedEmbedder(build_embedder(EmbedderConfig(device="cpu")))
    embedder.prefill(r.prompt for r in trace)
    planner = PlannerConfig()
    sizes = measure_entry_sizes(profile, planner.checkpoint_fractions, solver_state=planner.solver_state)
    rows = {}
    for name in defences:
        spec = replace(SYSTEMS["flexcache"], name=f"flexcache ({name})", sharing=DEFENCES[name])
        result = simulate(trace, profile, spec, budget_bytes=budget, workers=workers, embedder=embedder,
                          entry_sizes=sizes)
        row = summarize(result, workers=workers, gpu_price_per_hour=0.0, storage_price_per_gb_month=0.0,
                        offered_rph=0.0)
        rows[name] = {k: row[k] for k in ("throughput_rph", "hit_rate", "steps_saved_frac", "region_hits")}
        if progress is not None:
            progress(f"throughput under {name}: {row['throughput_rph']:.2f} req/h")
    base = rows["none"]["throughput_rph"]
    for row in rows.values():
        row["cost"] = 1 - row["throughput_rph"] / base
    return {"cost": rows["defaults"]["cost"] if "defaults" in rows else None,
            "throughput_defended_rph": rows.get("defaults", {}).get("throughput_rph"),
            "throughput_undefended_rph": base, "by_defence": rows, "requests": len(trace),
            "source": f"flexcache bench serve's simulator, default workload ({len(trace)} requests), "
                      f"{profile.name} profile, {workers} workers, 16 GB"}


def _plain(sharing: SharingConfig) -> dict[str, Any]:
    return {k: v for k, v in dataclasses.asdict(sharing).items() if k not in ("tenants", "pools")}


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def format_attacks_table(result: dict[str, Any]) -> str:
    names = list(result["defences"])
    lines = [f"attack success rate by defence ({result['size']} size; engine API / pipeline call)", "",
             "| attack | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for attack, summary in result["attacks"].items():
        cells = []
        for name in names:
            values = [summary["by_mode"].get(mode, {}).get(name) for mode in ("engine", "pipeline")]
            cells.append(" / ".join("-" if v is None else f"{v['success_rate']:.2f}" for v in values))
        lines.append(f"| {attack} | " + " | ".join(cells) + " |")
    lines.append("")
    for attack, summary in result["attacks"].items():
        lines.append(f"- {attack}: undefended {_rate(summary['success_rate_undefended'])} "
                     f"({summary['mode_undefended']}, {summary['trials_undefended']} trials), defaults "
                     f"{_rate(summary['success_rate_defended'])} ({summary['mode_defended']}, "
                     f"{summary['trials_defended']} trials; 95 % upper bound "
                     f"{_rate(summary['success_upper_95_defended'])})")
    cost = result.get("defense_throughput_cost")
    if cost:
        lines += ["", f"throughput cost ({cost['source']}):", "",
                  "| defence | throughput (req/h) | cost | hit rate | steps saved |", "|---|---|---|---|---|"]
        for name, row in cost["by_defence"].items():
            lines.append(f"| {name} | {row['throughput_rph']:.2f} | {row['cost']:.1%} | {row['hit_rate']:.1%} | "
                         f"{row['steps_saved_frac']:.1%} |")
    return "\n".join(lines)
