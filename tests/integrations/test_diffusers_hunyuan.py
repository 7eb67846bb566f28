"""diffusers integration on a tiny random-weight HunyuanVideoPipeline (embedded guidance, CPU)."""

from __future__ import annotations

import pytest
import torch

from flexcache import enable_flexcache, last_call_report
from flexcache.integrations.tiny import tiny_hunyuan_video_pipeline, tiny_prompt_embeds
from flexcache.kernels.noise import seeded_noise

PROMPT = "a red fox running through fresh snow in a pine forest"
STEPS = 10
CALL = dict(height=32, width=32, num_frames=5, num_inference_steps=STEPS, output_type="latent")
LATENT = (4, 2, 4, 4)


@pytest.fixture
def pipe():
    pipeline = tiny_hunyuan_video_pipeline(seed=0)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def embeds(prompt=PROMPT):
    e = tiny_prompt_embeds(prompt)
    pooled = e.mean(dim=1)[:, :8]
    return dict(prompt_embeds=e, pooled_prompt_embeds=pooled, prompt_attention_mask=torch.ones(1, e.shape[1]))


def run(pipe, prompt=PROMPT, **overrides):
    return pipe(prompt=prompt, **embeds(prompt), **{**CALL, **overrides}).frames


def uninterrupted(pipe, seed, capture_step):
    captured = {}

    def callback(_p, i, _t, kwargs):
        if i + 1 == capture_step:
            captured["x"] = kwargs["latents"].clone()
        return kwargs

    out = pipe(**embeds(), latents=seeded_noise(LATENT, seed).unsqueeze(0), callback_on_step_end=callback,
               **CALL).frames
    return out, captured["x"]


@pytest.mark.parametrize("fraction", [0.1, 0.3, 0.5])
def test_resume_reproduces_the_uninterrupted_run(pipe, make_cache, fraction):
    cache = make_cache(codec={"name": "lossless"}, planner={"lookup": "full", "similarity_table": [[0.99, fraction]]})
    reference, x_k = uninterrupted(pipe, 91, round(fraction * STEPS))
    enable_flexcache(pipe, cache)
    first = run(pipe, generator=torch.Generator().manual_seed(91))
    report = last_call_report(pipe)
    assert not report.hit and report.seed == 91 and len(report.inserted) == 5
    torch.testing.assert_close(first, reference, rtol=0, atol=0)
    signature = next(iter(cache._records.values())).signature
    assert signature.latent_shape == LATENT and signature.latent_dtype == "float32"
    second = run(pipe)
    report = last_call_report(pipe)
    assert report.hit and report.skip_steps == round(fraction * STEPS)
    torch.testing.assert_close(cache.fetch(cache.plan(PROMPT, signature)), x_k[0], rtol=0, atol=0)
    assert float((second - reference).norm() / reference.norm()) < 1e-5


def test_embedded_guidance_sizes_and_sigmas_are_in_the_signature(pipe, make_cache):
    cache = make_cache(codec={"name": "lossless"}, planner={"lookup": "full", "similarity_table": [[0.99, 0.3]]})
    enable_flexcache(pipe, cache)
    run(pipe)
    for overrides in ({"guidance_scale": 3.5}, {"height": 48}, {"num_frames": 9},
                      {"sigmas": [1.0 - i / STEPS * 0.9 for i in range(STEPS)]}):
        run(pipe, **overrides)
        assert not last_call_report(pipe).hit, overrides
    run(pipe)
    assert last_call_report(pipe).hit


def test_caller_sigmas_resume_too(pipe, make_cache):
    cache = make_cache(codec={"name": "lossless"}, planner={"lookup": "full", "similarity_table": [[0.99, 0.3]]})
    enable_flexcache(pipe, cache)
    sigmas = [1.0 - i / STEPS * 0.95 for i in range(STEPS)]
    first = run(pipe, sigmas=sigmas, generator=torch.Generator().manual_seed(3))
    second = run(pipe, sigmas=sigmas)
    assert last_call_report(pipe).hit and last_call_report(pipe).skip_steps == 3
    assert float((second - first).norm() / first.norm()) < 1e-5
