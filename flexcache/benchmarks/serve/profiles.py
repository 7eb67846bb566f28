"""Model profiles for the serving benchmark: what one request costs on a GPU, from public figures.

Sources are the rows of `shared/SERVING-FACTS.md` (collected 2026-11; each
names its public origin). Public tables give the *total* time of one
generation, so `seconds_per_step` is total / steps: an upper bound that also
carries the text encoder and the VAE decode, which are therefore 0 here
(`overheads_in_step_time`). Passes per step (classifier-free guidance) are
already inside the measured time; `cfg_passes` is recorded for readers.
"""

from __future__ import annotations

from dataclasses import dataclass

from flexcache.core import ConfigError


@dataclass(frozen=True)
class ModelProfile:
    name: str
    model_id: str
    gpu: str
    resolution: str  # width x height x frames
    steps: int
    seconds_per_step: float
    cfg_passes: int
    latent_shape: tuple[int, ...]  # as the pipeline holds one latent (no batch)
    latent_dtype: str
    source: str
    text_encoder_s: float = 0.0
    vae_decode_s: float = 0.0
    overheads_in_step_time: bool = True
    # The scheduler class the published weights ship: "unipc" and "dpm++" keep a solver state that FlexCache
    # stores with each entry (planner.solver_state); "one-step" solvers keep none.
    solver: str = "one-step"

    @property
    def seconds_full(self) -> float:
        """One uncached generation."""
        return self.text_encoder_s + self.steps * self.seconds_per_step + self.vae_decode_s

    @property
    def latent_bytes(self) -> int:
        size = {"float32": 4, "bfloat16": 2, "float16": 2}[self.latent_dtype]
        count = 1
        for dim in self.latent_shape:
            count *= dim
        return count * size


PROFILES: dict[str, ModelProfile] = {p.name: p for p in (
    ModelProfile("wan2.1-1.3b-480p", "Wan-AI/Wan2.1-T2V-1.3B-Diffusers", "H100", "832x480x81", 50, 95 / 50, 2,
                 (16, 21, 60, 104), "float32",
                 "ML.ENERGY leaderboard v3 (secondary): 95 s on H100; diffusers' WanPipeline keeps latents in float32",
                 solver="unipc"),
    ModelProfile("wan2.1-14b-720p", "Wan-AI/Wan2.1-T2V-14B-Diffusers", "H100", "1280x720x81", 50, 1837.9 / 50, 2,
                 (16, 21, 90, 160), "float32",
                 "Wan2.1 repository README, efficiency table: 1837.9 s on one H100/H800 (with offload)",
                 solver="unipc"),
    ModelProfile("hunyuanvideo-720p", "hunyuanvideo-community/HunyuanVideo", "H100", "1280x720x129", 50,
                 1904.1 / 50, 1, (16, 33, 90, 160), "bfloat16",
                 "xDiT documentation, HunyuanVideo performance page: 1904.1 s on one H100 (guidance embedded)"),
    ModelProfile("cogvideox-5b", "THUDM/CogVideoX-5b", "H100", "720x480x49", 50, 90 / 50, 2,
                 (13, 16, 60, 90), "bfloat16", "CogVideo README: about 90 s on H100 (CFG batched)"),
    ModelProfile("ltx-video", "Lightricks/LTX-Video", "H100", "704x512x121", 40, 9.7 / 40, 2,
                 (128, 16, 16, 22), "bfloat16", "arXiv 2509.19222 Table 4 (secondary): 9.7 s on H100, LTX-Video 0.9.7"),
)}


def get_profile(name: str) -> ModelProfile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ConfigError(f"unknown model profile {name!r}; choose one of {', '.join(PROFILES)}") from None


def measure_profile(pipe, call_kwargs: dict, *, name: str, model_id: str, steps: int, encode=None,
                    decoded_output: str | None = "pt", repeats: int = 3, device: str = "cpu") -> ModelProfile:
    """Time a real diffusers pipeline here: seconds per denoising step, text encoding and decoding.

    `call_kwargs` are what one request passes (prompt embeddings, size,
    guidance); `encode` is the text encoder as a zero-argument callable, timed
    on its own when given. Each figure is the median of `repeats` runs after
    one warm-up call. Step time comes from the gaps between step callbacks;
    decoding is a call with `decoded_output` minus one that stops at the
    latents (None: the pipeline has no decoder worth timing).
    """
    import os
    import platform
    import statistics
    import time

    import torch

    def timed_call(output_type: str) -> tuple[float, list[float], torch.Tensor]:
        marks: list[float] = []

        def on_step(_pipe, _step, _t, kwargs):
            marks.append(time.perf_counter())
            return kwargs

        started = time.perf_counter()
        with torch.inference_mode():
            out = pipe(**call_kwargs, num_inference_steps=steps, output_type=output_type,
                       callback_on_step_end=on_step)
        total = time.perf_counter() - started
        gaps = [b - a for a, b in zip([started] + marks, marks)]
        return total, gaps, out.frames

    timed_call("latent")  # warm-up
    totals, latent_totals, gaps, encodes = [], [], [], []
    latents = None
    for _ in range(repeats):
        total, step_gaps, latents = timed_call("latent")
        latent_totals.append(total)
        gaps += step_gaps[1:]  # the first gap also holds the call's set-up
        if decoded_output is not None:
            totals.append(timed_call(decoded_output)[0])
        if encode is not None:
            started = time.perf_counter()
            encode()
            encodes.append(time.perf_counter() - started)
    latent = latents[0]
    return ModelProfile(
        name, model_id, gpu=f"{device} ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)",
        resolution="x".join(str(call_kwargs.get(k, "?")) for k in ("width", "height", "num_frames")),
        steps=steps, seconds_per_step=statistics.median(gaps),
        cfg_passes=2 if call_kwargs.get("guidance_scale", 1.0) > 1.0 else 1,
        latent_shape=tuple(latent.shape), latent_dtype=str(latent.dtype).removeprefix("torch."),
        source=f"measured here: median of {repeats} calls ({len(gaps)} step gaps)",
        text_encoder_s=statistics.median(encodes) if encodes else 0.0,
        vae_decode_s=max(0.0, statistics.median(totals) - statistics.median(latent_totals)) if totals else 0.0,
        overheads_in_step_time=False)


def measure_toyworld_profile(repeats: int = 3) -> ModelProfile:
    """`--profile measure`: the toy-world pipeline (the only weights shipped) timed on this machine."""
    from flexcache.toyworld.model import (
        DEFAULT_STEPS,
        MODEL_ID,
        WEIGHTS,
        PromptEncoder,
        initial_noise,
        pipeline_kwargs,
        toyworld_pipeline,
    )

    prompt = "a red circle moving left on a blue background with stripes"
    encoder = PromptEncoder()
    pipe = toyworld_pipeline(WEIGHTS)
    pipe.set_progress_bar_config(disable=True)
    kwargs = pipeline_kwargs(encoder([prompt]), steps=DEFAULT_STEPS) | {"latents": initial_noise([0])}
    for owned in ("num_inference_steps", "output_type"):
        kwargs.pop(owned)
    # The toy world denoises pixels: its "latent" is the clip, so there is no decoder to time.
    return measure_profile(pipe, kwargs, name="toyworld-measured", model_id=MODEL_ID, steps=DEFAULT_STEPS,
                           encode=lambda: encoder([prompt]), decoded_output=None, repeats=repeats)
