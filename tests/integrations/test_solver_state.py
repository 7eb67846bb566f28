"""Multistep solvers (UniPC, DPM-Solver++) resume exactly: their state is stored with the entry and restored."""

from __future__ import annotations

import pytest
import torch

from flexcache import enable_flexcache, last_call_report
from flexcache.core.errors import CorruptBlobError, InvalidLatentError
from flexcache.engine import (
    GenerationSignature,
    SolverState,
    encode_bundle,
    split_bundle,
)
from flexcache.integrations.solver_state import (
    capture_solver_state,
    check_compatible,
    state_fields,
)
from flexcache.integrations.tiny import tiny_prompt_embeds, tiny_wan_pipeline
from flexcache.kernels.noise import seeded_noise

PROMPT = "a red fox running through fresh snow in a pine forest"
STEPS = 10
CALL = dict(height=32, width=32, num_frames=5, num_inference_steps=STEPS, guidance_scale=1.0, output_type="latent")
SHAPE = (16, 2, 4, 4)


def multistep(name: str):
    from diffusers import DPMSolverMultistepScheduler, UniPCMultistepScheduler

    # Wan2.1's published scheduler config (UniPC, flow sigmas, shift 3), and DPM-Solver++ on the same sigmas.
    kind = UniPCMultistepScheduler if name == "unipc" else DPMSolverMultistepScheduler
    return kind(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0, solver_order=2)


def pipeline(solver: str, **kwargs):
    pipe = tiny_wan_pipeline(seed=0, **kwargs)
    pipe.scheduler = multistep(solver)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run(pipe, **overrides):
    return pipe(prompt=PROMPT, prompt_embeds=tiny_prompt_embeds(PROMPT), **{**CALL, **overrides}).frames


def uninterrupted(pipe, seed):
    return pipe(prompt_embeds=tiny_prompt_embeds(PROMPT), latents=seeded_noise(SHAPE, seed).unsqueeze(0),
                **CALL).frames


def relative(a, b):
    return float((a - b).norm() / b.norm())


def _cache(make_cache, fraction, **planner):
    return make_cache(codec={"name": "lossless"},
                      planner={"lookup": "full", "similarity_table": [[0.99, fraction]], **planner})


@pytest.mark.parametrize("solver", ["unipc", "dpm++"])
@pytest.mark.parametrize("fraction", [0.2, 0.3, 0.5])
def test_a_restored_solver_state_resumes_the_uninterrupted_run(make_cache, solver, fraction):
    pipe = pipeline(solver)
    reference = uninterrupted(pipe, 77)
    enable_flexcache(pipe, _cache(make_cache, fraction))
    first = run(pipe, generator=torch.Generator().manual_seed(77))
    assert relative(first, reference) < 1e-6
    second = run(pipe)
    report = last_call_report(pipe)
    assert report.hit and report.skip_steps == round(fraction * STEPS) and report.solver_state == "restored"
    assert relative(second, reference) < 1e-6


@pytest.mark.parametrize("solver", ["unipc", "dpm++"])
def test_without_the_state_the_solver_restarts_and_lands_elsewhere(make_cache, solver):
    with_state, without = pipeline(solver), pipeline(solver)
    reference = uninterrupted(with_state, 77)
    caches = {}
    for name, pipe, keep in (("with", with_state, True), ("without", without, False)):
        caches[name] = _cache(make_cache, 0.4, solver_state=keep)
        enable_flexcache(pipe, caches[name])
        run(pipe, generator=torch.Generator().manual_seed(77))
    restarted = run(without)
    assert last_call_report(without).solver_state == "restarted"
    assert relative(restarted, reference) > 1e-4  # the gap the stored state closes
    sizes = {name: sum(e.nbytes for e in cache._entries.values()) for name, cache in caches.items()}
    assert sizes["with"] > sizes["without"]


def test_a_compressed_state_stays_close(make_cache):
    pipe = pipeline("unipc")
    reference = uninterrupted(pipe, 77)
    enable_flexcache(pipe, make_cache(planner={"lookup": "full", "similarity_table": [[0.99, 0.4]]}))
    run(pipe, generator=torch.Generator().manual_seed(77))
    resumed = run(pipe)
    assert last_call_report(pipe).solver_state == "restored"
    assert relative(resumed, reference) < 0.05


def test_two_experts_under_unipc_resume_exactly(make_cache):
    """Wan2.2 A14B ships UniPC: the boundary falls inside the resumed steps."""
    pipe = pipeline("unipc", boundary_ratio=0.875)
    reference = uninterrupted(pipe, 9)
    enable_flexcache(pipe, _cache(make_cache, 0.2))
    run(pipe, generator=torch.Generator().manual_seed(9))
    resumed = run(pipe)
    assert last_call_report(pipe).solver_state == "restored"
    assert relative(resumed, reference) < 1e-6


