"""cache-dit (`cache_dit.enable_cache`) on FlexCache calls: fresh contexts per call, step offsets (CPU)."""

from __future__ import annotations

import pytest
import torch

from flexcache import disable_flexcache, enable_flexcache, last_call_report
from flexcache.integrations import cache_dit_contexts
from flexcache.integrations.tiny import tiny_prompt_embeds, tiny_wan_pipeline

cache_dit = pytest.importorskip("cache_dit")

PROMPT = "a red fox running through fresh snow in a pine forest"
STEPS = 10
CALL = dict(height=32, width=32, num_frames=5, num_inference_steps=STEPS, guidance_scale=1.0, output_type="latent")
# Compute steps 0, 1 and 6 of the full schedule; reuse the residual at every other step (threshold >= 1).
MASK = [1, 1, 0, 0, 0, 0, 1, 0, 0, 0]


def _config(**overrides):
    settings = dict(Fn_compute_blocks=1, Bn_compute_blocks=0, max_warmup_steps=2, residual_diff_threshold=1.0,
                    enable_separate_cfg=False, num_inference_steps=STEPS,
                    steps_computation_mask=MASK, steps_computation_policy="dynamic")
    return cache_dit.DBCacheConfig(**(settings | overrides))


def _cache(make_cache, fraction=0.3):
    return make_cache(codec={"name": "lossless"}, planner={"lookup": "full", "similarity_table": [[0.99, fraction]]})


class ComputedSteps:
    """Which steps of the full schedule ran the last block (cache-dit skips it on a cached step)."""

    def __init__(self, pipe, transformer=None):
        self.pipe, self.steps, self.full = pipe, [], None
        block = (transformer or pipe.transformer).blocks[-1]
        block.ffn.register_forward_hook(lambda *_: self.steps.append(float(pipe.current_timestep)))

    def take(self):
        timesteps = [float(t) for t in self.full]
        found = sorted({timesteps.index(t) for t in self.steps})
        self.steps.clear()
        return found


@pytest.fixture
def pipe():
    pipe = tiny_wan_pipeline(seed=0)
    pipe.set_progress_bar_config(disable=True)
    yield pipe
    disable_flexcache(pipe)  # first: cache-dit's disable_cache cannot unpatch through FlexCache's subclass
    if "_original_call" in type(pipe).__dict__:
        cache_dit.disable_cache(pipe)  # it patched WanPipeline itself: restore it for the next test


def run(pipe, **overrides):
    return pipe(**{"prompt": PROMPT, "prompt_embeds": tiny_prompt_embeds(PROMPT), **CALL, **overrides}).frames


def _full_then_resumed(pipe, make_cache, *, cache_dit_first: bool):
    if cache_dit_first:
        cache_dit.enable_cache(pipe, cache_config=_config())
    enable_flexcache(pipe, _cache(make_cache))
    if not cache_dit_first:
        cache_dit.enable_cache(pipe, cache_config=_config())
    computed = ComputedSteps(pipe)
    run(pipe, generator=torch.Generator().manual_seed(1))
    computed.full = list(pipe.scheduler.timesteps)
    full = computed.take()
    resumed_frames = run(pipe)
    report = last_call_report(pipe)
    assert report.hit and report.skip_steps == 3 and report.in_request == ["cache-dit DBCache"]
    return full, computed.take(), resumed_frames


@pytest.mark.parametrize("cache_dit_first", [True, False])
def test_the_step_mask_follows_the_full_schedule_on_a_resumed_run(pipe, make_cache, cache_dit_first):
    full, resumed, frames = _full_then_resumed(pipe, make_cache, cache_dit_first=cache_dit_first)
    assert full == [0, 1, 6]
    assert resumed == [3, 6]  # the first resumed step has nothing cached; step 6 as in the full run
    assert torch.isfinite(frames).all()
    assert cache_dit.summary(pipe)[0].cached_steps == [4, 5, 7, 8, 9]  # its statistics, by full-schedule step


