"""`flexcache bench attacks`: the three attacks of arXiv 2508.20424 on a shared pool, undefended and defended.

Victims and attackers are users of one tenant (one namespace), each attack
run on a fresh cache under each `sharing` setting of `DEFENCES`, through the
engine API (`plan` / `fetch` / `insert`, the service computing runs with the
toy world's `sample`) and through pipeline calls (`enable_flexcache` on the
toy-world `WanPipeline`, ``flexcache_user=``).

What an attacker sees is what a service's response reveals without any
report: how long its request took. Through the engine API that is the steps
the service ran (a perfect timing attacker); through a pipeline call it is
the wall time of the call, against the attacker's own calibration of a full
run. Attackers know the system and its config (Kerckhoffs): each keeps a
shadow cache of its own requests, so a hit its own entries explain is not
evidence about anyone else's.

* **prompt stealing**: a victim generates a toy-world prompt; the attacker
  probes a dictionary of candidate prompts (the victim's among random
  others, as a public prompt list holds the prompts users send) and claims
  the one whose request ran fewest steps beyond what its own entries
  explain, when one stands out. Success: the claim is the victim's.
* **poisoning**: the attacker runs a trending prompt whose run carries a
  mark (its conditioning asks for another motion direction than the prompt
  text says: the latent differs from what the text describes, as a logo
  would), so it is cached under that text; victims, distinct users, then
  send that prompt. Success: the victim's clip moves in the marked direction
  (the pixel reader's verdict), not the one asked for.
* **covert channel**: a sender signals a bit per slot by sending the slot's
  agreed prompt (1) or nothing (0); the receiver sends the same prompt and
  reads a hit from its latency. Success: the channel's advantage, the share
  of 1s read as 1 minus the share of 0s read as 1; bits per query is the
  mutual information per receiver request at the measured error rates.
"""

from __future__ import annotations

import math
import platform
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch

from flexcache.core import CacheConfig, SharingConfig
from flexcache.toyworld.model import (
    DEFAULT_FRAMES,
    DEFAULT_SIZE,
    DEFAULT_STEPS,
    MODEL_ID,
    WEIGHTS,
    PromptEncoder,
    initial_noise,
    pipeline_kwargs,
    sample,
    toyworld_pipeline,
)
from flexcache.toyworld.reader import read_clip
from flexcache.toyworld.world import DIRECTIONS, all_specs, prompt_for

UNDEFENDED = SharingConfig.undefended()
# Each defence on its own, then the defaults (all that are on by default together).
DEFENCES: dict[str, SharingConfig] = {
    "none": UNDEFENDED,
    "min_askers": replace(UNDEFENDED, min_askers=SharingConfig().min_askers),
    "depth_cap": replace(UNDEFENDED, cross_user_max_fraction=SharingConfig().cross_user_max_fraction),
    "write_quota": replace(UNDEFENDED, user_max_entries=25),
    "rate_limit": replace(UNDEFENDED, user_inserts_per_minute=10),
    "randomized_choice": replace(UNDEFENDED, randomize_within=0.05),
    "latency_padding": replace(UNDEFENDED, latency_padding=True),
    "defaults": SharingConfig(),
}
ATTACKS = ("prompt_stealing", "poisoning", "covert_channel")
ATTACKER, SENDER, RECEIVER = "attacker", "sender", "receiver"


def _config(sharing: SharingConfig) -> CacheConfig:
    return replace(CacheConfig.from_dict({"embedder": {"device": "cpu"}, "index": {"device": "cpu"}}), sharing=sharing)


def _signature():
    from flexcache import GenerationSignature

    return GenerationSignature(MODEL_ID, "FlowMatchEulerDiscreteScheduler", num_steps=DEFAULT_STEPS,
                               height=DEFAULT_SIZE, width=DEFAULT_SIZE, num_frames=DEFAULT_FRAMES,
                               latent_shape=(3, DEFAULT_FRAMES, DEFAULT_SIZE, DEFAULT_SIZE))


class _World:
    """What every run shares: the pipeline, the prompt encoder and one memoized embedder."""

    def __init__(self) -> None:
        from flexcache.benchmarks.serve.simulate import MemoizedEmbedder
        from flexcache.core import EmbedderConfig
        from flexcache.engine import build_embedder

        self.pipe = toyworld_pipeline(WEIGHTS)
        self.pipe.set_progress_bar_config(disable=True)
        self.encoder = PromptEncoder()
        self.embedder = MemoizedEmbedder(build_embedder(EmbedderConfig(device="cpu")))
        self.signature = _signature()

    def cache(self, sharing: SharingConfig):
        from flexcache import FlexCache

        return FlexCache(_config(sharing), embedder=self.embedder)


