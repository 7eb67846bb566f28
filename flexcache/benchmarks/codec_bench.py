"""`flexcache bench codec`: compression ratio, achieved error and speed of the latent codec.

Latent sets, each reported on its own (never averaged together):

* ``wan-random``: trajectories of the tiny random-weight WanPipeline at a
  realistic latent shape (16 x 21 x 60 x 104 by default), captured at every
  checkpoint step, with the seeded Philox noise FlexCache draws and the
  scheduler's sigma_K.
* ``correlated-proxy``: flow-matching latents x_K = (1 - sigma) x0 + sigma eps
  where x0 is a synthetic stand-in for a VAE latent (assumptions in
  `PROXY_ASSUMPTIONS`).
* ``toy-world``: trajectories of the trained toy-world model (8 clips of
  3 x 8 x 16 x 16 pixels, stacked on the channel axis), the only set whose
  content is a real model's output.

For every set: one row per checkpoint (default codec) and ablation rows that
add one stage at a time (quantization only; + seed-noise residual; + temporal
delta; + lossless stage), each as total raw bytes / total stored bytes.
"""

from __future__ import annotations

import dataclasses
import math
import platform
import time
from collections.abc import Callable, Iterable
from typing import Any

import torch

from flexcache.codec import QuantizedCodec, describe_blob
from flexcache.core import CodecConfig
from flexcache.engine import checkpoint_steps
from flexcache.kernels import seeded_noise

PROXY_ASSUMPTIONS = {
    "x0": "Gaussian random field, unit variance before per-channel scaling",
    "spatial_correlation": "separable Gaussian smoothing, std 2 latent pixels in H and W",
    "temporal_correlation": "Gaussian smoothing, std 1.5 latent frames",
    "per_channel_stats": "mean ~ U(-0.5, 0.5), std ~ U(0.5, 1.5), one draw per channel "
                         "(Wan's VAE normalises latents per channel to roughly zero mean, unit std)",
    "noising": "flow matching: x_K = (1 - sigma_K) x0 + sigma_K eps, eps the seeded Philox noise",
    "sigmas": "FlowMatchEulerDiscreteScheduler(shift=7.0) at the checkpoint steps",
}


def ablation_configs(base: CodecConfig) -> list[tuple[str, CodecConfig]]:
    """One stage added at a time, then the shipped default."""
    quant_only = dataclasses.replace(base, seed_residual=False, temporal_delta=False, lossless="none")
    residual = dataclasses.replace(quant_only, seed_residual=True)
    delta = dataclasses.replace(residual, temporal_delta=True)
    full = dataclasses.replace(delta, lossless=base.lossless)
    return [
        ("quantization only", quant_only),
        ("+ seed-noise residual", residual),
        ("+ temporal delta", delta),
        (f"+ lossless stage ({base.lossless})", full),
        ("default config", base),
    ]


def _gaussian_kernel(std: float) -> torch.Tensor:
    radius = max(1, int(3 * std))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (x / std) ** 2)
    return kernel / kernel.sum()


