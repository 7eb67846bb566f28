"""`flexcache bench solvers`: how far a resumed run lands from the uninterrupted one, per solver, on the toy world.

For each solver (Euler, UniPC, DPM-Solver++; flow sigmas at the toy model's
shift of 1) and each prompt (held-out attribute combinations), one
uninterrupted N-step run captures x_K and the solver state at each K; then
the run resumes from x_K four ways:

* ``restarted``: a fresh solver at K (its history lost; what a cache without
  solver state does);
* ``restored``: the captured solver state restored (`planner.solver_state`);
* ``restarted-coded`` / ``restored-coded``: the same with x_K and the state's
  tensors through the compressing codec at its defaults, each tensor coded alone
  (entries before bundle version 2);
* ``restored-predicted``: the state predictively coded as entries store it now
  (`engine.state_coding`: each tensor predicted from the decoded x_K, the seed
  noise and the tensors before it; only the residual coded, at the same budget).

Each row gives the final latent's relative L2 distance to the uninterrupted
run, the adherence the toy world's reader finds, and the bytes x_K and the
state take coded. Euler has no state: its two rows are the same run.
"""

from __future__ import annotations

import platform
import random
import time
from typing import Any

import torch

from flexcache.codec import build_codec
from flexcache.engine import SolverState, decode_state, encode_bundle, encode_state, split_bundle
from flexcache.integrations.diffusers import (
    capture_solver_state,
    resumed_multistep_scheduler,
    sliced_scheduler,
)
from flexcache.toyworld.model import (
    DEFAULT_STEPS,
    WEIGHTS,
    PromptEncoder,
    initial_noise,
    pipeline_kwargs,
    toyworld_pipeline,
)
from flexcache.toyworld.reader import adherence
from flexcache.toyworld.world import held_out_specs, prompt_for

SOLVERS = ("euler", "unipc", "dpm++")
VARIANTS = ("restarted", "restored", "restarted-coded", "restored-coded", "restored-predicted")
DEFAULT_SKIPS = (4, 8, 12)


def build_scheduler(name: str) -> Any:
    from diffusers import (
        DPMSolverMultistepScheduler,
        FlowMatchEulerDiscreteScheduler,
        UniPCMultistepScheduler,
    )

    if name == "euler":
        return FlowMatchEulerDiscreteScheduler(shift=1.0)
    if name == "unipc":  # Wan's scheduler class, at the toy model's shift
        return UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=1.0,
                                       solver_order=2)
    if name == "dpm++":
        return DPMSolverMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=1.0,
                                           solver_order=2, algorithm_type="dpmsolver++")
    raise ValueError(f"unknown solver {name!r}; choose from {', '.join(SOLVERS)}")


def _run(pipe, embeds, latents, scheduler, steps, callback=None) -> torch.Tensor:
    original = pipe.scheduler
    pipe.__dict__["scheduler"] = scheduler
    try:
        with torch.inference_mode():
            return pipe(latents=latents, callback_on_step_end=callback, **pipeline_kwargs(
                embeds, steps=steps, frames=latents.shape[2], size=latents.shape[-1])).frames
    finally:
        pipe.__dict__["scheduler"] = original


def _coded(codec, state: SolverState, x_k: torch.Tensor, seed: int, sigma: float,
           predicted: bool = False) -> tuple[Any, Any, int, int]:
    """x_K and the state as an entry returns them, and the bytes of each (`predicted`: bundle version 2)."""
    latent_blob = codec.encode(x_k, seed=seed, sigma=sigma)
    x_coded = codec.decode(latent_blob)
    if state is None:
        return x_coded.unsqueeze(0), None, len(latent_blob), 0
    coded = encode_state(codec, state, seed=seed, sigma=sigma, frame_axis=1,
                         latent_blob=latent_blob if predicted else None)
    bundle = encode_bundle(latent_blob, state.solver, state.scalars, coded)
    _, (_, _, read) = split_bundle(bundle)  # through the stored bytes, as a hit reads them
    decoded = SolverState(state.solver, state.scalars, decode_state(codec, read, x_coded), state.noisy)
    return x_coded.unsqueeze(0), decoded, len(latent_blob), len(bundle) - len(latent_blob)


