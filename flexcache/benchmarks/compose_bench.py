"""`flexcache bench compose`: in-request caches alone and with FlexCache, on the toy world.

Each in-request method (diffusers' FirstBlockCache, MagCache, TaylorSeer,
PyramidAttentionBroadcast; cache-dit's DBCache when it is installed) at a few operating points runs on the toy-world
`WanPipeline` (4 blocks, 20 steps, classifier-free guidance: two transformer
passes a step):

* **alone**: each target request from noise, the method on, no FlexCache;
* **with FlexCache**: the source request runs through an empty cache (a
  miss: the "fresh prompts" row), then the target through that cache, which
  resumes it where the planner decides (default config), the method on.

Targets are held-out attribute combinations; the pair of each reuse case of
the quality bench (`toyworld.cases`) gives the source. Block evaluations are
counted, not timed: a block's feed-forward runs once per evaluation, and is
not run when the method skips the block (PAB skips attention only: its
savings show in attention evaluations). Adherence is the toy world's pixel
reader; "uncached" is method "none" alone. The operating point of a method
is its most saving setting whose adherence, with FlexCache over all cases,
stays >= 98 % of uncached.
"""

from __future__ import annotations

import platform
import random
import time
from collections.abc import Callable
from typing import Any

import torch

from flexcache.toyworld.cases import CASES, related_request, request_for
from flexcache.toyworld.model import (
    DEFAULT_GUIDANCE,
    DEFAULT_STEPS,
    MODEL_ID,
    WEIGHTS,
    PromptEncoder,
    initial_noise,
    pipeline_kwargs,
    toyworld_pipeline,
)
from flexcache.toyworld.reader import adherence
from flexcache.toyworld.world import held_out_specs

METHODS = ("none", "fbc", "magcache", "taylorseer", "pab", "cachedit")
# Operating points per method: the knob each exposes, from careful to aggressive.
SETTINGS: dict[str, tuple[float, ...]] = {
    "none": (0.0,),
    "fbc": (0.05, 0.1, 0.2, 0.4),  # residual-change threshold
    "magcache": (0.06, 0.12, 0.24, 0.5),  # accumulated-error threshold
    "taylorseer": (2.0, 3.0, 4.0, 6.0),  # cache interval (steps between full computations)
    "pab": (2.0, 3.0, 4.0),  # attention block skip range
    "cachedit": (0.05, 0.1, 0.2, 0.4),  # cache-dit DBCache (F1B0) residual-diff threshold
}
ADHERENCE_FLOOR = 0.98  # of uncached


def mag_ratios(pipe, encoder: PromptEncoder, prompts: list[str], steps: int, seed: int) -> list[float]:
    """MagCache's per-step magnitude ratios for this model, measured as its calibration mode measures them.

    mean over tokens of |residual_t| / |residual_t-1|, where the residual is
    the block stack's output minus its input, on the conditional pass,
    averaged over `prompts`.
    """
    blocks = pipe.transformer.blocks
    captured: dict[str, list[torch.Tensor]] = {"in": [], "out": []}
    handles = [blocks[0].register_forward_pre_hook(lambda _m, args, kwargs: captured["in"].append(
                   (kwargs.get("hidden_states") if "hidden_states" in kwargs else args[0]).detach()),
                   with_kwargs=True),
               blocks[-1].register_forward_hook(lambda _m, _a, out: captured["out"].append(
                   (out[0] if isinstance(out, tuple) else out).detach()))]
    sums = [0.0] * steps
    try:
        for index, prompt in enumerate(prompts):
            captured["in"].clear()
            captured["out"].clear()
            with torch.inference_mode():
                pipe(latents=initial_noise([seed + index]),
                     **pipeline_kwargs(encoder([prompt]), steps=steps, guidance=DEFAULT_GUIDANCE))
            passes = len(captured["out"]) // steps  # conditional first, then unconditional
            residuals = [captured["out"][i * passes] - captured["in"][i * passes] for i in range(steps)]
            for i in range(1, steps):
                ratio = torch.linalg.norm(residuals[i].float(), dim=-1) / (
                    torch.linalg.norm(residuals[i - 1].float(), dim=-1) + 1e-8)
                sums[i] += float(ratio.mean())
    finally:
        for handle in handles:
            handle.remove()
    return [1.0] + [value / len(prompts) for value in sums[1:]]


