"""Fail open: an error in the cache path never fails a generation (tiny random-weight WanPipeline, CPU).

Each failure is injected where the cache path runs (embedder, plan, fetch, the resumed run, the mask
probe, capture, insert); the call must return the video plain diffusers returns, count the error by
stage and name it in the call report; ``strict`` re-raises instead.
"""

from __future__ import annotations

import io

import pytest
import torch

from flexcache import enable_flexcache, get_flexcache, last_call_report
from flexcache.integrations import attention_masks
from flexcache.integrations.tiny import tiny_prompt_embeds, tiny_wan_pipeline
from flexcache.kernels.noise import seeded_noise
from tests.integrations.test_diffusers import CALL, PROMPT, STEPS, run  # the same tiny call

@pytest.fixture
def pipe():
    pipeline = tiny_wan_pipeline(seed=0)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def plain(pipe, seed, prompt=PROMPT):
    """What plain diffusers makes of the call (the cache bypassed) from a fresh generator seeded `seed`."""
    return run(pipe, prompt, generator=torch.Generator().manual_seed(seed), flexcache_enabled=False)


def full_run(pipe, seed, prompt=PROMPT):
    """The uncached full run a cached miss makes: FlexCache's seeded (Philox) noise for `seed`."""
    return run(pipe, prompt, latents=seeded_noise((16, 2, 4, 4), seed).unsqueeze(0), flexcache_enabled=False)


def _cache(make_cache, **overrides):
    return make_cache(codec={"name": "lossless"}, **overrides)


class Boom(RuntimeError):
    pass


def _raise(*_args, **_kwargs):
    raise Boom("injected failure")


