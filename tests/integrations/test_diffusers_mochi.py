"""diffusers integration on a tiny random-weight MochiPipeline (linear-quadratic sigmas, CPU)."""

from __future__ import annotations

import pytest
import torch

from flexcache import enable_flexcache, last_call_report
from flexcache.integrations.tiny import tiny_mochi_pipeline, tiny_prompt_embeds
from flexcache.kernels.noise import seeded_noise

PROMPT = "a red fox running through fresh snow in a pine forest"
STEPS = 10
CALL = dict(height=32, width=32, num_frames=7, num_inference_steps=STEPS, guidance_scale=1.0, output_type="latent")
LATENT = (12, 2, 4, 4)


@pytest.fixture
def pipe():
    pipeline = tiny_mochi_pipeline(seed=0)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


pytestmark = pytest.mark.filterwarnings("ignore:In CPU autocast")


def embeds(prompt=PROMPT):
    e = tiny_prompt_embeds(prompt)
    return dict(prompt_embeds=e, prompt_attention_mask=torch.ones(1, e.shape[1]))


def run(pipe, prompt=PROMPT, **overrides):
    return pipe(prompt=prompt, **embeds(prompt), **{**CALL, **overrides}).frames


def uninterrupted(pipe, seed, capture_step, **overrides):
    captured = {}

    def callback(_p, i, _t, kwargs):
        if i + 1 == capture_step:
            captured["x"] = kwargs["latents"].clone()
        return kwargs

    out = pipe(**embeds(), latents=seeded_noise(LATENT, seed).unsqueeze(0), callback_on_step_end=callback,
               **{**CALL, **overrides}).frames
    return out, captured["x"]


@pytest.mark.parametrize("fraction", [0.1, 0.3, 0.5])
def test_resume_reproduces_the_uninterrupted_run(pipe, make_cache, fraction):
    cache = make_cache(codec={"name": "lossless"}, planner={"lookup": "full", "similarity_table": [[0.99, fraction]]})
    reference, x_k = uninterrupted(pipe, 77, round(fraction * STEPS))
    enable_flexcache(pipe, cache)
    first = run(pipe, generator=torch.Generator().manual_seed(77))
    report = last_call_report(pipe)
    assert not report.hit and report.seed == 77 and len(report.inserted) == 5
    torch.testing.assert_close(first, reference, rtol=0, atol=0)
    signature = next(iter(cache._records.values())).signature
    assert signature.latent_shape == LATENT
    second = run(pipe)
    report = last_call_report(pipe)
    assert report.hit and report.skip_steps == round(fraction * STEPS)
    torch.testing.assert_close(cache.fetch(cache.plan(PROMPT, signature)), x_k[0], rtol=0, atol=0)
    assert float((second - reference).norm() / reference.norm()) < 1e-5


def test_guidance_and_sizes_are_in_the_signature(pipe, make_cache):
    cache = make_cache(codec={"name": "lossless"}, planner={"lookup": "full", "similarity_table": [[0.99, 0.3]]})
    enable_flexcache(pipe, cache)
    run(pipe)
    for overrides in ({"height": 48}, {"num_frames": 13}, {"guidance_scale": 3.0,
                                                           "negative_prompt_embeds": tiny_prompt_embeds(""),
                                                           "negative_prompt_attention_mask": torch.ones(1, 8)}):
        run(pipe, **overrides)
        assert not last_call_report(pipe).hit, overrides
    run(pipe)
    assert last_call_report(pipe).hit


def test_a_hit_with_classifier_free_guidance(pipe, make_cache):
    cache = make_cache(codec={"name": "lossless"}, planner={"lookup": "full", "similarity_table": [[0.99, 0.3]]})
    enable_flexcache(pipe, cache)
    guided = dict(guidance_scale=3.0, negative_prompt_embeds=tiny_prompt_embeds(""),
                  negative_prompt_attention_mask=torch.ones(1, 8))
    first = run(pipe, generator=torch.Generator().manual_seed(5), **guided)
    second = run(pipe, **guided)
    assert last_call_report(pipe).hit
    assert float((second - first).norm() / first.norm()) < 1e-5
