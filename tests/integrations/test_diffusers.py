"""diffusers integration on a tiny random-weight WanPipeline (CPU)."""

from __future__ import annotations

import pytest
import torch

from flexcache import (
    FlexCacheError,
    UnsupportedPipelineError,
    disable_flexcache,
    enable_flexcache,
    last_call_report,
)
from flexcache.integrations.tiny import tiny_prompt_embeds, tiny_wan_pipeline
from flexcache.kernels.noise import seeded_noise

PROMPT = "a red fox running through fresh snow in a pine forest"
STEPS = 10
CALL = dict(height=32, width=32, num_frames=5, num_inference_steps=STEPS, guidance_scale=1.0, output_type="latent")


@pytest.fixture
def pipe():
    pipeline = tiny_wan_pipeline(seed=0)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def run(pipe, prompt=PROMPT, **overrides):
    kwargs = {**CALL, **overrides}
    return pipe(prompt=prompt, prompt_embeds=tiny_prompt_embeds(prompt), **kwargs).frames


def uninterrupted(pipe, seed, capture_step=None, **overrides):
    """A plain diffusers run (no cache) from seeded noise, optionally capturing x_K."""
    captured = {}

    def callback(p, i, t, kwargs):
        if capture_step is not None and i + 1 == capture_step:
            captured["x"] = kwargs["latents"].clone()
        return kwargs

    kwargs = {**CALL, **overrides}
    shape = (16, (kwargs["num_frames"] - 1) // 4 + 1, kwargs["height"] // 8, kwargs["width"] // 8)
    out = pipe(prompt_embeds=tiny_prompt_embeds(PROMPT), latents=seeded_noise(shape, seed).unsqueeze(0),
               callback_on_step_end=callback, **kwargs).frames
    return out, captured.get("x")


@pytest.mark.parametrize("fraction", [0.1, 0.2, 0.3, 0.4, 0.5])
def test_resume_from_cached_latent_reproduces_uninterrupted_run(pipe, make_cache, fraction):
    # A table that maps an identical prompt to exactly this checkpoint.
    # Lossless entries: the invariant is about resuming, not about compression.
    cache = make_cache(codec={"name": "lossless"}, planner={"lookup": "full", "similarity_table": [[0.99, fraction]]})
    reference, x_k = uninterrupted(pipe, seed=1234, capture_step=round(fraction * STEPS))
    enable_flexcache(pipe, cache)

    first = run(pipe, generator=torch.Generator().manual_seed(1234))
    report = last_call_report(pipe)
    assert not report.hit and report.seed == 1234 and len(report.inserted) == 5
    torch.testing.assert_close(first, reference, rtol=0, atol=0)  # the miss path changes nothing

    second = run(pipe)
    report = last_call_report(pipe)
    assert report.hit and report.skip_steps == round(fraction * STEPS)
    stored = cache.fetch(cache.plan(PROMPT, next(iter(cache._records.values())).signature))
    torch.testing.assert_close(stored, x_k[0], rtol=0, atol=0)
    relative = (second - reference).norm() / reference.norm()
    assert relative < 1e-5, float(relative)


def test_hit_with_classifier_free_guidance(pipe, make_cache):
    cache = make_cache(codec={"name": "lossless"})
    enable_flexcache(pipe, cache)
    negative = tiny_prompt_embeds("blurry, low quality")
    kwargs = dict(guidance_scale=5.0, negative_prompt_embeds=negative)
    first = run(pipe, **kwargs, generator=torch.Generator().manual_seed(7))
    assert last_call_report(pipe).inserted
    second = run(pipe, **kwargs, generator=torch.Generator().manual_seed(7))  # the same seed
    assert last_call_report(pipe).hit
    assert torch.allclose(first, second, atol=1e-5)
    # A different guidance scale is another signature: a miss.
    run(pipe, **{**kwargs, "guidance_scale": 4.0}, generator=torch.Generator().manual_seed(7))
    assert not last_call_report(pipe).hit


def test_hit_from_compressed_entry_stays_close_to_the_full_run(pipe, make_cache):
    from flexcache.codec.latent import describe_blob

    cache = make_cache()  # the default, lossy codec
    enable_flexcache(pipe, cache)
    reference = run(pipe, generator=torch.Generator().manual_seed(5))
    captured_sigmas = {e.step: describe_blob(cache.tier.get(e.key))["sigma"] for e in cache.entries()}
    expected = {step: float(pipe.scheduler.sigmas[step]) for step in captured_sigmas}
    assert captured_sigmas == pytest.approx(expected)  # the integration hands sigma_K to the codec
    resumed = run(pipe)
    assert last_call_report(pipe).hit
    relative = float((resumed - reference).norm() / reference.norm())
    assert 0 < relative < 0.02, relative
    raw = len(cache.entries()) * 16 * 2 * 4 * 4 * 4
    assert cache.stats()["bytes_stored"] < raw


def test_unrelated_prompt_and_other_sizes_miss(pipe, make_cache):
    cache = make_cache()
    enable_flexcache(pipe, cache)
    run(pipe)
    run(pipe, prompt="an astronaut repairing a satellite above the earth")
    assert not last_call_report(pipe).hit
    out = run(pipe, height=48)
    assert not last_call_report(pipe).hit and out.shape == (1, 16, 2, 6, 4)
    out = run(pipe, num_inference_steps=12)
    assert not last_call_report(pipe).hit and out.shape == (1, 16, 2, 4, 4)
    out = run(pipe, num_frames=9)
    assert not last_call_report(pipe).hit and out.shape == (1, 16, 3, 4, 4)
    run(pipe)
    assert last_call_report(pipe).hit
    assert cache.stats()["hits"] == 1


def test_near_duplicate_prompt_hits(pipe, make_cache):
    cache = make_cache()
    enable_flexcache(pipe, cache)
    run(pipe)
    run(pipe, prompt="a red fox runs through fresh snow in a pine forest")
    report = last_call_report(pipe)
    assert report.hit and report.source_prompt == PROMPT and 0.65 <= report.similarity < 1.0


def test_a_hit_caches_its_resumed_checkpoints_and_a_repeat_reproduces_it(pipe, make_cache):
    cache = make_cache(codec={"name": "lossless"})
    enable_flexcache(pipe, cache)
    near = "a red fox running through deep snow at night"  # cosine 0.84: K = 20 % of N
    run(pipe, generator=torch.Generator().manual_seed(1))
    # Requests that leave the seed to FlexCache may resume from any entry (a caller's seed needs its own).
    served = run(pipe, prompt=near)
    report = last_call_report(pipe)
    assert report.hit and 0 < report.skip_steps < STEPS // 2
    later = [s for s in cache.planner.checkpoint_steps(STEPS) if s > report.skip_steps]
    assert len(report.inserted) == len(later) and cache.stats()["resumed_inserts"] == len(later)
    # The repeat resumes from the near prompt's own deepest checkpoint and, Euler being
    # one-step, reproduces what the first near request was served.
    again = run(pipe, prompt=near)
    report = last_call_report(pipe)
    assert report.hit and report.source_prompt == near and report.skip_steps == max(later)
    assert not report.inserted  # nothing after the deepest checkpoint
    torch.testing.assert_close(again, served, rtol=1e-4, atol=1e-4)


def test_without_cache_resumed_a_hit_inserts_nothing(pipe, make_cache):
    cache = make_cache(planner={"cache_resumed": False})
    enable_flexcache(pipe, cache)
    run(pipe)
    run(pipe, prompt="a red fox runs through fresh snow in a pine forest")
    report = last_call_report(pipe)
    assert report.hit and not report.inserted and cache.stats()["resumed_inserts"] == 0


def test_uncacheable_calls_are_served_uncached(pipe, make_cache):
    cache = make_cache()
    enable_flexcache(pipe, cache)
    out = pipe(prompt_embeds=tiny_prompt_embeds(PROMPT), **CALL).frames
    assert out.shape == (1, 16, 2, 4, 4)
    assert "no prompt text" in last_call_report(pipe).bypass_reason
    run(pipe, latents=torch.randn(1, 16, 2, 4, 4))
    assert "latents" in last_call_report(pipe).bypass_reason
    run(pipe, flexcache_enabled=False)
    assert last_call_report(pipe).bypass_reason == "disabled for this call"
    assert cache.stats()["requests"] == 0


def test_tenant_per_call(pipe, make_cache):
    cache = make_cache()
    enable_flexcache(pipe, cache, tenant="alice")
    run(pipe)
    run(pipe, flexcache_tenant="bob")
    assert not last_call_report(pipe).hit
    run(pipe)
    assert last_call_report(pipe).hit and last_call_report(pipe).tenant == "alice"


def test_user_per_call_is_the_writer_and_other_users_pass_the_defences(pipe, make_cache):
    cache = make_cache(sharing={"min_askers": 2, "cross_user_max_fraction": 1.0})
    enable_flexcache(pipe, cache)
    run(pipe, flexcache_user="alice")
    run(pipe, flexcache_user="alice")
    assert last_call_report(pipe).hit and last_call_report(pipe).user == "alice"
    run(pipe)  # the tenant's default user: another user, its first ask (1 of 2 besides alice) is withheld
    assert not last_call_report(pipe).hit
    run(pipe, flexcache_user="carol")  # 2 of 2: served
    assert last_call_report(pipe).hit
    with pytest.raises(FlexCacheError, match="user must be"):
        run(pipe, flexcache_user="not a user id")


def test_latency_padding_makes_another_users_hit_take_as_long_as_a_full_run(pipe, make_cache):
    cache = make_cache(sharing={"latency_padding": True, "min_askers": 1})
    enable_flexcache(pipe, cache)
    run(pipe, flexcache_user="alice")
    full = last_call_report(pipe)
    run(pipe, flexcache_user="alice")
    own = last_call_report(pipe)
    assert own.hit and own.padded_seconds == 0  # her own entry reveals nothing to her
    run(pipe, flexcache_user="bob")
    hit = last_call_report(pipe)
    assert hit.hit and not full.hit and hit.padded_seconds > 0
    assert hit.seconds >= full.seconds * 0.999


def test_latency_padding_can_be_left_to_the_caller(pipe, make_cache, monkeypatch):
    import flexcache.integrations.diffusers as binding

    cache = make_cache(sharing={"latency_padding": True, "min_askers": 1})
    enable_flexcache(pipe, cache, pad_in_call=False)
    run(pipe, flexcache_user="alice")
    slept = []
    monkeypatch.setattr(binding.time, "sleep", slept.append)
    run(pipe, flexcache_user="bob")
    hit = last_call_report(pipe)
    assert hit.hit and hit.padded_seconds > 0 and slept == []  # the server holds the answer, not the pipeline


def test_user_callback_still_runs_and_its_latents_are_captured(pipe, make_cache):
    cache = make_cache()
    enable_flexcache(pipe, cache)
    seen = []

    def callback(p, i, t, kwargs):
        seen.append(i)
        return {"latents": kwargs["latents"] * 0.5} if i == 0 else kwargs

    run(pipe, callback_on_step_end=callback, callback_on_step_end_tensor_inputs=["latents"])
    assert seen == list(range(STEPS))
    assert len(last_call_report(pipe).inserted) == 5


def test_non_finite_latents_are_not_cached_but_video_is_served(pipe, make_cache):
    cache = make_cache()
    enable_flexcache(pipe, cache)

    def poison(p, i, t, kwargs):
        return {"latents": torch.full_like(kwargs["latents"], float("nan"))} if i == 0 else kwargs

    out = run(pipe, callback_on_step_end=poison)
    report = last_call_report(pipe)
    assert out.shape == (1, 16, 2, 4, 4)
    assert report.insert_error and "InvalidLatentError" in report.insert_error
    assert cache.stats()["entries"] == 0
    run(pipe)
    assert not last_call_report(pipe).hit  # nothing poisoned got stored


def test_scheduler_is_restored_after_a_hit(pipe, make_cache):
    cache = make_cache()
    original = pipe.scheduler
    enable_flexcache(pipe, cache)
    run(pipe)
    run(pipe)
    assert last_call_report(pipe).hit
    assert pipe.scheduler is original
    assert type(pipe.scheduler).__name__ == "FlowMatchEulerDiscreteScheduler"


def test_disable_restores_the_pipeline(pipe, make_cache):
    cls = type(pipe)
    enable_flexcache(pipe, make_cache())
    enable_flexcache(pipe, make_cache())  # re-enabling rebinds, never double-wraps
    assert type(pipe).__mro__[1] is cls
    disable_flexcache(pipe)
    assert type(pipe) is cls
    assert last_call_report(pipe) is None
    out = pipe(prompt_embeds=tiny_prompt_embeds(PROMPT), **CALL).frames  # plain diffusers again
    assert out.shape == (1, 16, 2, 4, 4)


def test_unsupported_pipeline_names_the_supported_ones(make_cache):
    class ImagePipeline:
        pass

    with pytest.raises(UnsupportedPipelineError, match="WanPipeline") as info:
        enable_flexcache(ImagePipeline(), make_cache())
    assert "ImagePipeline" in str(info.value) and "LTX2Pipeline" in str(info.value)  # and the planned ones


def test_the_readme_table_of_supported_pipelines_matches_the_adapters():
    import re
    from pathlib import Path

    from flexcache.integrations.diffusers import ADAPTERS

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    table = readme[readme.index("| pipeline | latent layout | tested with | region hits |"):]
    rows = [line for line in table.splitlines()[2:] if line.strip().startswith("|")]
    table_end = next(i for i, line in enumerate(table.splitlines()[2:]) if not line.strip().startswith("|"))
    named = {re.match(r"\s*\| `(\w+)`", line).group(1) for line in rows[:table_end]}
    assert named == set(ADAPTERS)


def test_the_signature_is_the_same_in_every_process():
    """Fleet workers must agree on the signature, whatever their hash seed (diffusers keeps a set-built list
    `_use_default_values` in scheduler configs; digesting it split a fleet into one signature per process)."""
    import os
    import subprocess
    import sys

    code = ("from flexcache.integrations.diffusers import ADAPTERS, _default_model_id\n"
            "from flexcache.integrations.tiny import tiny_wan_pipeline\n"
            "pipe = tiny_wan_pipeline()\n"
            "print(ADAPTERS['WanPipeline']._scheduler_id(pipe), _default_model_id(pipe))\n")
    outputs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                              env={**os.environ, "PYTHONHASHSEED": str(seed)}).stdout.strip().splitlines()[-1]
               for seed in (1, 2, 3)}
    assert len(outputs) == 1, outputs


