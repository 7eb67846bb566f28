"""Region hits through `enable_flexcache` on a tiny random-weight WanPipeline (CPU)."""

from __future__ import annotations

import pytest
import torch

from flexcache import enable_flexcache, last_call_report
from flexcache.integrations.attention_masks import ObjectMaskRecorder, install_probes, object_token_weights
from flexcache.integrations.diffusers import sliced_scheduler
from flexcache.integrations.region_runs import TokenTimesteps, region_scheduler
from flexcache.integrations.tiny import tiny_prompt_embeds, tiny_wan_pipeline
from flexcache.kernels.noise import seeded_noise

STEPS = 10
CALL = dict(height=32, width=32, num_frames=5, num_inference_steps=STEPS, guidance_scale=1.0, output_type="latent")
LATENT = (16, 2, 4, 4)
SOURCE = "a golden retriever chasing a frisbee in a sunlit park"
TARGET = "a child flying a red kite in a sunlit park"


@pytest.fixture(scope="module")
def tokenizer():
    import os

    from transformers import AutoTokenizer

    from flexcache.engine import SentenceTransformerEmbedder

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return AutoTokenizer.from_pretrained(SentenceTransformerEmbedder.packaged_model_path())


@pytest.fixture
def pipe(tokenizer):
    pipeline = tiny_wan_pipeline(seed=0)
    pipeline.register_modules(tokenizer=tokenizer)  # never run: the calls pass prompt_embeds
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def run(pipe, prompt, **overrides):
    return pipe(prompt=prompt, prompt_embeds=tiny_prompt_embeds(prompt), **{**CALL, **overrides}).frames


def test_object_tokens_come_from_the_tokenizer_offsets(tokenizer):
    weights = object_token_weights(tokenizer, "A red fox running in the snow", "red fox running", 8)
    assert weights.tolist() == [0, 0, 1, 1, 1, 0, 0, 0]  # [CLS] a red fox running in the snow
    assert object_token_weights(tokenizer, "a red fox", "blue whale", 8) is None


def test_the_probe_leaves_the_run_bit_identical(pipe, tokenizer):
    noise = seeded_noise(LATENT, 5).unsqueeze(0)
    plain = pipe(prompt_embeds=tiny_prompt_embeds(SOURCE), latents=noise.clone(), **CALL).frames
    state = install_probes(pipe.transformer)
    recorder = ObjectMaskRecorder(torch.tensor([0, 1, 1, 0, 0, 0, 0, 0.0]), (2, 2, 2))
    state.recorder = recorder

    def step_end(_pipe, _i, _t, kwargs):
        recorder.step_done()
        return kwargs

    probed = pipe(prompt_embeds=tiny_prompt_embeds(SOURCE), latents=noise.clone(), callback_on_step_end=step_end,
                  **CALL).frames
    state.recorder = None
    torch.testing.assert_close(probed, plain, rtol=0, atol=0)
    mask = recorder.mask()
    assert mask.shape == (2, 2, 2) and float(mask.min()) == 0.0 and float(mask.max()) == 1.0


def test_a_region_schedule_with_an_empty_region_is_the_plain_resume(pipe):
    x_k = seeded_noise(LATENT, 9).unsqueeze(0) * 0.6
    embeds = tiny_prompt_embeds(TARGET)
    original = pipe.scheduler
    pipe.__dict__["scheduler"] = sliced_scheduler(original, 4)
    plain = pipe(prompt_embeds=embeds, latents=x_k.clone(), **CALL).frames
    region = torch.zeros(1, 1, *LATENT[1:])
    scheduler = region_scheduler(sliced_scheduler(original, 4), original, num_steps=STEPS, skip=4, region=region,
                                 catch_up=0.5)
    hook = TokenTimesteps(scheduler, region, (1, 2, 2))
    hook.install([pipe.transformer])
    pipe.__dict__["scheduler"] = scheduler
    try:
        regional = pipe(prompt_embeds=embeds, latents=x_k.clone(), **CALL).frames
    finally:
        hook.remove()
        pipe.__dict__["scheduler"] = original
    torch.testing.assert_close(regional, plain, rtol=1e-4, atol=1e-5)


def test_a_same_background_prompt_gets_a_region_hit_in_the_pipeline(pipe, make_cache):
    cache = make_cache(codec={"name": "lossless"},
                       planner={"similarity_table": [[0.999, 0.1]], "part_table": [],
                                "region_table": [["background", 0.9, 0.3]]})
    enable_flexcache(pipe, cache)
    run(pipe, SOURCE, generator=torch.Generator().manual_seed(1))
    assert all(entry.mask is not None for entry in cache._entries.values())
    hooks = len(pipe.transformer._forward_pre_hooks)
    out = run(pipe, TARGET)  # no seed of its own: another seed's entry may serve (its region: fresh noise)
    report = last_call_report(pipe)
    assert report.hit and report.region == "object" and report.skip_steps == 3
    assert out.shape == (1, *LATENT) and bool(torch.isfinite(out).all())
    assert len(pipe.transformer._forward_pre_hooks) == hooks  # the per-token timestep hook is gone
    assert type(pipe.scheduler).__name__ == "FlowMatchEulerDiscreteScheduler"
    # the run caught up after half the steps left; only later checkpoints are cached
    assert all(int(key_step) >= 3 + 4 for key_step in
               [e.step for e in cache._entries.values() if cache._records[e.record_id].prompt == TARGET])
    assert cache.stats()["region_hits"] == 1


def test_a_pipeline_without_a_tokenizer_caches_no_masks(make_cache):
    pipe = tiny_wan_pipeline(seed=0)
    pipe.set_progress_bar_config(disable=True)
    cache = make_cache(codec={"name": "lossless"})
    enable_flexcache(pipe, cache)
    run(pipe, SOURCE)
    assert cache._entries and all(entry.mask is None for entry in cache._entries.values())
