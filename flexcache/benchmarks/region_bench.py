"""Region hits on the toy world: the `decoupled_reuse` part of `flexcache bench quality`.

For each case (`toyworld.cases`) a source request runs in full through the
engine's own mask probe (`integrations.diffusers`: cross-attention on the
object words) and its x_K and object mask are kept at every K. The target
then resumes at K by three methods:

* ``whole``: x_K as it is (NIRVANA's reuse);
* ``renoise``: the regenerated region re-noised to the schedule's level at K,
  on the plain sliced schedule;
* ``restart``: the region starts from noise level 1 on its own catch-up
  schedule, with one timestep per token (`integrations.region_runs`).

The region is what a rule matching the case's shared part regenerates (the
object for a shared background, the background for a shared object), built by
the engine's own `region_start`. The fresh noise comes from another seed than
the source's. ``deepest_safe_fraction`` is the deepest K whose adherence stays
within 2 points of the case's full-step adherence, for the best method. The
reader's object pixels of the source's clip score the model's masks (IoU);
the engine never reads them.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from flexcache.core import PlannerConfig
from flexcache.engine import region_start
from flexcache.integrations.diffusers import (
    ObjectMaskRecorder,
    TokenTimesteps,
    install_probes,
    object_token_weights,
    region_scheduler,
    sliced_scheduler,
    token_grid,
)
from flexcache.toyworld.cases import related_request, request_for
from flexcache.toyworld.model import TEXT_TOKENS, initial_noise, pipeline_kwargs
from flexcache.toyworld.world import ATTRIBUTES, held_out_specs

# case -> the part a region hit regenerates when a rule matches the part the pair shares
PRIMARY_REGION = {"same-background": "object", "same-object": "background", "object-edit": "object",
                  "background-edit": "background", "near-duplicate": "object"}
# what the other rule kind regenerates on pairs it also admits (hard negatives), restart only
SECONDARY_REGION = {"object-edit": "background", "background-edit": "object", "near-duplicate": "background"}
METHODS = ("whole", "renoise", "restart")
REGION_FRACTIONS = (0.2, 0.3, 0.4, 0.5, 0.6)  # K / N measured (4, 6, 8, 10, 12 of 20)
DEFAULT_REGION_SKIPS = (4, 6, 8, 10, 12)


def _adherence(clips: torch.Tensor, specs) -> float:
    from flexcache.toyworld.reader import match_counts

    counts = match_counts(clips.clamp(-1, 1), specs)
    return sum(counts.values()) / (len(ATTRIBUTES) * len(specs))


def _run(pipe, embeds: torch.Tensor, latents: torch.Tensor, *, steps: int, guidance: float, skip: int = 0,
         scheduler=None, timesteps: TokenTimesteps | None = None, recorder: ObjectMaskRecorder | None = None,
         snapshots: tuple[int, ...] = ()) -> tuple[torch.Tensor, dict[int, torch.Tensor], dict[int, torch.Tensor]]:
    trajectory: dict[int, torch.Tensor] = {}
    masks: dict[int, torch.Tensor] = {}
    state = install_probes(pipe.transformer) if recorder is not None else None

    def on_step_end(_pipe, index, _timestep, kwargs):
        done = skip + index + 1
        if recorder is not None:
            recorder.step_done()
            if done in snapshots:
                masks[done] = recorder.masks()
        if done in snapshots:
            trajectory[done] = kwargs["latents"].clone()
        return kwargs

    original = pipe.scheduler
    if scheduler is not None:
        pipe.__dict__["scheduler"] = scheduler
    if state is not None:
        state.recorder = recorder
    if timesteps is not None:
        timesteps.install([pipe.transformer])
    try:
        with torch.inference_mode():
            clips = pipe(latents=latents, callback_on_step_end=on_step_end,
                         **pipeline_kwargs(embeds, steps=steps, guidance=guidance)).frames
    finally:
        pipe.__dict__["scheduler"] = original
        if state is not None:
            state.recorder = None
        if timesteps is not None:
            timesteps.remove()
    return clips.clamp(-1, 1), trajectory, masks


def _iou(masks: torch.Tensor, clips: torch.Tensor, threshold: float) -> float:
    from flexcache.toyworld.reader import object_mask

    truth = torch.stack([object_mask(c) for c in clips]).float().unsqueeze(1)  # (B, 1, T, H, W)
    grid = masks.shape[1:]
    cover = F.adaptive_avg_pool3d(truth, grid).squeeze(1) >= 0.25
    predicted = masks >= threshold
    inter = (predicted & cover).flatten(1).sum(1).float()
    union = (predicted | cover).flatten(1).sum(1).float().clamp(min=1)
    return float((inter / union).mean())


def run_region_bench(pipe, encoder, tokenizer, *, pairs: int = 24, steps: int = 20, guidance: float = 3.0,
                     skips: tuple[int, ...] = DEFAULT_REGION_SKIPS, seed: int = 0,
                     planner: PlannerConfig | None = None, max_adherence_drop: float = 0.02,
                     composed: bool = True, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    say = progress or (lambda message: None)
    planner = planner or PlannerConfig()
    from flexcache.engine import split_prompt

    probe = copy.deepcopy(pipe.scheduler)
    probe.set_timesteps(steps)
    sigmas = [float(s) for s in probe.sigmas]
    pool = held_out_specs()
    out: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []
    iou: dict[str, dict[str, float]] = {}
    for case_index, (case, regenerate) in enumerate(PRIMARY_REGION.items()):
        rng = random.Random(seed * 7919 + 101 + case_index)
        specs = [pool[i] for i in rng.sample(range(len(pool)), min(pairs, len(pool)))]
        specs += [rng.choice(pool) for _ in range(pairs - len(specs))]
        targets = [request_for(spec, rng) for spec in specs]
        sources = [related_request(target, case, rng) for target in targets]
        source_seeds = [seed * 1_000_003 + 50_000 + case_index * 10_007 + i for i in range(pairs)]
        fresh_seeds = [s + 5_000 for s in source_seeds]
        source_embeds = encoder([s.prompt for s in sources])
        target_embeds = encoder([t.prompt for t in targets])
        weights = torch.stack([object_token_weights(tokenizer, s.prompt, split_prompt(s.prompt).object, TEXT_TOKENS)
                               for s in sources])
        noise, fresh = initial_noise(source_seeds), initial_noise(fresh_seeds)
        latent_shape = tuple(noise.shape[1:])
        grid = token_grid(latent_shape, tuple(pipe.transformer.config.patch_size), 1)
        say(f"regions {case}: source runs with the mask probe ({pairs} pairs)")
        recorder = ObjectMaskRecorder(weights, grid)
        source_clips, trajectory, masks = _run(pipe, source_embeds, noise, steps=steps, guidance=guidance,
                                               recorder=recorder, snapshots=tuple(skips))
        full, _, _ = _run(pipe, target_embeds, fresh, steps=steps, guidance=guidance)
        full_adherence = _adherence(full, [t.spec for t in targets])
        iou[case] = {str(k): _iou(masks[k], source_clips, planner.region_threshold) for k in skips}
        results: dict[str, dict[int, float]] = {}
        jobs = [(regenerate, method) for method in METHODS]
        if case in SECONDARY_REGION:
            jobs.append((SECONDARY_REGION[case], "restart"))
        for part, method in jobs:
            label = method if part == regenerate else f"restart-regenerate-{part}"
            results[label] = {}
            for k in skips:
                x = trajectory[k]
                if method == "whole":
                    start = x
                else:
                    scale = 1.0 if method == "restart" else sigmas[k]
                    composed = [region_start(part, x[i], [masks[k][i]], fresh[i] * scale, latent_shape, 1,
                                             threshold=planner.region_threshold, dilation=planner.region_dilation,
                                             object_latent=None, method=method) for i in range(pairs)]
                    start = torch.stack([c.latent for c in composed])
                if method == "restart":
                    clips = _restart(pipe, target_embeds, start, torch.stack([c.region for c in composed]), k=k,
                                     steps=steps, guidance=guidance, planner=planner)
                else:
                    clips, _, _ = _run(pipe, target_embeds, start, steps=steps, guidance=guidance, skip=k,
                                       scheduler=sliced_scheduler(pipe.scheduler, k))
                value = _adherence(clips, [t.spec for t in targets])
                results[label][k] = value
                rows.append({"case": case, "method": label, "skip_steps": k, "skip_frac": k / steps,
                             "adherence": value, "adherence_full_steps": full_adherence, "pairs": pairs})
                say(f"regions {case} {label} K={k}: adherence {value:.3f} (full steps {full_adherence:.3f})")

        out[case] = _summary(results, full_adherence - max_adherence_drop, full_adherence, steps, regenerate,
                             choices=METHODS)
    if composed:
        say("regions composed: object from one entry, background from another")
        out["composed"] = _composed_case(pipe, encoder, tokenizer, pairs=pairs, steps=steps, guidance=guidance,
                                         skips=skips, seed=seed, planner=planner, rows=rows,
                                         max_adherence_drop=max_adherence_drop, say=say)
    return {"decoupled_reuse": out, "region_rows": rows, "mask_iou": iou,
            "region_settings": {"skips": list(skips), "pairs": pairs, "threshold": planner.region_threshold,
                                "dilation": planner.region_dilation, "catch_up": planner.region_catch_up,
                                "max_adherence_drop": max_adherence_drop}}


def _restart(pipe, embeds, starts, regions, *, k, steps, guidance, planner):
    scheduler = region_scheduler(sliced_scheduler(pipe.scheduler, k), pipe.scheduler, num_steps=steps, skip=k,
                                 region=regions, catch_up=planner.region_catch_up)
    timesteps = TokenTimesteps(scheduler, regions, tuple(pipe.transformer.config.patch_size))  # (B, 1, T, H, W)
    clips, _, _ = _run(pipe, embeds, starts, steps=steps, guidance=guidance, skip=k, scheduler=scheduler,
                       timesteps=timesteps)
    return clips


def _composed_case(pipe, encoder, tokenizer, *, pairs, steps, guidance, skips, seed, planner, rows,
                   max_adherence_drop, say) -> dict[str, Any]:
    """Targets whose object matches one cached run and whose background another: composed vs background-only."""
    from flexcache.engine import split_prompt

    rng = random.Random(seed * 7919 + 977)
    pool = held_out_specs()
    targets = [request_for(rng.choice(pool), rng) for _ in range(pairs)]
    object_sources = [related_request(t, "same-object", rng) for t in targets]
    background_sources = [related_request(t, "same-background", rng) for t in targets]
    base = seed * 1_000_003 + 90_000
    fresh = initial_noise([base + 2 * pairs + i for i in range(pairs)])
    target_embeds = encoder([t.prompt for t in targets])
    runs = []
    for offset, sources in ((0, object_sources), (pairs, background_sources)):
        weights = torch.stack([object_token_weights(tokenizer, s.prompt, split_prompt(s.prompt).object, TEXT_TOKENS)
                               for s in sources])
        noise = initial_noise([base + offset + i for i in range(pairs)])
        grid = token_grid(tuple(noise.shape[1:]), tuple(pipe.transformer.config.patch_size), 1)
        _, trajectory, masks = _run(pipe, encoder([s.prompt for s in sources]), noise, steps=steps, guidance=guidance,
                                    recorder=ObjectMaskRecorder(weights, grid), snapshots=tuple(skips))
        runs.append((trajectory, masks))
    full, _, _ = _run(pipe, target_embeds, fresh, steps=steps, guidance=guidance)
    specs = [t.spec for t in targets]
    full_adherence = _adherence(full, specs)
    latent_shape = tuple(fresh.shape[1:])
    results: dict[str, dict[int, float]] = {"composed-restart": {}, "background-only-restart": {}}
    (obj_traj, obj_masks), (bg_traj, bg_masks) = runs
    for k in skips:
        for label in results:
            starts, regions = [], []
            for i in range(pairs):
                if label == "composed-restart":
                    hit = region_start("composed", bg_traj[k][i], [bg_masks[k][i], obj_masks[k][i]], fresh[i],
                                       latent_shape, 1, threshold=planner.region_threshold,
                                       dilation=planner.region_dilation, object_latent=obj_traj[k][i], method="restart")
                else:
                    hit = region_start("object", bg_traj[k][i], [bg_masks[k][i]], fresh[i], latent_shape, 1,
                                       threshold=planner.region_threshold, dilation=planner.region_dilation,
                                       object_latent=None, method="restart")
                starts.append(hit.latent)
                regions.append(hit.region)
            clips = _restart(pipe, target_embeds, torch.stack(starts), torch.stack(regions), k=k, steps=steps,
                             guidance=guidance, planner=planner)
            value = _adherence(clips, specs)
            results[label][k] = value
            rows.append({"case": "composed", "method": label, "skip_steps": k, "skip_frac": k / steps,
                         "adherence": value, "adherence_full_steps": full_adherence, "pairs": pairs})
            say(f"regions composed {label} K={k}: adherence {value:.3f} (full steps {full_adherence:.3f})")
    return _summary(results, full_adherence - max_adherence_drop, full_adherence, steps, "composed",
                    choices=tuple(results))


def deepest_safe(adherence_by_k: dict[int, float], floor: float) -> int:
    """The deepest K from which every shallower measured K also keeps adherence >= `floor` (0: none)."""
    depth = 0
    for k in sorted(adherence_by_k):
        if adherence_by_k[k] < floor:
            break
        depth = k
    return depth


def _summary(results: dict[str, dict[int, float]], floor: float, full_adherence: float, steps: int,
             regenerated: str, *, choices: tuple[str, ...]) -> dict[str, Any]:
    """A case's `decoupled_reuse` entry: the method among `choices` that is safe deepest (then best there)."""
    depths = {label: deepest_safe(by_k, floor) for label, by_k in results.items()}
    best = max(choices, key=lambda m: (depths[m], results[m].get(depths[m], 0.0)))
    return {"deepest_safe_fraction": depths[best] / steps,
            "adherence_at_deepest": results[best][depths[best]] if depths[best] else full_adherence,
            "adherence_full_steps": full_adherence, "method": best, "regenerated": regenerated,
            "deepest_safe_fraction_by_method": {m: d / steps for m, d in depths.items()}}
