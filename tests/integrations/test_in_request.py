"""In-request caches (diffusers hooks) on FlexCache calls: per-call state, step offsets, clear errors (CPU)."""

from __future__ import annotations

import pytest
import torch

from flexcache import enable_flexcache, last_call_report
from flexcache.integrations import in_request
from flexcache.integrations.diffusers import InRequestCacheError
from flexcache.integrations.tiny import tiny_prompt_embeds, tiny_wan_pipeline

PROMPT = "a red fox running through fresh snow in a pine forest"
STEPS = 10
CALL = dict(height=32, width=32, num_frames=5, num_inference_steps=STEPS, guidance_scale=1.0, output_type="latent")


def _cache(make_cache, fraction=0.3):
    return make_cache(codec={"name": "lossless"}, planner={"lookup": "full", "similarity_table": [[0.99, fraction]]})


class ComputedSteps:
    """Which steps of the full schedule ran the last block (a skipped block does not run its feed-forward)."""

    def __init__(self, pipe, transformer=None):
        self.pipe, self.steps = pipe, []
        self.full = None
        block = (transformer or pipe.transformer).blocks[-1]
        block.ffn.register_forward_hook(lambda *_: self.steps.append(float(pipe.current_timestep)))

    def indices(self):
        timesteps = [float(t) for t in self.full]
        return sorted({timesteps.index(t) for t in self.steps})


@pytest.fixture
def pipe():
    pipe = tiny_wan_pipeline(seed=0)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run(pipe, **overrides):
    return pipe(**{"prompt": PROMPT, "prompt_embeds": tiny_prompt_embeds(PROMPT), **CALL, **overrides}).frames


def _mag(ratios):
    from diffusers import MagCacheConfig

    return MagCacheConfig(threshold=0.5, max_skip_steps=3, retention_ratio=0.2, num_inference_steps=STEPS,
                          mag_ratios=ratios)


# Steady ratios, but a large change at step 6: MagCache must compute step 6 of the full schedule.
RATIOS = [1.0] * 6 + [2.0] + [1.0] * 3


def _computed(pipe, make_cache):
    pipe.transformer.enable_cache(_mag(RATIOS))
    computed = ComputedSteps(pipe)
    enable_flexcache(pipe, _cache(make_cache))
    run(pipe, generator=torch.Generator().manual_seed(1))
    computed.full = list(pipe.scheduler.timesteps)
    full = computed.indices()
    computed.steps.clear()
    run(pipe)
    report = last_call_report(pipe)
    assert report.hit and report.skip_steps == 3 and report.in_request == ["MagCache"]
    return full, computed.indices()


def test_magcache_ratios_follow_the_full_schedule_on_a_resumed_run(pipe, make_cache):
    full, resumed = _computed(pipe, make_cache)
    assert full == [0, 1, 5, 6]  # retention (20 %), then at most 3 skips, and the large ratio at step 6
    assert resumed == [3, 6]  # the first resumed step has no residual; step 6 as in the full run


def test_without_the_offsets_the_resumed_magcache_would_count_from_zero(pipe, make_cache, monkeypatch):
    """The control: with FlexCache's offsets disabled, the resumed run's decisions shift (the test can fail)."""
    monkeypatch.setattr(in_request, "_offsets", lambda transformer, before: [])
    _, resumed = _computed(pipe, make_cache)
    assert 6 not in resumed


def _after_an_aborted_call(pipe, make_cache, enabled=True):
    """A clean miss, and the same miss right after a call that raised mid-run (its residuals left in the hooks).

    `enabled=False`: the same, on calls the cache bypasses (`flexcache_enabled=False`).
    """
    from diffusers import FirstBlockCacheConfig

    pipe.transformer.enable_cache(FirstBlockCacheConfig(threshold=10.0))  # reuse whenever a residual is there
    enable_flexcache(pipe, _cache(make_cache))
    clean = run(pipe, prompt="a paper boat on a pond", generator=torch.Generator().manual_seed(4),
                flexcache_enabled=enabled)

    def abort(_p, i, _t, kwargs):
        if i == 2:
            raise RuntimeError("client went away")
        return kwargs

    with pytest.raises(RuntimeError):
        run(pipe, prompt="a blue whale", prompt_embeds=tiny_prompt_embeds("a blue whale"), callback_on_step_end=abort)
    after = run(pipe, generator=torch.Generator().manual_seed(4), flexcache_enabled=enabled)
    assert not last_call_report(pipe).hit and last_call_report(pipe).in_request == ["FirstBlockCache"]
    return clean, after


@pytest.mark.parametrize("enabled", [True, False], ids=["cached", "bypassed"])
def test_first_block_cache_state_never_crosses_calls(pipe, make_cache, enabled):
    clean, after = _after_an_aborted_call(pipe, make_cache, enabled)
    torch.testing.assert_close(after, clean, rtol=0, atol=0)


@pytest.mark.parametrize("enabled", [True, False], ids=["cached", "bypassed"])
def test_without_the_reset_an_aborted_call_leaks_into_the_next(pipe, make_cache, monkeypatch, enabled):
    """The control: diffusers resets the hooks only at the end of a call that returns."""
    monkeypatch.setattr(in_request, "_reset", lambda transformer: None)
    clean, after = _after_an_aborted_call(pipe, make_cache, enabled)
    assert not torch.equal(after, clean)


def test_magcache_for_another_step_count_is_a_clear_error(pipe, make_cache):
    """Its ratios and step counter would not line up with a resumed schedule: a wrong video, so refused."""
    from diffusers import MagCacheConfig

    pipe.transformer.enable_cache(MagCacheConfig(num_inference_steps=28, mag_ratios=[1.0] * 28))
    cache = _cache(make_cache)
    enable_flexcache(pipe, cache)
    with pytest.raises(InRequestCacheError, match="num_inference_steps is 28 but the call runs 10"):
        run(pipe)
    assert cache.stats()["cache_errors"] == {}  # a refusal, not a contained error


