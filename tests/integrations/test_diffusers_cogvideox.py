"""diffusers integration on a tiny random-weight CogVideoXPipeline (CPU)."""

from __future__ import annotations

import pytest
import torch

from flexcache import enable_flexcache, last_call_report
from flexcache.integrations.diffusers import ADAPTERS
from flexcache.integrations.tiny import tiny_cogvideox_pipeline, tiny_prompt_embeds
from flexcache.kernels.noise import seeded_noise

PROMPT = "a paper boat drifting down a rain-soaked city street"
STEPS = 10
CALL = dict(height=16, width=16, num_frames=9, num_inference_steps=STEPS, guidance_scale=1.0, output_type="latent")
LATENT = (3, 4, 2, 2)  # (T, C, H, W)


@pytest.fixture
def pipe():
    pipeline = tiny_cogvideox_pipeline(seed=0)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def run(pipe, prompt=PROMPT, **overrides):
    return pipe(prompt=prompt, **{"prompt_embeds": tiny_prompt_embeds(prompt), **CALL, **overrides}).frames


@pytest.mark.parametrize("fraction", [0.1, 0.3, 0.5])
def test_resume_reproduces_uninterrupted_ddim_run(pipe, make_cache, fraction):
    reference = pipe(prompt_embeds=tiny_prompt_embeds(PROMPT), latents=seeded_noise(LATENT, 99).unsqueeze(0),
                     **CALL).frames
    # Lossless entries: the invariant is about resuming, not about compression.
    cache = make_cache(codec={"name": "lossless"}, planner={"lookup": "full", "similarity_table": [[0.99, fraction]]})
    enable_flexcache(pipe, cache)
    first = run(pipe, generator=torch.Generator().manual_seed(99))
    assert not last_call_report(pipe).hit
    torch.testing.assert_close(first, reference, rtol=0, atol=0)
    second = run(pipe)
    report = last_call_report(pipe)
    assert report.hit and report.skip_steps == round(fraction * STEPS)
    assert ((second - reference).norm() / reference.norm()) < 1e-5


def test_signature_follows_cogvideox_layout_and_dtype(pipe, make_cache):
    cache = make_cache()
    enable_flexcache(pipe, cache)
    run(pipe)
    (record,) = cache._records.values()
    assert record.signature.latent_shape == LATENT
    assert record.signature.latent_dtype == "float32"
    assert record.signature.frame_axis == 0  # (T, C, H, W): the codec's delta runs over frames
    from flexcache.codec.latent import describe_blob

    assert {describe_blob(cache.tier.get(e.key)).get("frame_axis", 0) for e in cache.entries()} == {0}
    # The pipeline denoises in the prompt embeddings' dtype, so the signature follows them.
    adapter = ADAPTERS["CogVideoXPipeline"]
    args = {**CALL, "prompt_embeds": tiny_prompt_embeds(PROMPT).to(torch.bfloat16)}
    bf16 = adapter.signature(pipe, args, "tiny")
    assert bf16.latent_dtype == "bfloat16"
    assert bf16.key() != adapter.signature(pipe, {**args, "prompt_embeds": tiny_prompt_embeds(PROMPT)}, "tiny").key()


def test_guidance_is_part_of_the_signature(pipe, make_cache):
    cache = make_cache()
    enable_flexcache(pipe, cache)
    run(pipe)
    run(pipe, guidance_scale=6.0, negative_prompt_embeds=tiny_prompt_embeds(""))
    assert not last_call_report(pipe).hit
    run(pipe, guidance_scale=6.0, negative_prompt_embeds=tiny_prompt_embeds(""))
    assert last_call_report(pipe).hit