def test_without_the_offsets_the_resumed_run_would_count_from_zero(pipe, make_cache, monkeypatch):
    """The control: with the offsets off, cache-dit warms up at steps 3-4 and computes step 9, not 6."""
    monkeypatch.setattr(cache_dit_contexts, "install_offsets", lambda transformer, before: None)
    _, resumed, _ = _full_then_resumed(pipe, make_cache, cache_dit_first=True)
    assert resumed == [3, 4, 9]


def test_a_static_mask_that_caches_the_first_resumed_step_still_computes_it(pipe, make_cache):
    """cache-dit's static policy reuses the buffer on a masked-out step; a resumed run has none at its first."""
    cache_dit.enable_cache(pipe, cache_config=_config(steps_computation_policy="static"))
    enable_flexcache(pipe, _cache(make_cache))
    computed = ComputedSteps(pipe)
    run(pipe, generator=torch.Generator().manual_seed(1))
    computed.full = list(pipe.scheduler.timesteps)
    assert computed.take() == [0, 1, 6]
    frames = run(pipe)
    assert last_call_report(pipe).hit and computed.take() == [3, 6]
    assert torch.isfinite(frames).all()


def _miss_alone_and_after_another_call(make_cache):
    """cache-dit on the transformer alone keeps its contexts across calls: the same miss, first and second."""
    other = "a paper boat on a pond"
    outputs = []
    for earlier_call in (False, True):
        pipe = tiny_wan_pipeline(seed=0)
        pipe.set_progress_bar_config(disable=True)
        cache_dit.enable_cache(pipe.transformer, cache_config=_config(num_inference_steps=None,
                                                                      steps_computation_mask=None))
        enable_flexcache(pipe, _cache(make_cache))
        if earlier_call:
            run(pipe, generator=torch.Generator().manual_seed(1))  # leaves residuals and a step count behind
        outputs.append(run(pipe, prompt=other, prompt_embeds=tiny_prompt_embeds(other),
                           generator=torch.Generator().manual_seed(4)))
        assert not last_call_report(pipe).hit and last_call_report(pipe).in_request == ["cache-dit DBCache"]
    return outputs


def test_transformer_only_contexts_never_cross_calls(make_cache):
    alone, after = _miss_alone_and_after_another_call(make_cache)
    torch.testing.assert_close(after, alone, rtol=0, atol=0)


def test_without_the_reset_the_next_request_inherits_the_context(make_cache, monkeypatch):
    """The control: cache-dit alone rebuilds persistent contexts only after num_inference_steps steps."""
    monkeypatch.setattr(cache_dit_contexts, "reset_contexts", lambda transformer: None)
    alone, after = _miss_alone_and_after_another_call(make_cache)
    assert not torch.equal(after, alone)


def test_wan22_experts_each_count_the_steps_they_run_in_the_full_schedule(make_cache):
    """Each expert's context ends a resumed run where it ends the full run: the skipped steps were all high-noise."""
    pipe = tiny_wan_pipeline(seed=0, boundary_ratio=0.5)
    pipe.set_progress_bar_config(disable=True)
    cache_dit.enable_cache(pipe, cache_config=_config(steps_computation_mask=None))
    enable_flexcache(pipe, _cache(make_cache, 0.2))
    experts = {"transformer": pipe.transformer, "transformer_2": pipe.transformer_2}
    try:
        run(pipe, generator=torch.Generator().manual_seed(3))
        full = {name: cache_dit_contexts._contexts(t)[0][1].executed_steps for name, t in experts.items()}
        run(pipe)
        report = last_call_report(pipe)
        assert report.hit and report.skip_steps == 2 and report.in_request == ["cache-dit DBCache"]
        resumed = {name: cache_dit_contexts._contexts(t)[0][1].executed_steps for name, t in experts.items()}
        assert full["transformer"] > 2 and full["transformer_2"] > 0 and sum(full.values()) == STEPS
        assert resumed == full
    finally:
        disable_flexcache(pipe)
        if "_original_call" in type(pipe).__dict__:
            cache_dit.disable_cache(pipe)