def _config(method: str, setting: float, pipe, ratios: list[float], steps: int) -> Any:
    from diffusers import (
        FirstBlockCacheConfig,
        MagCacheConfig,
        PyramidAttentionBroadcastConfig,
        TaylorSeerCacheConfig,
    )

    if method == "fbc":
        return FirstBlockCacheConfig(threshold=setting)
    if method == "magcache":
        return MagCacheConfig(threshold=setting, max_skip_steps=3, retention_ratio=0.2, num_inference_steps=steps,
                              mag_ratios=ratios)
    if method == "taylorseer":  # whole blocks: its default patterns hook nothing on Wan (README)
        return TaylorSeerCacheConfig(cache_interval=int(setting), disable_cache_before_step=3, max_order=1,
                                     taylor_factors_dtype=torch.float32, cache_identifiers=[r"blocks\.\d+"])
    if method == "pab":
        return PyramidAttentionBroadcastConfig(spatial_attention_block_skip_range=int(setting),
                                               spatial_attention_timestep_skip_range=(100, 800),
                                               current_timestep_callback=lambda: pipe.current_timestep)
    if method == "cachedit":  # the toy world's CFG runs two transformer passes a step
        from cache_dit import DBCacheConfig

        return DBCacheConfig(Fn_compute_blocks=1, Bn_compute_blocks=0, residual_diff_threshold=setting,
                             max_warmup_steps=3, enable_separate_cfg=True, num_inference_steps=steps)
    raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")


def _enable(pipe, method: str, config: Any) -> None:
    if method == "cachedit":  # on the transformer alone: cache-dit leaves the pipeline's class unpatched
        import cache_dit

        cache_dit.enable_cache(pipe.transformer, cache_config=config)
    else:
        pipe.transformer.enable_cache(config)


def _disable(pipe, method: str) -> None:
    if method == "cachedit":
        import cache_dit

        cache_dit.disable_cache(pipe.transformer)
    else:
        pipe.transformer.disable_cache()


class EvaluationCounter:
    """Counts block evaluations (each block's feed-forward) and attention evaluations (self-attention queries)."""

    def __init__(self, transformer) -> None:
        self.blocks = 0
        self.attention = 0
        for block in transformer.blocks:
            block.ffn.register_forward_hook(self._block)
            block.attn1.to_q.register_forward_hook(self._attention)

    def _block(self, *_: Any) -> None:
        self.blocks += 1

    def _attention(self, *_: Any) -> None:
        self.attention += 1

    def take(self) -> tuple[int, int]:
        counts = (self.blocks, self.attention)
        self.blocks = self.attention = 0
        return counts