def test_an_embedder_error_runs_the_call_uncached_as_plain_diffusers(pipe, make_cache, monkeypatch):
    cache = _cache(make_cache)
    enable_flexcache(pipe, cache)
    expected = plain(pipe, 5)
    monkeypatch.setattr(cache.embedder, "embed", _raise)
    out = run(pipe, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    report = last_call_report(pipe)
    assert report.cache_error.startswith("plan: Boom: injected failure") and not report.hit
    assert cache.stats()["cache_errors"] == {"plan": 1} and cache.stats()["entries"] == 0


def test_strict_re_raises_the_cache_error(pipe, make_cache, monkeypatch):
    cache = _cache(make_cache, strict=True)
    enable_flexcache(pipe, cache)
    monkeypatch.setattr(cache.embedder, "embed", _raise)
    with pytest.raises(Boom):
        run(pipe)


def test_a_fetch_error_serves_the_hit_as_a_miss_and_keeps_the_entries(pipe, make_cache, monkeypatch):
    cache = _cache(make_cache)
    enable_flexcache(pipe, cache)
    run(pipe, generator=torch.Generator().manual_seed(3))
    entries = cache.stats()["entries"]
    assert entries > 0
    monkeypatch.setattr(cache, "fetch_start", _raise)
    out = run(pipe, generator=torch.Generator().manual_seed(3))
    report = last_call_report(pipe)
    assert not report.hit and report.cache_error.startswith("fetch:")
    torch.testing.assert_close(out, full_run(pipe, 3), rtol=1e-5, atol=1e-5)  # the miss is the full run
    assert cache.stats()["cache_errors"] == {"fetch": 1} and cache.stats()["entries"] == entries


def test_an_insert_error_after_the_run_keeps_the_video(pipe, make_cache, monkeypatch):
    """A CUDA OOM while encoding, after all N steps, must not throw the finished video away."""
    cache = _cache(make_cache)
    enable_flexcache(pipe, cache)
    monkeypatch.setattr(cache.codec, "encode", lambda *a, **k: _raise())
    out = run(pipe, generator=torch.Generator().manual_seed(4))
    report = last_call_report(pipe)
    assert report.insert_error == "Boom: injected failure" and report.cache_error.startswith("insert:")
    assert out.shape == (1, 16, 2, 4, 4) and bool(torch.isfinite(out).all())
    assert cache.stats()["cache_errors"] == {"insert": 1}


def test_a_resumed_run_that_fails_inside_the_pipeline_is_run_again_uncached(pipe, make_cache, monkeypatch):
    cache = _cache(make_cache)
    binding = enable_flexcache(pipe, cache).__dict__["_flexcache_binding"]
    run(pipe, generator=torch.Generator().manual_seed(6))
    # A start latent of the wrong shape: the pipeline itself fails on it.
    monkeypatch.setattr(binding.adapter, "latent_arguments",
                        lambda pipe, args, latent, resume: {"latents": torch.randn(1, 3, 3, 3, 3)})
    out = run(pipe, generator=torch.Generator().manual_seed(6))
    report = last_call_report(pipe)
    assert not report.hit and report.cache_error.startswith("run:")
    torch.testing.assert_close(out, plain(pipe, 6), rtol=0, atol=0)
    assert cache.stats()["cache_errors"] == {"run": 1}


def test_a_pipeline_error_of_the_callers_own_reaches_the_caller_uncounted(pipe, make_cache):
    """Bad input the pipeline refuses without the cache too is the pipeline's error, not the cache's."""
    cache = _cache(make_cache)
    enable_flexcache(pipe, cache)
    with pytest.raises(ValueError, match="divisible by 16"):
        run(pipe, height=33)
    assert cache.stats()["cache_errors"] == {}


def test_the_callers_callback_error_propagates_once(pipe, make_cache):
    cache = _cache(make_cache)
    enable_flexcache(pipe, cache)
    calls = []

    def callback(pipe, step, timestep, kwargs):
        calls.append(step)
        raise Boom("the caller's own")

    with pytest.raises(Boom, match="the caller's own"):
        run(pipe, callback_on_step_end=callback)
    assert calls == [0] and cache.stats()["cache_errors"] == {}


def test_a_failing_mask_probe_leaves_the_video_unchanged_and_stores_no_mask(pipe, make_cache, monkeypatch):
    from flexcache.engine.splitter import PromptParts

    from transformers import AutoTokenizer

    from flexcache.engine import SentenceTransformerEmbedder

    pipe.register_modules(tokenizer=AutoTokenizer.from_pretrained(SentenceTransformerEmbedder.packaged_model_path()))
    cache = _cache(make_cache)
    enable_flexcache(pipe, cache)
    expected = full_run(pipe, 8)
    monkeypatch.setattr(attention_masks, "object_attention_mass", _raise)
    out = run(pipe, generator=torch.Generator().manual_seed(8), flexcache_parts=PromptParts("red fox", "pine forest"))
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    report = last_call_report(pipe)
    assert report.inserted and report.cache_error.startswith("mask_probe:")
    assert all(entry.mask is None for entry in cache._entries.values())
    assert cache.stats()["cache_errors"] == {"mask_probe": 1}


def test_a_capture_error_stops_capturing_and_the_run_goes_on(pipe, make_cache, monkeypatch):
    cache = _cache(make_cache)
    binding = enable_flexcache(pipe, cache).__dict__["_flexcache_binding"]
    monkeypatch.setattr(binding.adapter, "cache_latent", _raise)
    out = run(pipe, generator=torch.Generator().manual_seed(9))
    report = last_call_report(pipe)
    assert not report.inserted and report.cache_error.startswith("capture:")
    torch.testing.assert_close(out, full_run(pipe, 9), rtol=1e-5, atol=1e-5)
    assert cache.stats()["cache_errors"] == {"capture": 1}


def test_errors_are_exported_by_stage(pipe, make_cache, monkeypatch):
    from prometheus_client import CollectorRegistry, generate_latest

    cache = _cache(make_cache)
    enable_flexcache(pipe, cache)
    monkeypatch.setattr(cache.embedder, "embed", _raise)
    run(pipe)
    registry = CollectorRegistry()
    registry.register(cache.metrics_collector())
    text = generate_latest(registry).decode()
    assert 'flexcache_cache_errors_total{cache="flexcache",stage="plan"} 1.0' in text
    assert 'flexcache_cache_errors_total{cache="flexcache",stage="insert"} 0.0' in text


# -- calls that cannot be keyed run uncached, with the right reason -----------------------------


@pytest.mark.parametrize("overrides, reason", [
    (dict(num_inference_steps=1), "1 step(s) has nothing to skip or cache"),
    (dict(prompt=123), "the prompt is a int, not text"),
    (dict(prompt="   "), "an empty prompt"),
    (dict(prompt=[PROMPT]), "batched prompts (a list)"),
])
def test_unkeyable_calls_run_uncached_with_an_accurate_reason(pipe, make_cache, overrides, reason):
    cache = _cache(make_cache)
    enable_flexcache(pipe, cache)
    prompt = overrides.pop("prompt", PROMPT)
    out = pipe(prompt=prompt, prompt_embeds=tiny_prompt_embeds(PROMPT), **{**CALL, **overrides}).frames
    assert out.shape[0] == 1 and bool(torch.isfinite(out).all())
    assert reason in last_call_report(pipe).bypass_reason
    assert cache.stats()["requests"] == 0 and cache.stats()["cache_errors"] == {}


def test_a_bad_tenant_name_is_a_typed_error_before_anything_runs(pipe, make_cache):
    from flexcache import InvalidPromptError

    enable_flexcache(pipe, _cache(make_cache))
    with pytest.raises(InvalidPromptError):
        run(pipe, flexcache_tenant="no spaces allowed")


# -- generators and seeds behave as in diffusers -----------------------------------------------


def test_a_reused_generator_gives_each_miss_other_noise(pipe, make_cache):
    cache = _cache(make_cache)
    enable_flexcache(pipe, cache)
    generator = torch.Generator().manual_seed(11)
    first = run(pipe, "a lighthouse on a cliff at dusk", generator=generator)
    seed_first = last_call_report(pipe).seed
    second = run(pipe, "a sailboat crossing a calm bay", generator=generator)
    seed_second = last_call_report(pipe).seed
    assert seed_first == 11 and seed_second not in (None, 11)
    assert not torch.allclose(first, second)
    # A fresh generator with the same seed repeats the first seed (a repeatable run).
    run(pipe, "a cactus in the desert", generator=torch.Generator().manual_seed(11))
    assert last_call_report(pipe).seed == 11


def test_another_seed_is_honoured_on_a_hit(pipe, make_cache):
    """Asking for another seed ("regenerate") must give another video, not the cached one."""
    cache = _cache(make_cache)
    enable_flexcache(pipe, cache)
    first = run(pipe, generator=torch.Generator().manual_seed(1))
    assert last_call_report(pipe).inserted
    again = run(pipe, generator=torch.Generator().manual_seed(1))
    assert last_call_report(pipe).hit  # the same seed: resumed from its own entry
    torch.testing.assert_close(again, first, rtol=1e-4, atol=1e-4)
    other = run(pipe, generator=torch.Generator().manual_seed(2))
    report = last_call_report(pipe)
    assert not report.hit and report.seed == 2
    torch.testing.assert_close(other, full_run(pipe, 2), rtol=1e-5, atol=1e-5)
    # No seed of its own: any entry may serve.
    run(pipe)
    assert last_call_report(pipe).hit


def test_a_server_that_always_seeds_can_say_the_seed_is_not_the_users(pipe, make_cache):
    cache = _cache(make_cache)
    enable_flexcache(pipe, cache)
    run(pipe, generator=torch.Generator().manual_seed(1))
    run(pipe, generator=torch.Generator().manual_seed(2), flexcache_any_seed=True)
    assert last_call_report(pipe).hit


def test_cross_seed_max_fraction_caps_another_seeds_entry(pipe, make_cache):
    cache = _cache(make_cache, planner={"cross_seed_max_fraction": 0.2})
    enable_flexcache(pipe, cache)
    run(pipe, generator=torch.Generator().manual_seed(1))
    run(pipe, generator=torch.Generator().manual_seed(2))
    report = last_call_report(pipe)
    assert report.hit and 0 < report.skip_steps <= 2
    run(pipe, generator=torch.Generator().manual_seed(1))
    assert last_call_report(pipe).skip_steps > 2  # its own seed: the rule's depth


# -- what the caller sees --------------------------------------------------------------------


def test_a_hits_progress_bar_ends_full(pipe, make_cache, monkeypatch):
    from diffusers import DiffusionPipeline

    bars = []
    original = DiffusionPipeline.progress_bar

    def recording(self, iterable=None, total=None):
        bar = original(self, iterable=iterable, total=total)
        bars.append(bar)
        return bar

    monkeypatch.setattr(DiffusionPipeline, "progress_bar", recording)
    pipe.set_progress_bar_config(file=io.StringIO())  # shown (a disabled bar counts nothing), but not here
    enable_flexcache(pipe, _cache(make_cache))
    run(pipe, generator=torch.Generator().manual_seed(1))
    run(pipe, generator=torch.Generator().manual_seed(1))
    assert last_call_report(pipe).skip_steps > 0
    assert [(bar.n, bar.total) for bar in bars] == [(STEPS, STEPS), (STEPS, STEPS)]


def test_enable_flexcache_builds_a_default_cache(pipe, monkeypatch):
    monkeypatch.setenv("FLEXCACHE_EMBEDDER__DEVICE", "cpu")
    monkeypatch.setenv("FLEXCACHE_CODEC__NAME", "lossless")
    enable_flexcache(pipe)
    cache = get_flexcache(pipe)
    assert cache is not None and cache.config.codec.name == "lossless"
    run(pipe, generator=torch.Generator().manual_seed(1))
    run(pipe, generator=torch.Generator().manual_seed(1))
    assert last_call_report(pipe).hit
    cache.close()