def _smooth(field: torch.Tensor, dim: int, std: float) -> torch.Tensor:
    kernel = _gaussian_kernel(std)
    moved = field.movedim(dim, -1)
    shape = moved.shape
    flat = moved.reshape(-1, 1, shape[-1])
    out = torch.nn.functional.conv1d(flat, kernel.view(1, 1, -1), padding=kernel.numel() // 2)
    return out.reshape(shape).movedim(-1, dim)


def correlated_proxy(shape: tuple[int, ...], num_steps: int, seed: int) -> list[tuple[int, float, torch.Tensor]]:
    """(step, sigma, x_K) at each checkpoint for the proxy set; see `PROXY_ASSUMPTIONS`."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    generator = torch.Generator().manual_seed(seed)
    field = torch.randn(shape, generator=generator)
    for dim, std in ((1, 1.5), (2, 2.0), (3, 2.0)):
        field = _smooth(field, dim, std)
    field = field / field.std()
    channels = shape[0]
    mean = torch.rand(channels, generator=generator) - 0.5
    std = torch.rand(channels, generator=generator) + 0.5
    x0 = field * std.view(-1, 1, 1, 1) + mean.view(-1, 1, 1, 1)
    eps = seeded_noise(shape, seed)
    scheduler = FlowMatchEulerDiscreteScheduler(shift=7.0)
    scheduler.set_timesteps(num_steps)
    rows = []
    for step in checkpoint_steps(num_steps, (0.1, 0.2, 0.3, 0.4, 0.5)):
        sigma = float(scheduler.sigmas[step])
        rows.append((step, sigma, (1 - sigma) * x0 + sigma * eps))
    return rows


def wan_random_trajectory(shape: tuple[int, ...], num_steps: int, seed: int,
                          progress: Callable[[str], None] | None = None) -> list[tuple[int, float, torch.Tensor]]:
    """(step, sigma, x_K) at each checkpoint of one tiny random-weight Wan run at `shape` (C, T, H, W)."""
    from flexcache.integrations.tiny import tiny_prompt_embeds, tiny_wan_pipeline

    channels, frames, height, width = shape
    if channels != 16:
        raise ValueError("the tiny Wan pipeline has 16 latent channels")
    pipe = tiny_wan_pipeline(seed=0)
    pipe.set_progress_bar_config(disable=True)
    steps = set(checkpoint_steps(num_steps, (0.1, 0.2, 0.3, 0.4, 0.5)))
    captured: list[tuple[int, float, torch.Tensor]] = []

    def capture(p, i, t, kwargs):
        if progress is not None:
            progress(f"wan-random: step {i + 1}/{num_steps}")
        if i + 1 in steps:
            captured.append((i + 1, float(p.scheduler.sigmas[i + 1]), kwargs["latents"][0].clone()))
        return kwargs

    prompt = "a red fox running through fresh snow in a pine forest"
    with torch.inference_mode():
        pipe(prompt_embeds=tiny_prompt_embeds(prompt), latents=seeded_noise(shape, seed).unsqueeze(0),
             height=height * 8, width=width * 8, num_frames=(frames - 1) * 4 + 1, num_inference_steps=num_steps,
             guidance_scale=1.0, output_type="latent", callback_on_step_end=capture)
        # Stop after the last checkpoint would need pipeline changes; the tail is cheap relative to the set.
    return captured


def toy_world_trajectories(num_steps: int, seed: int, clips: int = 8) -> list[tuple[int, float, torch.Tensor]]:
    """(step, sigma, x_K) at each checkpoint of `clips` runs of the trained toy-world model (3 x 8 x 16 x 16).

    Each run's noise is seeded with `seed + i`; `evaluate_set` codes every latent with `seed`, so the
    runs here are stacked on the channel axis as one (3 * clips, 8, 16, 16) latent per checkpoint, drawn
    from one seeded noise tensor.
    """
    import random

    from flexcache.toyworld.cases import request_for
    from flexcache.toyworld.model import PromptEncoder, sample, toyworld_pipeline
    from flexcache.toyworld.world import all_specs

    pipe = toyworld_pipeline()
    pipe.set_progress_bar_config(disable=True)
    rng = random.Random(seed)
    prompts = [request_for(spec, rng).prompt for spec in rng.sample(all_specs(), clips)]
    noise = seeded_noise((3 * clips, 8, 16, 16), seed).view(clips, 3, 8, 16, 16)
    _, trajectory = sample(pipe, PromptEncoder()(prompts), noise, steps=num_steps, capture=True)
    sigmas = pipe.scheduler.sigmas
    steps = checkpoint_steps(num_steps, (0.1, 0.2, 0.3, 0.4, 0.5))
    return [(k, float(sigmas[k]), trajectory[k].reshape(3 * clips, 8, 16, 16).clone()) for k in steps]


def _measure(codec: QuantizedCodec, latent: torch.Tensor, seed: int, sigma: float) -> dict[str, Any]:
    started = time.perf_counter()
    blob = codec.encode(latent, seed=seed, sigma=sigma)
    encode_s = time.perf_counter() - started
    started = time.perf_counter()
    decoded = codec.decode(blob, device=latent.device)
    decode_s = time.perf_counter() - started
    info = describe_blob(blob)
    error = decoded.double() - latent.double()
    rms = float(torch.sqrt(torch.mean(error**2)))
    return {
        "stored_bytes": len(blob),
        "codec": info["codec"],
        "bits": info.get("bits"),
        "noise_scale_c": info.get("noise_scale"),
        "rms_error": rms,
        "rms_error_over_sigma": rms / sigma if sigma > 0 else None,
        "relative_l2": float(error.norm() / latent.double().norm()),
        "recorded_rms_error": info.get("achieved_rms"),
        "encode_s": encode_s,
        "decode_s": decode_s,
    }


def evaluate_set(name: str, latents: Iterable[tuple[int, float, torch.Tensor]], seed: int,
                 config: CodecConfig, num_steps: int) -> dict[str, Any]:
    latents = list(latents)
    rows = []
    default = QuantizedCodec(config)
    for step, sigma, latent in latents:
        numel = latent.numel()
        row = {"step": step, "of_steps": num_steps, "sigma": sigma, **_measure(default, latent, seed, sigma)}
        row["ratio_vs_fp32"] = numel * 4 / row["stored_bytes"]
        row["ratio_vs_bf16"] = numel * 2 / row["stored_bytes"]
        row["throughput_gb_s_encode"] = numel * 4 / row["encode_s"] / 1e9
        row["throughput_gb_s_decode"] = numel * 4 / row["decode_s"] / 1e9
        rows.append(row)
    ablation = []
    for label, ablation_config in ablation_configs(config):
        codec = QuantizedCodec(ablation_config)
        stored = 0
        worst = 0.0
        for _, sigma, latent in latents:
            measured = _measure(codec, latent, seed, sigma)
            stored += measured["stored_bytes"]
            worst = max(worst, measured["rms_error_over_sigma"] or 0.0)
        raw = sum(latent.numel() for _, _, latent in latents) * 4
        ablation.append({"stages": label, "ratio_vs_fp32": raw / stored, "ratio_vs_bf16": raw / 2 / stored,
                         "worst_rms_error_over_sigma": worst,
                         "config": {k: v for k, v in dataclasses.asdict(ablation_config).items()
                                    if k in ("seed_residual", "temporal_delta", "lossless")}})
    raw_total = sum(latent.numel() for _, _, latent in latents) * 4
    return {
        "set": name,
        "shape": list(latents[0][2].shape) if latents else None,
        "checkpoints": rows,
        "ratio_vs_fp32_all_checkpoints": raw_total / sum(r["stored_bytes"] for r in rows) if rows else None,
        "ablation": ablation,
    }


def run_codec_bench(*, shape: tuple[int, ...] = (16, 21, 60, 104), num_steps: int = 10, seed: int = 1234,
                    config: CodecConfig | None = None, include_wan: bool = True,
                    progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    config = config or CodecConfig()
    say = progress or (lambda message: None)
    sets = []
    say("correlated-proxy: building latents")
    proxy = correlated_proxy(shape, num_steps, seed)
    say("correlated-proxy: encoding")
    sets.append({**evaluate_set("correlated-proxy", proxy, seed, config, num_steps), "assumptions": PROXY_ASSUMPTIONS})
    if include_wan:
        trajectory = wan_random_trajectory(shape, num_steps, seed, progress=say)
        say("wan-random: encoding")
        sets.append(evaluate_set("wan-random", trajectory, seed, config, num_steps))
    else:
        sets.append({"set": "wan-random", "status": "skipped (--no-wan)"})
    say("toy-world: trajectories of the trained model")
    sets.append(evaluate_set("toy-world", toy_world_trajectories(num_steps, seed), seed, config, num_steps))
    return {
        "benchmark": "codec",
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu ({platform.processor() or platform.machine()})",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "config": dataclasses.asdict(config),
        "sets": sets,
    }


def format_table(result: dict[str, Any]) -> str:
    lines = [f"codec benchmark on {result['device']} (torch {result['torch']}, {result['threads']} threads)"]
    for entry in result["sets"]:
        if "status" in entry:
            lines.append(f"\n[{entry['set']}] {entry['status']}")
            continue
        lines.append(f"\n[{entry['set']}] latent {'x'.join(map(str, entry['shape']))}, default codec")
        lines.append(f"{'K/N':>6} {'sigma':>6} {'bits':>4} {'x fp32':>7} {'x bf16':>7} {'rms/sigma':>9} "
                     f"{'relL2':>7} {'enc s':>6} {'dec s':>6}")
        for row in entry["checkpoints"]:
            ratio_sigma = row["rms_error_over_sigma"]
            lines.append(
                f"{row['step']:>3}/{row['of_steps']:<2} {row['sigma']:>6.3f} {row['bits'] or '-':>4} "
                f"{row['ratio_vs_fp32']:>7.2f} {row['ratio_vs_bf16']:>7.2f} "
                f"{(ratio_sigma if ratio_sigma is not None else math.nan):>9.4f} {row['relative_l2']:>7.4f} "
                f"{row['encode_s']:>6.2f} {row['decode_s']:>6.2f}"
            )
        lines.append(f"all checkpoints: {entry['ratio_vs_fp32_all_checkpoints']:.2f}x vs fp32")
        lines.append("ablation (all checkpoints of this set):")
        for row in entry["ablation"]:
            lines.append(f"  {row['stages']:<28} {row['ratio_vs_fp32']:>6.2f}x fp32 {row['ratio_vs_bf16']:>6.2f}x bf16 "
                         f" worst rms/sigma {row['worst_rms_error_over_sigma']:.4f}")
    return "\n".join(lines)