def run_solver_bench(*, prompts: int = 16, steps: int = DEFAULT_STEPS, skips: tuple[int, ...] = DEFAULT_SKIPS,
                     solvers: tuple[str, ...] = SOLVERS, weights=WEIGHTS, seed: int = 0) -> dict[str, Any]:
    started = time.perf_counter()
    pipe = toyworld_pipeline(weights)
    pipe.set_progress_bar_config(disable=True)
    encoder = PromptEncoder()
    codec = build_codec("flexcache")
    rng = random.Random(seed)
    specs = held_out_specs()
    cases = [(spec, prompt_for(spec, rng)) for spec in rng.sample(specs, min(prompts, len(specs)))]
    rows: dict[tuple[str, int, str], dict[str, list[float]]] = {}
    full_adherence: dict[str, list[float]] = {name: [] for name in solvers}
    for solver in solvers:
        for index, (spec, prompt) in enumerate(cases):
            embeds = encoder([prompt])
            noise = initial_noise([seed + index])
            captured: dict[int, tuple[torch.Tensor, SolverState | None, float]] = {}

            def capture(p, i, _t, kwargs, captured=captured):
                if i + 1 in skips:
                    sigma = float(p.scheduler.sigmas[i + 1])
                    captured[i + 1] = (kwargs["latents"].clone(), capture_solver_state(p.scheduler), sigma)
                return kwargs

            reference = _run(pipe, embeds, noise, build_scheduler(solver), steps, capture)
            full_adherence[solver].append(adherence(reference[0].clamp(-1, 1), spec))
            for k in skips:
                x_k, state, sigma = captured[k]
                x_coded, state_coded, latent_bytes, state_bytes = _coded(codec, state, x_k[0], seed + index, sigma)
                _, state_predicted, _, predicted_bytes = _coded(codec, state, x_k[0], seed + index, sigma, True)
                for variant in VARIANTS:
                    if variant == "restored-predicted" and state is None:
                        continue
                    coded = variant.endswith(("coded", "predicted"))
                    use_state = ((state_predicted if variant.endswith("predicted") else state_coded if coded
                                  else state) if variant.startswith("restored") else None)
                    base = build_scheduler(solver)
                    scheduler = (sliced_scheduler(base, k) if state is None
                                 else resumed_multistep_scheduler(base, k, use_state))
                    out = _run(pipe, embeds, x_coded if coded else x_k, scheduler, steps)
                    row = rows.setdefault((solver, k, variant), {"error": [], "adherence": [], "latent_bytes": [],
                                                                 "state_bytes": []})
                    row["error"].append(float((out - reference).norm() / reference.norm()))
                    row["adherence"].append(adherence(out[0].clamp(-1, 1), spec))
                    row["latent_bytes"].append(latent_bytes)
                    row["state_bytes"].append(0 if use_state is None else
                                              predicted_bytes if variant.endswith("predicted") else state_bytes)

    def mean(values: list[float]) -> float:
        return sum(values) / len(values)

    return {
        "benchmark": "solvers",
        "machine": f"{platform.machine()} {platform.processor() or platform.system()}, {torch.get_num_threads()} threads",
        "steps": steps,
        "prompts": len(cases),
        "skips": list(skips),
        "adherence_full_steps": {name: mean(values) for name, values in full_adherence.items()},
        "rows": [{"solver": solver, "skip": k, "variant": variant, "relative_l2_to_uninterrupted": mean(r["error"]),
                  "max_relative_l2": max(r["error"]), "adherence": mean(r["adherence"]),
                  "latent_bytes": mean(r["latent_bytes"]), "state_bytes": mean(r["state_bytes"])}
                 for (solver, k, variant), r in rows.items()],
        "seconds": time.perf_counter() - started,
    }


def format_solver_table(result: dict[str, Any]) -> str:
    lines = [f"toy world, {result['steps']} steps, {result['prompts']} held-out prompts; "
             "full-step adherence: " + ", ".join(f"{k} {v:.3f}" for k, v in result["adherence_full_steps"].items()),
             "", "| solver | K | resume | rel. L2 to uninterrupted (mean / max) | adherence | x_K bytes | state bytes |",
             "|---|---|---|---|---|---|---|"]
    for row in result["rows"]:
        if row["solver"] == "euler" and row["variant"].startswith("restored"):
            continue  # no state: the same run as "restarted"
        lines.append(f"| {row['solver']} | {row['skip']} | {row['variant']} | {row['relative_l2_to_uninterrupted']:.2e}"
                     f" / {row['max_relative_l2']:.2e} | {row['adherence']:.3f} | {row['latent_bytes']:.0f} | "
                     f"{row['state_bytes']:.0f} |")
    return "\n".join(lines)