def test_a_state_from_another_solver_is_not_restored(make_cache):
    cache = _cache(make_cache, 0.4)
    writer, reader = pipeline("unipc"), pipeline("dpm++")
    for pipe in (writer, reader):
        enable_flexcache(pipe, cache, model_id="tiny")
    run(writer)
    run(reader)  # another scheduler: another signature, a miss
    assert not last_call_report(reader).hit
    state = capture_state_after_one_step(writer.scheduler)
    assert check_compatible(multistep("unipc"), state) and not check_compatible(multistep("dpm++"), state)


def capture_state_after_one_step(scheduler):
    import copy

    scheduler = copy.deepcopy(scheduler)
    scheduler.set_timesteps(STEPS)
    sample = torch.randn(1, *SHAPE)
    scheduler.step(torch.randn(1, *SHAPE), scheduler.timesteps[0], sample)
    return capture_solver_state(scheduler)


def test_one_step_solvers_keep_no_state():
    pipe = tiny_wan_pipeline(seed=0)
    assert state_fields(pipe.scheduler) is None and capture_solver_state(pipe.scheduler) is None


def _signature():
    return GenerationSignature("m", "s", STEPS, 32, 32, 5, SHAPE)


def _state():
    torch.manual_seed(0)
    return SolverState("UniPCMultistepScheduler",
                       {"model_outputs": [{"tensor": "model_outputs.0"}, None], "lower_order_nums": 1,
                        "timestep_list": [None, {"value": 900.0, "dtype": "float32"}],
                        "last_sample": {"tensor": "last_sample"}, "this_order": 1},
                       {"model_outputs.0": torch.randn(SHAPE), "last_sample": torch.randn(SHAPE)})


def test_the_engine_stores_and_returns_the_state(make_cache):
    cache = make_cache(codec={"name": "lossless"}, planner={"lookup": "full", "similarity_table": [[0.99, 0.4]]})
    plan = cache.plan(PROMPT, _signature(), seed=3)
    state = _state()
    cache.insert(plan, {4: torch.randn(SHAPE)}, solver_states={4: state})
    start = cache.fetch_start(cache.plan(PROMPT, _signature()))
    assert start.solver_state.scalars == state.scalars
    for name, tensor in state.tensors.items():
        torch.testing.assert_close(start.solver_state.tensors[name], tensor, rtol=0, atol=0)


def test_a_state_of_the_wrong_shape_is_refused_and_nothing_is_stored(make_cache):
    cache = make_cache(codec={"name": "lossless"})
    plan = cache.plan(PROMPT, _signature(), seed=3)
    state = _state()
    state.tensors["last_sample"] = torch.randn(3, 3)
    with pytest.raises(InvalidLatentError, match="last_sample"):
        cache.insert(plan, {4: torch.randn(SHAPE)}, solver_states={4: state})
    assert not cache._entries


def test_a_damaged_bundle_is_a_corrupt_blob():
    latent = b"FXLC" + bytes(60)
    bundle = encode_bundle(latent, "UniPCMultistepScheduler", {"last_sample": {"tensor": "last_sample"}},
                           {"last_sample": b"x" * 40})
    blob, state = split_bundle(bundle)
    assert bytes(blob) == latent and state[2].parts == {"last_sample": b"x" * 40} and not state[2].predictions
    assert split_bundle(latent)[1] is None  # entries without state are the latent blob alone
    for damaged in (bundle[:20], bundle[:len(bundle) - len(latent)], bundle[:11] + b"\xff" + bundle[12:]):
        with pytest.raises(CorruptBlobError):
            split_bundle(damaged)
    dangling = encode_bundle(latent, "UniPCMultistepScheduler", {"last_sample": {"tensor": "gone"}}, {})
    with pytest.raises(CorruptBlobError, match="gone"):
        split_bundle(dangling)


def test_a_device_latent_stays_a_device_blob_inside_the_bundle():
    from flexcache.core.blob import DeviceBlob

    latent = b"FXLC" + bytes(range(60))
    device_latent = DeviceBlob(torch.frombuffer(bytearray(latent), dtype=torch.uint8), latent[:8])
    bundle = encode_bundle(device_latent, "DPMSolverMultistepScheduler", {"lower_order_nums": 2},
                           {"model_outputs.0": b"y" * 24})
    assert isinstance(bundle, DeviceBlob)
    blob, (solver, scalars, coded) = split_bundle(bundle)
    assert isinstance(blob, DeviceBlob) and blob.to_host() == latent  # a suffix of the device blob, no copy
    assert solver == "DPMSolverMultistepScheduler" and scalars == {"lower_order_nums": 2}
    assert coded.parts == {"model_outputs.0": b"y" * 24}
