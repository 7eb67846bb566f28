"""LTX-2 (`LTX2Pipeline`) on a tiny random-weight pipeline: video and audio resume together (CPU).

The reference runs hand the pipeline the seed noise as packed latents, the
audio part denormalized by the test's own arithmetic (the pipeline normalizes
the audio latents it is given), so they do not go through the adapter.
"""

from __future__ import annotations

import pytest
import torch

from flexcache import enable_flexcache, last_call_report
from flexcache.integrations.diffusers import ADAPTERS
from flexcache.integrations.tiny import tiny_ltx2_pipeline, tiny_prompt_embeds
from flexcache.kernels.noise import seeded_noise

PROMPT = "a red fox running through fresh snow in a pine forest"
STEPS = 10
UNGUIDED = dict(guidance_scale=1.0, audio_guidance_scale=1.0, stg_scale=0.0, audio_stg_scale=0.0,
                modality_scale=1.0, audio_modality_scale=1.0)
CALL = dict(height=32, width=32, num_frames=9, frame_rate=25.0, num_inference_steps=STEPS, output_type="latent")
# Classifier-free, spatio-temporal and modality guidance on, as the pipeline's defaults have them.
GUIDED = dict(guidance_scale=3.0, audio_guidance_scale=5.0, stg_scale=1.0, audio_stg_scale=1.0, modality_scale=2.0,
              audio_modality_scale=2.0, spatio_temporal_guidance_blocks=[1])


@pytest.fixture
def pipe():
    pipe = tiny_ltx2_pipeline(seed=0)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def embeds(prompt: str, guided: bool = False) -> dict[str, torch.Tensor]:
    e = tiny_prompt_embeds(prompt)
    out = dict(prompt_embeds=e, prompt_attention_mask=torch.ones(1, e.shape[1]))
    if guided:
        n = tiny_prompt_embeds("")
        out.update(negative_prompt_embeds=n, negative_prompt_attention_mask=torch.ones(1, n.shape[1]))
    return out


def run(pipe, prompt=PROMPT, guided=False, **overrides):
    settings = {**CALL, **(GUIDED if guided else UNGUIDED), **overrides}
    out = pipe(prompt=prompt, **embeds(prompt, guided), **settings)
    return out.frames, out.audio


def uninterrupted(pipe, seed, guided=False):
    """The plain pipeline run from the seed noise FlexCache draws for `seed`, and its video latent at each step."""
    layout = ADAPTERS["LTX2Pipeline"].layout(pipe, {**CALL, **UNGUIDED})
    noise = seeded_noise((layout.size,), seed)
    video = noise[:layout.video_size].reshape(1, *layout.video)
    audio = noise[layout.video_size:].reshape(1, *layout.audio).double()
    audio = audio * pipe.audio_vae.latents_std.double() + pipe.audio_vae.latents_mean.double()
    steps = []

    def callback(_p, _i, _t, kwargs):
        steps.append(kwargs["latents"].clone())
        return kwargs

    out = pipe(**embeds(PROMPT, guided), latents=video, audio_latents=audio, callback_on_step_end=callback,
               **{**CALL, **(GUIDED if guided else UNGUIDED)})
    return (out.frames, out.audio), steps


def _cache(make_cache, fraction=0.3):
    return make_cache(codec={"name": "lossless"}, planner={"lookup": "full", "similarity_table": [[0.99, fraction]]})


def _close(actual, expected, bound=1e-5):
    return float((actual - expected).norm() / expected.norm()) < bound


@pytest.mark.parametrize("fraction", [0.2, 0.5])
def test_resume_reproduces_the_uninterrupted_video_and_audio(pipe, make_cache, fraction):
    (video_ref, audio_ref), steps = uninterrupted(pipe, 77)
    cache = _cache(make_cache, fraction)
    enable_flexcache(pipe, cache)
    video, audio = run(pipe, generator=torch.Generator().manual_seed(77))
    report = last_call_report(pipe)
    assert not report.hit and report.seed == 77 and len(report.inserted) == 5
    # The miss hands the pipeline the same start through its normalization: the run is the plain one.
    torch.testing.assert_close(video, video_ref, rtol=0, atol=1e-6)
    torch.testing.assert_close(audio, audio_ref, rtol=0, atol=1e-6)
    signature = next(iter(cache._records.values())).signature
    layout = ADAPTERS["LTX2Pipeline"].layout(pipe, {**CALL, **UNGUIDED})
    assert signature.latent_shape == (layout.size,) and layout.video == (5 * 16 * 16, 4) and layout.audio == (9, 4)
    skip = round(fraction * STEPS)
    stored = cache.fetch(cache.plan(PROMPT, signature))
    torch.testing.assert_close(stored[:layout.video_size], steps[skip - 1].reshape(-1), rtol=0, atol=0)

    video, audio = run(pipe)
    report = last_call_report(pipe)
    assert report.hit and report.skip_steps == skip and report.solver_state is None
    assert _close(video, video_ref) and _close(audio, audio_ref)