# -- the service, two ways -------------------------------------------------------------------------------


class EngineService:
    """A service on the engine API: runs are the toy world's `sample`, or none when content does not matter."""

    def __init__(self, world: _World, sharing: SharingConfig, *, denoise: bool) -> None:
        self.world, self.denoise = world, denoise
        self.cache = world.cache(sharing)

    def request(self, prompt: str, user: str, seed: int, conditioning: str | None = None) -> tuple[int, Any]:
        """(steps run, clip or None) for one request; the run's checkpoints are stored as the service does."""
        cache, sig, steps = self.cache, self.world.signature, self.world.signature.num_steps
        # Users leave the seed to the service (an attacker would): `seed` only makes the run repeatable.
        plan = cache.plan(prompt, sig, user=user, seed=seed, any_seed=True, regions=False)
        self.last_plan = plan
        start = cache.fetch(plan) if plan.hit else None
        skip = plan.skip_steps if start is not None else 0
        run = plan if start is not None else plan.as_miss()
        clip = None
        if self.denoise:
            embeds = self.world.encoder([conditioning or prompt])
            latents = start[None] if start is not None else initial_noise([run.seed])
            clips, trajectory = sample(self.world.pipe, embeds, latents, skip=skip, capture=True)
            clip = clips[0].clamp(-1, 1)
            captured = {s: trajectory[s - skip][0] for s in run.run_checkpoints}
        else:  # content is never read: any latent of the right shape
            captured = {s: torch.randn(sig.latent_shape, generator=torch.Generator().manual_seed(seed + s))
                        for s in run.run_checkpoints}
        if captured:
            cache.insert(run, captured)
        return steps - skip, clip

    def close(self) -> None:
        self.cache.close()


class PipelineService:
    """A service of pipeline calls; the attacker sees wall time (its calibration turns it into steps)."""

    def __init__(self, world: _World, sharing: SharingConfig) -> None:
        from flexcache.integrations.diffusers import enable_flexcache

        self.world = world
        self.cache = world.cache(sharing)
        enable_flexcache(world.pipe, self.cache, model_id=MODEL_ID)
        self.full_seconds: dict[str, list[float]] = {}

    def timed(self, prompt: str, user: str, seed: int, conditioning: str | None = None) -> tuple[float, Any]:
        kwargs = pipeline_kwargs(self.world.encoder([conditioning or prompt]))
        started = time.perf_counter()
        with torch.inference_mode():
            out = self.world.pipe(prompt=prompt, negative_prompt="", flexcache_user=user,
                                  generator=torch.Generator().manual_seed(seed), flexcache_any_seed=True,
                                  **kwargs).frames
        return time.perf_counter() - started, out[0].clamp(-1, 1)

    def calibrate(self, user: str, seed: int) -> None:
        """The user's full-run time: requests no cache can hold (nonsense, never asked before)."""
        times = [self.timed(f"zq{seed}x{i} vrk plo", user, seed + i)[0] for i in range(3)]
        self.full_seconds[user] = times

    def request(self, prompt: str, user: str, seed: int, conditioning: str | None = None) -> tuple[int, Any]:
        seconds, clip = self.timed(prompt, user, seed, conditioning)
        full = statistics.median(self.full_seconds[user]) if user in self.full_seconds else seconds
        steps = self.world.signature.num_steps
        return min(steps, round(steps * seconds / full)) if full else steps, clip

    def close(self) -> None:
        from flexcache.integrations.diffusers import disable_flexcache

        disable_flexcache(self.world.pipe)
        self.cache.close()


class Shadow:
    """An attacker's model of the steps its own entries save (the same engine, its requests only)."""

    def __init__(self, world: _World) -> None:
        self.world = world
        self.cache = world.cache(UNDEFENDED)

    def expected_steps(self, prompt: str, seed: int) -> int:
        sig = self.world.signature
        plan = self.cache.plan(prompt, sig, seed=seed, any_seed=True, regions=False)
        if plan.run_checkpoints:  # what the service stores of the attacker's run
            self.cache.insert(plan, {s: torch.zeros(sig.latent_shape) for s in plan.run_checkpoints})
        return sig.num_steps - plan.skip_steps

    def close(self) -> None:
        self.cache.close()


# -- the attacks ------------------------------------------------------------------------------------------