@pytest.mark.parametrize("fraction", [0.2, 0.5])
def test_two_experts_resume_on_the_expert_of_the_full_schedule(make_cache, fraction):
    """Wan2.2 A14B-shaped: the boundary falls inside the resumed steps, and the expert follows the timestep."""
    pipe = tiny_wan_pipeline(seed=0, boundary_ratio=0.875)
    pipe.set_progress_bar_config(disable=True)
    import copy

    schedule = copy.deepcopy(pipe.scheduler)
    schedule.set_timesteps(STEPS)
    below = [float(t) for t in schedule.timesteps if t < 875]
    assert below and len(below) <= STEPS - round(fraction * STEPS)  # the second expert runs after K
    calls = {"transformer": 0, "transformer_2": 0}
    for name in calls:
        getattr(pipe, name).register_forward_pre_hook(lambda *_, name=name: calls.__setitem__(name, calls[name] + 1))
    cache = make_cache(codec={"name": "lossless"}, planner={"lookup": "full", "similarity_table": [[0.99, fraction]]})
    reference, _ = uninterrupted(pipe, seed=4321, capture_step=round(fraction * STEPS))
    enable_flexcache(pipe, cache)
    run(pipe, generator=torch.Generator().manual_seed(4321))
    calls.update(transformer=0, transformer_2=0)
    resumed = run(pipe)
    report = last_call_report(pipe)
    assert report.hit and report.skip_steps == round(fraction * STEPS)
    assert calls["transformer_2"] == len(below) and calls["transformer"] == STEPS - report.skip_steps - len(below)
    assert float((resumed - reference).norm() / reference.norm()) < 1e-5
    signature = next(iter(cache._records.values())).signature
    assert ("boundary_ratio", "0.875") in signature.extra