def test_the_audio_half_of_the_entry_is_what_the_audio_scheduler_stepped(pipe, make_cache):
    """The entry's audio half is the stepped audio latent (not the seed noise), and a hit resumes from it."""
    cache = _cache(make_cache)
    enable_flexcache(pipe, cache)
    _, audio_first = run(pipe, generator=torch.Generator().manual_seed(3))
    signature = next(iter(cache._records.values())).signature
    layout = ADAPTERS["LTX2Pipeline"].layout(pipe, {**CALL, **UNGUIDED})
    x_k = cache.fetch(cache.plan(PROMPT, signature))
    assert not torch.equal(x_k[layout.video_size:], seeded_noise((layout.size,), 3)[layout.video_size:])
    _, audio_second = run(pipe)
    assert last_call_report(pipe).hit and _close(audio_second, audio_first)


def test_a_guided_hit_resumes_exactly(pipe, make_cache):
    (video_ref, audio_ref), _ = uninterrupted(pipe, 5, guided=True)
    enable_flexcache(pipe, _cache(make_cache))
    first = run(pipe, guided=True, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(first[0], video_ref, rtol=0, atol=1e-6)
    video, audio = run(pipe, guided=True)
    assert last_call_report(pipe).hit and last_call_report(pipe).skip_steps == 3
    assert _close(video, video_ref) and _close(audio, audio_ref)


@pytest.mark.parametrize(("base", "overrides"), [
    ({}, {"height": 64}), ({}, {"num_frames": 17}), ({}, {"frame_rate": 12.5}), ({}, {"motion_speed": 2.0}),
    ({}, {"guided": True}), ({"guided": True}, {"guided": True, "audio_guidance_scale": 4.0}),
    ({"guided": True}, {"guided": True, "spatio_temporal_guidance_blocks": [0]}),
], ids=["height", "frames", "frame-rate", "motion-speed", "guidance", "audio-guidance", "stg-blocks"])
def test_sizes_frame_rate_and_guidance_are_in_the_signature(pipe, make_cache, base, overrides):
    enable_flexcache(pipe, _cache(make_cache))
    run(pipe, **base)
    run(pipe, **overrides)
    assert not last_call_report(pipe).hit
    run(pipe, **base)
    assert last_call_report(pipe).hit


@pytest.mark.parametrize(("overrides", "reason"), [
    ({"audio_latents": torch.zeros(1, 2, 9, 2)}, "audio_latents"),
    ({"noise_scale": 0.5}, "noise_scale"),
])
def test_calls_the_adapter_cannot_key_run_uncached(pipe, make_cache, overrides, reason):
    cache = _cache(make_cache)
    enable_flexcache(pipe, cache)
    run(pipe, **overrides)
    report = last_call_report(pipe)
    assert not report.hit and reason in report.bypass_reason
    assert not cache._records


def test_a_multistep_solver_restarts_on_a_hit_and_says_so(pipe, make_cache):
    from diffusers import UniPCMultistepScheduler

    pipe.scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True)
    enable_flexcache(pipe, _cache(make_cache))
    first = run(pipe, sigmas=None, generator=torch.Generator().manual_seed(9))
    second = run(pipe)
    report = last_call_report(pipe)
    assert report.hit and report.solver_state == "restarted"
    assert torch.isfinite(second[0]).all() and second[0].shape == first[0].shape


def test_prompt_enhancement_and_a_duration_head_are_served_uncached(pipe):
    adapter = ADAPTERS["LTX2Pipeline"]
    args = {**CALL, **UNGUIDED}
    assert adapter.uncacheable_reason(pipe, args) is None
    assert "prompt enhancement" in adapter.uncacheable_reason(pipe, {**args, "enable_prompt_enhancement": True})
    pipe.__dict__["duration_head"] = object()  # a checkpoint that predicts the clip's length from the prompt
    assert "duration head" in adapter.uncacheable_reason(pipe, {**args, "num_frames": None})
    assert adapter.uncacheable_reason(pipe, args) is None  # with num_frames given the head is not used
