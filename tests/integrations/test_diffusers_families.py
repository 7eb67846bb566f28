"""diffusers integration on tiny random-weight pipelines whose latents come from `prepare_latents` (CPU).

LTX (packed token latents), HunyuanVideo (embedded guidance, caller sigmas),
Mochi (linear-quadratic sigmas), SkyReels-V2 (UniPC, its solver state
restored), Allegro (an init_noise_sigma far from 1) and HunyuanVideo 1.5 (no
step callback, a guider component): one set of tests, one entry per family.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

import pytest
import torch

from flexcache import enable_flexcache, last_call_report
from flexcache.integrations.tiny import (
    tiny_allegro_pipeline,
    tiny_hunyuan_video15_pipeline,
    tiny_hunyuan_video_pipeline,
    tiny_kandinsky5_pipeline,
    tiny_ltx_pipeline,
    tiny_mochi_pipeline,
    tiny_prompt_embeds,
    tiny_skyreels_v2_pipeline,
)
from flexcache.kernels.noise import seeded_noise

PROMPT = "a red fox running through fresh snow in a pine forest"
STEPS = 10
NEGATIVE = dict(guidance_scale=3.0, negative_prompt_embeds=tiny_prompt_embeds(""),
                negative_prompt_attention_mask=torch.ones(1, 8))


def masked(prompt: str) -> dict[str, torch.Tensor]:
    e = tiny_prompt_embeds(prompt)
    return dict(prompt_embeds=e, prompt_attention_mask=torch.ones(1, e.shape[1]))


def two_encoders(prompt: str) -> dict[str, torch.Tensor]:
    e = tiny_prompt_embeds(prompt)
    second = e[:, :, :16]
    return dict(prompt_embeds=e, prompt_embeds_mask=torch.ones(1, e.shape[1]), prompt_embeds_2=second,
                prompt_embeds_mask_2=torch.ones(1, second.shape[1]))


def qwen_clip(prompt: str) -> dict[str, torch.Tensor]:
    e = tiny_prompt_embeds(prompt)
    return dict(prompt_embeds_qwen=e, prompt_embeds_clip=e.mean(dim=1)[:, :16],
                prompt_cu_seqlens=torch.tensor([0, e.shape[1]], dtype=torch.int32))


def pooled(prompt: str) -> dict[str, torch.Tensor]:
    e = tiny_prompt_embeds(prompt)
    return dict(prompt_embeds=e, pooled_prompt_embeds=e.mean(dim=1)[:, :8], prompt_attention_mask=torch.ones(1, 8))


@dataclass(frozen=True)
class Family:
    build: Callable[..., Any]
    call: dict[str, Any]
    latent: tuple[int, ...]
    embeds: Callable[[str], dict[str, torch.Tensor]]
    misses: tuple[dict[str, Any], ...]  # call settings that must not share an entry
    guided: dict[str, Any] = field(default_factory=dict)  # a hit with these settings resumes exactly too
    initial: Callable[[torch.Tensor], torch.Tensor] = lambda noise: noise  # the start the pipeline's own draw has


def _no_visual_condition(noise: torch.Tensor) -> torch.Tensor:
    noise = noise.clone()
    noise[..., 4:] = 0  # Kandinsky 5 draws zeros for the visual condition and its mask
    return noise


FAMILIES = {
    "ltx": Family(tiny_ltx_pipeline, dict(height=64, width=64, num_frames=9, guidance_scale=1.0), (8, 8), masked,
                  ({"height": 96}, {"num_frames": 17}, NEGATIVE, {"frame_rate": 30}), NEGATIVE),
    "hunyuan": Family(tiny_hunyuan_video_pipeline, dict(height=32, width=32, num_frames=5), (4, 2, 4, 4), pooled,
                      ({"guidance_scale": 3.5}, {"height": 48}, {"num_frames": 9},
                       {"sigmas": [1.0 - i / STEPS * 0.9 for i in range(STEPS)]}),
                      {"sigmas": [1.0 - i / STEPS * 0.95 for i in range(STEPS)]}),
    "skyreels-v2": Family(tiny_skyreels_v2_pipeline, dict(height=32, width=32, num_frames=5, guidance_scale=1.0),
                          (16, 2, 4, 4), lambda p: dict(prompt_embeds=tiny_prompt_embeds(p)),
                          ({"height": 48}, {"num_frames": 9}, {"guidance_scale": 3.0,
                                                               "negative_prompt_embeds": tiny_prompt_embeds("")}),
                          {"guidance_scale": 3.0, "negative_prompt_embeds": tiny_prompt_embeds("")}),
    "allegro": Family(tiny_allegro_pipeline, dict(height=32, width=32, num_frames=9, guidance_scale=1.0),
                      (4, 3, 4, 4), masked, ({"height": 48}, {"num_frames": 17}, NEGATIVE), NEGATIVE),
    "hunyuan-1.5": Family(tiny_hunyuan_video15_pipeline, dict(height=32, width=32, num_frames=5), (4, 2, 2, 2),
                          two_encoders, ({"height": 48}, {"num_frames": 9},
                                         {"sigmas": [1.0 - i / STEPS * 0.9 for i in range(STEPS)]})),
    "kandinsky-5": Family(tiny_kandinsky5_pipeline, dict(height=32, width=32, num_frames=5, guidance_scale=1.0),
                          (2, 4, 4, 9), qwen_clip, ({"height": 48}, {"num_frames": 9}, {"max_sequence_length": 256}),
                          initial=_no_visual_condition),
    "mochi": Family(tiny_mochi_pipeline, dict(height=32, width=32, num_frames=7, guidance_scale=1.0),
                    (12, 2, 4, 4), masked, ({"height": 48}, {"num_frames": 13}, NEGATIVE), NEGATIVE),
}
pytestmark = pytest.mark.filterwarnings("ignore:In CPU autocast")  # Mochi's rotary embedding on CPU


@pytest.fixture(params=sorted(FAMILIES))
def family(request):
    spec = FAMILIES[request.param]
    pipe = spec.build(seed=0)
    pipe.set_progress_bar_config(disable=True)
    return spec, pipe


def run(family, prompt=PROMPT, **overrides):
    spec, pipe = family
    return pipe(prompt=prompt, **spec.embeds(prompt), **{**spec.call, "num_inference_steps": STEPS,
                                                          "output_type": "latent", **overrides}).frames


def uninterrupted(family, seed, capture_step):
    spec, pipe = family
    captured = {}

    def callback(_p, i, _t, kwargs):
        if i + 1 == capture_step:
            captured["x"] = kwargs["latents"].clone()
        return kwargs

    hooks = {"callback_on_step_end": callback}
    if "callback_on_step_end" not in inspect.signature(type(pipe).__call__).parameters:
        # No step callback (HunyuanVideo 1.5): read x_K from the scheduler's step output instead.
        hooks, step, calls = {}, pipe.scheduler.step, []

        def recording_step(*args, **kwargs):
            out = step(*args, **kwargs)
            calls.append(None)
            callback(pipe, len(calls) - 1, None, {"latents": out[0] if isinstance(out, tuple) else out.prev_sample})
            return out

        pipe.scheduler.step = recording_step
    try:
        out = pipe(**spec.embeds(PROMPT), latents=spec.initial(seeded_noise(spec.latent, seed)).unsqueeze(0),
                   num_inference_steps=STEPS, output_type="latent", **spec.call, **hooks).frames
    finally:
        pipe.scheduler.__dict__.pop("step", None)
    return out, captured["x"]


def _cache(make_cache, fraction=0.3):
    return make_cache(codec={"name": "lossless"}, planner={"lookup": "full", "similarity_table": [[0.99, fraction]]})


@pytest.mark.parametrize("fraction", [0.1, 0.3, 0.5])
def test_resume_reproduces_the_uninterrupted_run(family, make_cache, fraction):
    spec, pipe = family
    cache = _cache(make_cache, fraction)
    reference, x_k = uninterrupted(family, 77, round(fraction * STEPS))
    enable_flexcache(pipe, cache)
    first = run(family, generator=torch.Generator().manual_seed(77))
    report = last_call_report(pipe)
    assert not report.hit and report.seed == 77 and len(report.inserted) == 5
    torch.testing.assert_close(first, reference, rtol=0, atol=0)  # the miss path changes nothing
    signature = next(iter(cache._records.values())).signature
    assert signature.latent_shape == spec.latent and signature.latent_dtype == "float32"
    second = run(family)
    report = last_call_report(pipe)
    assert report.hit and report.skip_steps == round(fraction * STEPS)
    torch.testing.assert_close(cache.fetch(cache.plan(PROMPT, signature)), x_k[0], rtol=0, atol=0)
    assert float((second - reference).norm() / reference.norm()) < 1e-5


def test_sizes_and_guidance_are_in_the_signature(family, make_cache):
    spec, pipe = family
    enable_flexcache(pipe, _cache(make_cache))
    run(family)
    for overrides in spec.misses:
        run(family, **overrides)
        assert not last_call_report(pipe).hit, overrides
    run(family)
    assert last_call_report(pipe).hit


def test_a_hit_with_other_settings_resumes_exactly(family, make_cache):
    spec, pipe = family
    enable_flexcache(pipe, _cache(make_cache))
    first = run(family, generator=torch.Generator().manual_seed(5), **spec.guided)
    second = run(family, **spec.guided)
    report = last_call_report(pipe)
    assert report.hit and report.skip_steps == 3
    assert float((second - first).norm() / first.norm()) < 1e-5


def test_a_guidance_window_follows_the_full_schedule_on_a_resumed_run(make_cache):
    """HunyuanVideo 1.5's guider guides only steps [start, stop) x N: a resumed run must count from K, not 0."""
    from diffusers.guiders import ClassifierFreeGuidance

    pipe = tiny_hunyuan_video15_pipeline(seed=0)
    pipe.guider = ClassifierFreeGuidance(guidance_scale=4.0, start=0.0, stop=0.4)
    pipe.set_progress_bar_config(disable=True)
    negative = {f"negative_{k}": v for k, v in two_encoders("").items()}
    call = dict(height=32, width=32, num_frames=5, num_inference_steps=STEPS, output_type="latent", **negative)
    reference = pipe(**two_encoders(PROMPT), latents=seeded_noise((4, 2, 2, 2), 8).unsqueeze(0), **call).frames
    enable_flexcache(pipe, _cache(make_cache, 0.2))
    pipe(prompt=PROMPT, **two_encoders(PROMPT), generator=torch.Generator().manual_seed(8), **call)
    resumed = pipe(prompt=PROMPT, **two_encoders(PROMPT), **call).frames
    assert last_call_report(pipe).skip_steps == 2  # guided steps 0-3 of the full run: 2 and 3 still guided
    assert float((resumed - reference).norm() / reference.norm()) < 1e-5