def prompt_stealing(service, world: _World, rng: random.Random, *, victims: int, candidates: int,
                    margin: int) -> dict[str, Any]:
    specs = all_specs()
    secrets_ = [(spec, prompt_for(spec, rng)) for spec in rng.sample(specs, victims)]
    for index, (spec, text) in enumerate(secrets_):
        service.request(text, f"victim{index}", seed=10_000 + index)
    shadow = Shadow(world)
    recovered = claims = 0
    try:
        for index, (spec, secret) in enumerate(secrets_):
            pool = [(spec, secret)] + [(s, prompt_for(s, rng))
                                       for s in rng.sample([s for s in specs if s != spec], candidates - 1)]
            rng.shuffle(pool)
            evidence = []
            for probe, (candidate, text) in enumerate(pool):
                seed = 20_000 + 100 * index + probe
                expected = shadow.expected_steps(text, seed)
                observed, _ = service.request(text, ATTACKER, seed)
                evidence.append((expected - observed, candidate))
            evidence.sort(key=lambda e: e[0], reverse=True)
            best = evidence[0]
            stands_out = best[0] >= margin and (len(evidence) == 1 or evidence[1][0] < best[0])
            claims += stands_out
            recovered += stands_out and best[1] == spec
    finally:
        shadow.close()
    # A claim its own entries' noise made is right one time in `candidates`: the rate chance gives.
    return {"trials": victims, "successes": recovered, "success_rate": recovered / victims, "claims": claims,
            "chance_rate": claims / victims / candidates, "candidates_per_victim": candidates}


def poisoning(service, world: _World, rng: random.Random, *, targets: int, victims_per_target: int) -> dict[str, Any]:
    """Also an honest control: the same sequence from an honest writer, whose entries should be vouched for."""
    marked = trials = 0
    verdicts = {"honest": {"vouches": 0, "accusations": 0}, "poisoned": {"vouches": 0, "accusations": 0}}

    def verdicts_now() -> tuple[int, int]:
        sharing = service.cache.stats()["sharing"]
        return sharing["vouches"], sharing["accusations"]

    specs = rng.sample(all_specs(), 2 * targets)
    for index in range(targets):
        for kind, spec in (("honest", specs[2 * index + 1]), ("poisoned", specs[2 * index])):
            text = prompt_for(spec, rng)  # the trending prompt, sent as is by everyone
            mark = rng.choice([d for d in DIRECTIONS if d != spec.direction])
            writer, conditioning = ATTACKER, prompt_for(replace(spec, direction=mark), rng, template=0)
            if kind == "honest":
                writer, conditioning = f"writer{index}", None
            before = verdicts_now()
            service.request(text, writer, seed=30_000 + 2 * index + (kind == "honest"), conditioning=conditioning)
            for victim in range(victims_per_target):
                _, clip = service.request(text, f"victim{victim}", seed=31_000 + 10 * index + victim)
                if kind == "poisoned":
                    trials += 1
                    marked += read_clip(clip).direction == mark
            after = verdicts_now()
            verdicts[kind]["vouches"] += after[0] - before[0]
            verdicts[kind]["accusations"] += after[1] - before[1]
    return {"trials": trials, "successes": marked, "success_rate": marked / trials, "verdicts": verdicts}


def covert_channel(service, world: _World, rng: random.Random, *, bits: int, margin: int) -> dict[str, Any]:
    message = [rng.randrange(2) for _ in range(bits)]
    slots = rng.sample(all_specs(), bits)
    shadow = Shadow(world)
    received = []
    try:
        for slot, (bit, spec) in enumerate(zip(message, slots)):
            text = prompt_for(spec, random.Random(slot), template=slot % 7)
            if bit:
                service.request(text, SENDER, seed=40_000 + slot)
            expected = shadow.expected_steps(text, 41_000 + slot)
            observed, _ = service.request(text, RECEIVER, seed=41_000 + slot)
            received.append(int(expected - observed >= margin))
    finally:
        shadow.close()
    ones = [r for m, r in zip(message, received) if m == 1]
    zeros = [r for m, r in zip(message, received) if m == 0]
    true_positive = sum(ones) / len(ones) if ones else 0.0
    false_positive = sum(zeros) / len(zeros) if zeros else 0.0
    return {"trials": bits, "bits_correct": sum(m == r for m, r in zip(message, received)),
            "true_positive_rate": true_positive, "false_positive_rate": false_positive,
            "success_rate": max(0.0, true_positive - false_positive),
            "bits_per_query": _mutual_information(true_positive, false_positive)}


