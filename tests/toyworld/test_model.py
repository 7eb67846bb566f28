"""The toy-world pipeline: a stock WanPipeline on pixels, deterministic, cacheable."""

from __future__ import annotations

import torch

from flexcache.toyworld.model import WEIGHTS, generate, toyworld_pipeline


def _pipe():
    pipe = toyworld_pipeline(WEIGHTS if WEIGHTS.exists() else None)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_same_prompt_and_seed_give_the_same_clip():
    pipe = _pipe()
    text = torch.randn(2, 24, 384, generator=torch.Generator().manual_seed(0))
    first = generate(pipe, text, steps=6, seed=3)
    again = generate(pipe, text, steps=6, seed=3)
    other = generate(pipe, text, steps=6, seed=4)
    assert first.shape == (2, 3, 8, 16, 16)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    assert first.min() >= -1 and first.max() <= 1


def test_the_cache_serves_the_toy_world_pipeline(make_cache):
    from flexcache import enable_flexcache, last_call_report

    pipe = _pipe()
    enable_flexcache(pipe, make_cache(codec={"name": "lossless"}), model_id="toyworld-test")
    text = torch.randn(1, 24, 384, generator=torch.Generator().manual_seed(1))
    kwargs = dict(prompt_embeds=text, num_frames=7, height=16, width=16, num_inference_steps=10,
                  guidance_scale=1.0, output_type="latent")
    full = pipe(prompt="a red circle drifting left over a white striped background",
                generator=torch.Generator().manual_seed(9), **kwargs).frames
    assert not last_call_report(pipe).hit and full.shape == (1, 3, 8, 16, 16)
    resumed = pipe(prompt="a red circle drifting left over a white striped background", **kwargs).frames
    assert last_call_report(pipe).hit
    assert float((resumed - full).norm() / full.norm()) < 1e-5  # lossless entry: the same trajectory