def run_compose_bench(*, pairs: int = 3, steps: int = DEFAULT_STEPS, methods: tuple[str, ...] = METHODS,
                      cases: tuple[str, ...] = CASES, weights=WEIGHTS, seed: int = 0,
                      progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    from flexcache import CacheConfig, FlexCache
    from flexcache.core import EmbedderConfig
    from flexcache.engine import build_embedder
    from flexcache.integrations.diffusers import (
        disable_flexcache,
        enable_flexcache,
        last_call_report,
    )

    say = progress or (lambda message: None)
    started = time.perf_counter()
    pipe = toyworld_pipeline(weights)
    pipe.set_progress_bar_config(disable=True)
    encoder = PromptEncoder()
    embedder = build_embedder(EmbedderConfig(device="cpu"))  # the default embedder, as a cache has it
    pool = held_out_specs()
    rng = random.Random(seed)
    say("calibrating MagCache's ratios")
    ratios = mag_ratios(pipe, encoder, [request_for(spec, rng).prompt for spec in rng.sample(pool, 4)], steps, seed)
    counter = EvaluationCounter(pipe.transformer)  # after the calibration runs
    samples = {}
    for case_index, case in enumerate(cases):
        case_rng = random.Random(seed * 7919 + case_index)
        targets = [request_for(spec, case_rng) for spec in case_rng.sample(pool, pairs)]
        samples[case] = [(target, related_request(target, case, case_rng)) for target in targets]

    def generate(request, run_seed: int, *, cached: bool = True) -> tuple[torch.Tensor, Any]:
        kwargs = pipeline_kwargs(encoder([request.prompt]), steps=steps, guidance=DEFAULT_GUIDANCE)
        if cached:
            # The bench seeds runs for repeatability, not as a user's choice: any entry may serve them.
            kwargs.update(prompt=request.prompt, negative_prompt="", generator=torch.Generator().manual_seed(run_seed),
                          flexcache_any_seed=True)
        else:  # the same initial noise a miss draws from the seed
            kwargs.update(latents=initial_noise([run_seed]), flexcache_enabled=False)
        with torch.inference_mode():
            clip = pipe(**kwargs).frames[0].clamp(-1, 1)
        return clip, last_call_report(pipe)

    rows: list[dict[str, Any]] = []
    config = CacheConfig.load()
    for method in methods:
        for setting in SETTINGS[method]:
            if method != "none":
                _enable(pipe, method, _config(method, setting, pipe, ratios, steps))
            for case in cases:
                alone, fresh, resumed = _tally(), _tally(), _tally()
                for index, (target, source) in enumerate(samples[case]):
                    run_seed = seed * 100_003 + index
                    cache = FlexCache(config, embedder=embedder)
                    enable_flexcache(pipe, cache, model_id=MODEL_ID)
                    clip, _ = generate(target, run_seed, cached=False)
                    _add(alone, counter.take(), adherence(clip, target.spec), 0)
                    clip, report = generate(source, run_seed)
                    _add(fresh, counter.take(), adherence(clip, source.spec), report.skip_steps)
                    clip, report = generate(target, run_seed)
                    _add(resumed, counter.take(), adherence(clip, target.spec), report.skip_steps)
                    disable_flexcache(pipe)
                    cache.close()
                for mode, tally in (("alone", alone), ("fresh-prompt miss", fresh), ("with flexcache", resumed)):
                    rows.append({"method": method, "setting": setting, "case": case, "mode": mode,
                                 **_means(tally)})
                say(f"{method} {setting:g} {case}: adherence alone {rows[-3]['adherence']:.3f}, with flexcache "
                    f"{rows[-1]['adherence']:.3f}, steps skipped {rows[-1]['steps_skipped']:.1f}")
            if method != "none":
                _disable(pipe, method)
    result = {
        "benchmark": "compose",
        "rows": rows,
        "summary": summarize(rows, steps),
        "mag_ratios": ratios,
        "settings": {"model_id": MODEL_ID, "steps": steps, "guidance": DEFAULT_GUIDANCE, "pairs": pairs,
                     "cases": list(cases), "methods": list(methods), "seed": seed,
                     "operating_points": {m: list(SETTINGS[m]) for m in methods},
                     "adherence_floor": ADHERENCE_FLOOR},
        "machine": f"{platform.machine()} {platform.processor() or platform.system()}, "
                   f"{torch.get_num_threads()} threads",
        "seconds": time.perf_counter() - started,
    }
    return result


def _tally() -> dict[str, list[float]]:
    return {"blocks": [], "attention": [], "adherence": [], "skipped": []}


def _add(tally: dict[str, list[float]], counts: tuple[int, int], score: float, skipped: int) -> None:
    tally["blocks"].append(counts[0])
    tally["attention"].append(counts[1])
    tally["adherence"].append(score)
    tally["skipped"].append(skipped)


def _means(tally: dict[str, list[float]]) -> dict[str, float]:
    def mean(values: list[float]) -> float:
        return sum(values) / len(values)

    return {"block_evaluations": mean(tally["blocks"]), "attention_evaluations": mean(tally["attention"]),
            "adherence": mean(tally["adherence"]), "steps_skipped": mean(tally["skipped"]),
            "requests": len(tally["adherence"])}


def summarize(rows: list[dict[str, Any]], steps: int) -> dict[str, Any]:
    """Per method and setting, over all cases: evaluations saved against uncached, adherence against uncached."""
    uncached = [r for r in rows if r["method"] == "none" and r["mode"] == "alone"]
    if not uncached:
        return {}
    base_blocks = sum(r["block_evaluations"] for r in uncached) / len(uncached)
    base_attention = sum(r["attention_evaluations"] for r in uncached) / len(uncached)
    base_adherence = sum(r["adherence"] for r in uncached) / len(uncached)
    points: list[dict[str, Any]] = []
    for method in dict.fromkeys(r["method"] for r in rows):
        for setting in dict.fromkeys(r["setting"] for r in rows if r["method"] == method):
            for mode in ("alone", "fresh-prompt miss", "with flexcache"):
                chosen = [r for r in rows if r["method"] == method and r["setting"] == setting and r["mode"] == mode]
                if not chosen:
                    continue
                blocks = sum(r["block_evaluations"] for r in chosen) / len(chosen)
                attention = sum(r["attention_evaluations"] for r in chosen) / len(chosen)
                score = sum(r["adherence"] for r in chosen) / len(chosen)
                steps_run = sum(steps - r["steps_skipped"] for r in chosen) / len(chosen)
                points.append({"method": method, "setting": setting, "mode": mode,
                               # compute kept per step the run ran, against an uncached step
                               "block_fraction_per_step_run": blocks / (base_blocks / steps * steps_run),
                               "block_evaluations_saved": 1 - blocks / base_blocks,
                               "attention_evaluations_saved": 1 - attention / base_attention,
                               "speedup_by_block_evaluations": base_blocks / blocks if blocks else None,
                               "steps_skipped": sum(r["steps_skipped"] for r in chosen) / len(chosen),
                               "adherence": score, "adherence_vs_uncached": score / base_adherence})
    best: dict[str, Any] = {}
    for method in dict.fromkeys(p["method"] for p in points):
        for mode in ("alone", "with flexcache"):
            fine = [p for p in points if p["method"] == method and p["mode"] == mode
                    and p["adherence_vs_uncached"] >= ADHERENCE_FLOOR]
            key = f"{method} {mode}"
            best[key] = max(fine, key=lambda p: (p["block_evaluations_saved"], p["attention_evaluations_saved"]),
                            default=None)
    return {"uncached": {"block_evaluations": base_blocks, "attention_evaluations": base_attention,
                         "adherence": base_adherence, "steps": steps},
            "points": points, "operating_points": best}


def format_compose_table(result: dict[str, Any]) -> str:
    summary = result["summary"]
    base = summary["uncached"]
    lines = [f"toy world, {result['settings']['steps']} steps, {result['settings']['pairs']} pairs per case, "
             f"{len(result['settings']['cases'])} cases; uncached: {base['block_evaluations']:.0f} block "
             f"evaluations, adherence {base['adherence']:.3f}", "",
             "| method | setting | mode | block evals saved | attention evals saved | x by block evals | "
             "steps skipped | adherence (vs uncached) |", "|---|---|---|---|---|---|---|---|"]
    for p in summary["points"]:
        speed = "-" if p["speedup_by_block_evaluations"] is None else f"{p['speedup_by_block_evaluations']:.2f}"
        lines.append(f"| {p['method']} | {p['setting']:g} | {p['mode']} | {p['block_evaluations_saved']:.1%} | "
                     f"{p['attention_evaluations_saved']:.1%} | {speed} | {p['steps_skipped']:.1f} | "
                     f"{p['adherence']:.3f} ({p['adherence_vs_uncached']:.1%}) |")
    lines += ["", f"Operating points (adherence >= {ADHERENCE_FLOOR:.0%} of uncached, most block evaluations saved):"]
    for key, point in summary["operating_points"].items():
        lines.append(f"- {key}: " + ("none qualifies" if point is None else
                                     f"setting {point['setting']:g}, {point['block_evaluations_saved']:.1%} block "
                                     f"evaluations saved, adherence {point['adherence_vs_uncached']:.1%}"))
    return "\n".join(lines)