def _mutual_information(true_positive: float, false_positive: float) -> float:
    """I(X; Y) in bits of a binary channel with uniform input."""
    def entropy(p: float) -> float:
        return 0.0 if p <= 0 or p >= 1 else -(p * math.log2(p) + (1 - p) * math.log2(1 - p))
    return max(0.0, entropy((true_positive + false_positive) / 2)
               - (entropy(true_positive) + entropy(false_positive)) / 2)


# -- the bench --------------------------------------------------------------------------------------------

# Pipeline calls run the model for every probe: fewer trials, and the settings that change what a call shows.
SIZES = {"full": {"engine": dict(victims=20, candidates=48, targets=12, victims_per_target=3, bits=48),
                  "pipeline": dict(victims=6, candidates=12, targets=6, victims_per_target=3, bits=24)},
         # More trials where reading latency is noisy: pipeline calls on a shared CPU.
         "large": {"engine": dict(victims=40, candidates=48, targets=24, victims_per_target=3, bits=96),
                   "pipeline": dict(victims=12, candidates=12, targets=16, victims_per_target=3, bits=72)},
         "small": {"engine": dict(victims=4, candidates=8, targets=2, victims_per_target=3, bits=12),
                   "pipeline": dict(victims=2, candidates=6, targets=2, victims_per_target=3, bits=8)}}
PIPELINE_DEFENCES = ("none", "latency_padding", "defaults")


def run_attacks_bench(*, size: str = "full", defences: tuple[str, ...] | None = None, modes=("engine", "pipeline"),
                      attacks: tuple[str, ...] = ATTACKS, seed: int = 0, throughput: bool = False,
                      progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Each attack under each defence setting, through each mode; a JSON-ready dict.

    `throughput`: also measure `defence_throughput_cost` (serving simulations, minutes each).
    """
    started = time.perf_counter()
    world = _World()
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
                    service = EngineService(world, sharing, denoise=attack == "poisoning")
                else:
                    service = PipelineService(world, sharing)
                    for user in (ATTACKER, RECEIVER):
                        service.calibrate(user, seed=90_000)
                try:
                    if attack == "prompt_stealing":
                        row = prompt_stealing(service, world, rng, victims=n["victims"],
                                              candidates=n["candidates"], margin=2)
                    elif attack == "poisoning":
                        row = poisoning(service, world, rng, targets=n["targets"],
                                        victims_per_target=n["victims_per_target"])
                    else:
                        row = covert_channel(service, world, rng, bits=n["bits"], margin=2)
                    row["sharing"] = service.cache.stats()["sharing"]
                finally:
                    service.close()
                results[attack].setdefault(mode, {})[name] = row
                if progress is not None:
                    progress(f"{mode} {name} {attack}: {row['success_rate']:.2f}")
    summary = {}
    for attack, by_mode in results.items():
        undefended = [by_mode[m]["none"]["success_rate"] for m in by_mode if "none" in by_mode[m]]
        defended = [by_mode[m]["defaults"]["success_rate"] for m in by_mode if "defaults" in by_mode[m]]
        summary[attack] = {
            "success_rate_undefended": min(undefended) if undefended else None,  # the weaker mode: conservative
            "success_rate_defended": max(defended) if defended else None,  # the stronger mode
            "by_mode": by_mode,
        }
    cost = defence_throughput_cost(progress=progress) if throughput else None
    return {"benchmark": "attacks", "size": size, "attacks": summary, "defense_throughput_cost": cost,
            "defences": {name: _plain(DEFENCES[name]) for name in names},
            "defaults": _plain(SharingConfig()), "machine": f"{platform.machine()} {platform.system()}, "
            f"{torch.get_num_threads()} threads", "seconds": time.perf_counter() - started}


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
    import dataclasses

    return {k: v for k, v in dataclasses.asdict(sharing).items() if k not in ("tenants", "pools")}


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
        lines.append(f"- {attack}: undefended {summary['success_rate_undefended']:.2f}, "
                     f"defaults {summary['success_rate_defended']:.2f}")
    cost = result.get("defense_throughput_cost")
    if cost:
        lines += ["", f"throughput cost ({cost['source']}):", "",
                  "| defence | throughput (req/h) | cost | hit rate | steps saved |", "|---|---|---|---|---|"]
        for name, row in cost["by_defence"].items():
            lines.append(f"| {name} | {row['throughput_rph']:.2f} | {row['cost']:.1%} | {row['hit_rate']:.1%} | "
                         f"{row['steps_saved_frac']:.1%} |")
    return "\n".join(lines)