def test_a_calibrating_magcache_runs_its_calls_uncached(pipe, make_cache):
    """Its ratios must describe full runs: the call runs as plain diffusers, with the reason."""
    from diffusers import MagCacheConfig

    pipe.transformer.enable_cache(MagCacheConfig(num_inference_steps=STEPS, calibrate=True))
    cache = _cache(make_cache)
    enable_flexcache(pipe, cache)
    run(pipe)
    run(pipe)
    report = last_call_report(pipe)
    assert "calibrating" in report.bypass_reason and not report.hit
    assert cache.stats()["requests"] == 0 and cache.stats()["entries"] == 0


def test_taylorseer_that_hooks_nothing_on_wan_warns_and_runs(pipe, make_cache):
    """Its default patterns fullmatch names ending in 'attn'; Wan's attention modules are attn1 and attn2.
    Inert, not wrong: plain diffusers runs the call unchanged, so the cached call runs too, with a warning."""
    from diffusers import TaylorSeerCacheConfig

    in_request._WARNED.clear()
    pipe.transformer.enable_cache(TaylorSeerCacheConfig(cache_interval=3, disable_cache_before_step=2))
    assert in_request.hooks_of(pipe.transformer) == []
    cache = _cache(make_cache)
    enable_flexcache(pipe, cache)
    with pytest.warns(UserWarning, match="cache_identifiers"):
        run(pipe)
    assert last_call_report(pipe).inserted
    run(pipe)
    assert last_call_report(pipe).hit and cache.stats()["cache_errors"] == {}


def test_taylorseer_warms_up_again_and_cools_down_where_the_full_run_does(pipe, make_cache):
    from diffusers import TaylorSeerCacheConfig

    pipe.transformer.enable_cache(TaylorSeerCacheConfig(
        cache_interval=3, disable_cache_before_step=2, disable_cache_after_step=8,
        taylor_factors_dtype=torch.float32, cache_identifiers=[r"blocks\.\d+"]))
    computed = ComputedSteps(pipe)
    enable_flexcache(pipe, _cache(make_cache))
    run(pipe, generator=torch.Generator().manual_seed(2))
    computed.full = list(pipe.scheduler.timesteps)
    assert computed.indices() == [0, 1, 3, 6, 8, 9]
    computed.steps.clear()
    resumed = run(pipe)
    assert last_call_report(pipe).hit and last_call_report(pipe).in_request == ["TaylorSeer"]
    # Warm-up over the resumed run's first two steps, then every third, and the cool-down at step 8.
    assert computed.indices() == [3, 4, 6, 8, 9]
    assert torch.isfinite(resumed).all()


def test_wan22_experts_each_resume_at_their_own_step(make_cache):
    """With two experts, each one's MagCache starts at the steps it would have run: the low-noise one at 0."""
    pipe = tiny_wan_pipeline(seed=0, boundary_ratio=0.5)
    pipe.set_progress_bar_config(disable=True)
    for name in ("transformer", "transformer_2"):
        getattr(pipe, name).enable_cache(_mag([1.0] * STEPS))
    started = {}
    original = in_request._Offset.install

    def spying_install(self):
        original(self)
        apply = self.apply

        def recording(state):
            apply(state)
            started.setdefault(id(self.manager), state.step_index)

        self.apply = recording

    enable_flexcache(pipe, _cache(make_cache, 0.2))
    run(pipe, generator=torch.Generator().manual_seed(3))
    pipe.scheduler.set_timesteps(STEPS)
    full = pipe.scheduler.timesteps.clone()
    in_request._Offset.install = spying_install
    try:
        run(pipe)
    finally:
        in_request._Offset.install = original
    skip = last_call_report(pipe).skip_steps
    assert last_call_report(pipe).hit and skip == 2
    boundary = 0.5 * pipe.scheduler.config.num_train_timesteps
    assert int((full[:skip] >= boundary).sum()) == 2 and int((full >= boundary).sum()) > skip  # both experts run
    assert sorted(started.values()) == [0, 2]


def test_pyramid_attention_broadcast_chooses_by_the_full_schedules_timesteps(pipe, make_cache):
    """PAB skips attention inside a timestep range: a resumed run shares the timesteps, and its first step computes."""
    from diffusers import PyramidAttentionBroadcastConfig

    pipe.transformer.enable_cache(PyramidAttentionBroadcastConfig(
        spatial_attention_block_skip_range=2, spatial_attention_timestep_skip_range=(-1, 600),
        current_timestep_callback=lambda: pipe.current_timestep))
    computed = ComputedSteps(pipe)
    attention = []
    pipe.transformer.blocks[-1].attn1.to_q.register_forward_hook(
        lambda *_: attention.append(float(pipe.current_timestep)))
    enable_flexcache(pipe, _cache(make_cache))
    run(pipe, generator=torch.Generator().manual_seed(6))
    full = [float(t) for t in pipe.scheduler.timesteps]
    attention.clear()
    resumed = run(pipe)
    assert last_call_report(pipe).hit and last_call_report(pipe).in_request == ["PyramidAttentionBroadcast"]
    ran = sorted({full.index(t) for t in attention})
    above = [i for i in range(3, STEPS) if full[i] >= 600]  # outside the skip range: attention always runs
    assert set(above) <= set(ran) and 3 in ran and len(ran) < STEPS - 3
    assert torch.isfinite(resumed).all() and computed.steps