@pytest.mark.parametrize("fraction", [0.1, 0.3, 0.5])
def test_ti2v_shaped_pipeline_resumes_exactly(make_cache, fraction):
    """Wan2.2 TI2V-5B: one transformer, a timestep per token (expand_timesteps)."""
    pipe = tiny_wan_pipeline(seed=0, expand_timesteps=True)
    pipe.set_progress_bar_config(disable=True)
    reference, _ = uninterrupted(pipe, seed=55)
    cache = make_cache(codec={"name": "lossless"}, planner={"lookup": "full", "similarity_table": [[0.99, fraction]]})
    enable_flexcache(pipe, cache)
    run(pipe, generator=torch.Generator().manual_seed(55))
    resumed = run(pipe)
    report = last_call_report(pipe)
    assert report.hit and report.skip_steps == round(fraction * STEPS)
    assert float((resumed - reference).norm() / reference.norm()) < 1e-5
    assert ("expand_timesteps", "True") in next(iter(cache._records.values())).signature.extra
    run(pipe, height=48)
    assert not last_call_report(pipe).hit


def test_the_expert_boundary_is_in_the_signature(make_cache):
    cache = make_cache(codec={"name": "lossless"}, planner={"lookup": "full", "similarity_table": [[0.99, 0.3]]})
    one = tiny_wan_pipeline(seed=0, boundary_ratio=0.875)
    other = tiny_wan_pipeline(seed=0, boundary_ratio=0.5)
    for pipe in (one, other):
        pipe.set_progress_bar_config(disable=True)
        enable_flexcache(pipe, cache, model_id="tiny-wan22")
    run(one)
    run(other)
    assert not last_call_report(other).hit
    run(one)
    assert last_call_report(one).hit


def test_an_untested_diffusers_version_warns_once():
    import warnings

    from flexcache.integrations.diffusers import check_diffusers_version

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert check_diffusers_version("0.42.1")
        assert not check_diffusers_version("0.30.0")
        assert not check_diffusers_version("0.30.0")
        assert not check_diffusers_version("1.2.0.dev0")
    assert [str(w.message).count("diffusers 0.30.0") for w in caught] == [1, 0]


def test_the_tested_range_is_the_one_pyproject_states():
    import pathlib
    import re

    from flexcache.integrations.diffusers import TESTED_DIFFUSERS

    pyproject = pathlib.Path(__file__).resolve().parents[2] / "pyproject.toml"
    stated = re.search(r'^tested-diffusers = "([^"]+)"', pyproject.read_text(), re.M).group(1)
    low, high = TESTED_DIFFUSERS
    assert stated == f">={low[0]}.{low[1]},<{high[0]}.{high[1]}"
