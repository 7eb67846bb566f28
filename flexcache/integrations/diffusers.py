"""Plug a FlexCache into a Hugging Face diffusers video pipeline.

`enable_flexcache(pipe, cache)` wraps the pipeline's ``__call__`` without
copying pipeline code; it uses only the public surface (DESIGN.md, "Resuming"):

* miss: FlexCache draws the initial noise from the plan's seed, passes it as
  ``latents=``, and captures x_K after each checkpoint step through
  ``callback_on_step_end`` (through the scheduler's step where a pipeline has
  no step callback), with a multistep solver's state and a second latent the
  pipeline steps on a copy of its scheduler (LTX-2's audio, joined to the
  video in one cached latent); the captured latents are inserted after the run.
* hit: the cached x_K is passed as ``latents=`` and a copy of the scheduler
  whose ``set_timesteps`` drops the first K entries of ``timesteps`` and
  ``sigmas`` runs only steps K..N (`integrations.resuming`); a multistep
  solver gets its stored state back (`integrations.solver_state`) and a
  guider counts steps from K.

Calls that cannot be keyed (a list of prompts, ``num_videos_per_prompt > 1``,
caller-supplied ``latents``, only ``prompt_embeds`` without ``prompt``,
video-to-video input, several conditioning images) run uncached;
`last_call_report` says why. ``pipe(prompt=..., prompt_embeds=...)``
keys the cache on the prompt text and hands the pipeline only the embeddings,
which is how pipelines built without a text encoder are served.

Four keyword arguments are added to the pipeline call: ``flexcache_tenant``
(namespace for this call; default: the one given to `enable_flexcache`),
``flexcache_user`` (who makes it, default: the tenant; reuse of other users'
entries passes the ``sharing`` defences, `engine.guard`),
``flexcache_enabled=False`` (bypass the cache for this call) and
``flexcache_parts=(object, background)`` (the prompt's parts for decoupled
look-up, when the caller knows them better than the splitter).
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import logging
import re
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from flexcache.core.errors import FlexCacheError, UnsupportedPipelineError
from flexcache.engine.cache import DEFAULT_TENANT, FlexCache
from flexcache.engine.planner import Plan
from flexcache.integrations.adapter_table import (  # noqa: F401  (public here)
    ADAPTERS,
    PLANNED_PIPELINES,
)
from flexcache.integrations.adapter_table import adapter_for as _adapter_for
from flexcache.integrations.adapters import (  # noqa: F401  (public here)
    CogVideoXAdapter,
    LTXAdapter,
    PipelineAdapter,
    WanAdapter,
    _config_digest,
    _digest,
)
from flexcache.integrations.attention_masks import (  # noqa: F401  (public here: the toy world's benches use them)
    ObjectMaskRecorder,
    install_probes,
    object_token_weights,
    token_grid,
)
from flexcache.integrations.in_request import InRequestCacheError, in_request_call  # noqa: F401  (public here)
from flexcache.integrations.region_runs import TokenTimesteps, region_scheduler
from flexcache.integrations.resuming import (  # noqa: F401  (public here)
    capturing_scheduler,
    noise_level,
    offset_guider,
    recording_copies,
    sliced_scheduler,
)
from flexcache.integrations.solver_state import (  # noqa: F401  (public here: the solver bench uses them)
    capture_solver_state,
    check_compatible,
    resumed_multistep_scheduler,
    state_fields,
)
from flexcache.kernels.noise import seeded_noise

logger = logging.getLogger(__name__)


@dataclass
class CallReport:
    """What FlexCache did for one pipeline call."""

    prompt: str | None
    tenant: str
    user: str | None = None
    hit: bool = False
    skip_steps: int = 0
    num_steps: int = 0
    similarity: float | None = None
    object_similarity: float | None = None
    background_similarity: float | None = None
    via_parts: bool = False  # the hit's K came from the object/background look-up
    region: str | None = None  # a region hit: the part generated anew ("object", "background", "composed")
    # A hit under a multistep solver: "restored" (its state came with the entry: exact) or "restarted".
    solver_state: str | None = None
    in_request: list[str] = field(default_factory=list)  # in-request caches on the denoisers (`in_request`)
    source_prompt: str | None = None
    seed: int | None = None
    inserted: list[str] = field(default_factory=list)
    bypass_reason: str | None = None
    insert_error: str | None = None
    seconds: float = 0.0
    padded_seconds: float = 0.0  # slept so the call took as long as a full run (``sharing.latency_padding``)


# -- per-pipeline adapters: `integrations.adapter_table` ------------------------------


def _default_model_id(pipe: Any) -> str:
    name = getattr(pipe, "name_or_path", None)
    if name:
        return str(name)
    # Built in code: fall back to the architecture. Two differently trained
    # models with one architecture would share entries, so pass model_id.
    transformer = getattr(pipe, "transformer", None)
    config = transformer.config if transformer is not None else {}
    return f"{type(pipe).__name__}:{_config_digest(config)}"


# -- resuming: `integrations.resuming` ------------------------------------------------


class _CallContext:
    """State of one generation: its plan and the latents (and noise levels) captured so far."""

    def __init__(self, plan: Plan, user_callback: Callable | None, recorder: Any = None,
                 keep_solver_state: bool = True, adapter: PipelineAdapter | None = None,
                 args: dict[str, Any] | None = None) -> None:
        self.plan = plan
        self.adapter = adapter or PipelineAdapter()
        self.args = args or {}
        self.copy_outputs: Any = None  # a scheduler copy's step outputs (`resuming.recording_copies`), if recorded
        self.keep_solver_state = keep_solver_state
        self.user_callback = user_callback
        self.recorder = recorder
        self.masks: dict[int, torch.Tensor] = {}
        # A resumed run's step indexes count from K (its scheduler is sliced there).
        self.offset = plan.skip_steps
        self.checkpoints = set(plan.run_checkpoints)
        self.captured: dict[int, torch.Tensor] = {}
        self.sigmas: dict[int, float] = {}
        self.solver_states: dict[int, Any] = {}

    def on_step_end(self, pipe: Any, step_index: int, timestep: Any, callback_kwargs: dict) -> dict:
        outputs = callback_kwargs
        if self.user_callback is not None:
            outputs = self.user_callback(pipe, step_index, timestep, callback_kwargs) or {}
        steps_done = self.offset + step_index + 1
        if self.recorder is not None:
            self.recorder.step_done()
            if steps_done in self.checkpoints:
                mask = self.recorder.mask()
                if mask is not None:
                    self.masks[steps_done] = mask
        if steps_done in self.checkpoints:
            latents = outputs.get("latents", callback_kwargs["latents"])
            copy_output = None if self.copy_outputs is None else self.copy_outputs.latest
            latents = self.adapter.cache_latent(pipe, self.args, latents, copy_output)
            if latents is None:
                return outputs
            self.captured[steps_done] = latents.detach().clone()
            sigma = noise_level(pipe.scheduler, step_index + 1)
            if sigma is not None:
                self.sigmas[steps_done] = sigma
            state = capture_solver_state(pipe.scheduler) if self.keep_solver_state else None
            if state is not None:
                self.solver_states[steps_done] = state
        return outputs


class _Binding:
    """What `enable_flexcache` attaches to a pipeline."""

    def __init__(self, cache: FlexCache, adapter: PipelineAdapter, tenant: str, model_id: str,
                 original_class: type) -> None:
        self.cache = cache
        self.adapter = adapter
        self.tenant = tenant
        self.model_id = model_id
        self.original_class = original_class
        self.call_signature = inspect.signature(original_class.__call__)
        # Pipelines without step callbacks (HunyuanVideo 1.5) are captured through their scheduler's step.
        self.step_callbacks = "callback_on_step_end" in self.call_signature.parameters
        # A diffusers pipeline (its scheduler state) serves one call at a time.
        self.run_lock = threading.RLock()
        self.reports = threading.local()
        self.full_runs: dict[str, tuple[int, float]] = {}  # signature key -> (misses, seconds): latency padding

    def __call__(self, pipe: Any, args: tuple, kwargs: dict) -> Any:
        original_call = self.original_class.__call__
        tenant = kwargs.pop("flexcache_tenant", None) or self.tenant
        user = kwargs.pop("flexcache_user", None)
        enabled = kwargs.pop("flexcache_enabled", True)
        parts = kwargs.pop("flexcache_parts", None)
        bound = self.call_signature.bind(pipe, *args, **kwargs)
        bound.apply_defaults()
        call_args = dict(bound.arguments)
        call_args.pop("self", None)
        for name, parameter in self.call_signature.parameters.items():
            if parameter.kind is inspect.Parameter.VAR_KEYWORD:
                call_args.update(call_args.pop(name, {}))
        prompt = call_args.get("prompt")
        report = CallReport(prompt=prompt if isinstance(prompt, str) else None, tenant=tenant, user=user)
        self.reports.last = report
        started = time.perf_counter()

        reason = None if enabled else "disabled for this call"
        if reason is None:
            reason = (self._uncacheable_reason(call_args, self.adapter.prompt_embeds_name)
                      or self.adapter.uncacheable_reason(pipe, call_args))
        pipeline_args = dict(call_args)
        if pipeline_args.get("prompt_embeds") is not None:
            pipeline_args["prompt"] = None  # the pipeline refuses both; it gets the embeddings only
        if pipeline_args.get("negative_prompt_embeds") is not None:
            pipeline_args["negative_prompt"] = None
        if reason is not None:
            report.bypass_reason = reason
            # In-request caches still start clean; no checks: MagCache calibrates on such a call.
            with self.run_lock, in_request_call(self.adapter.denoisers(pipe), num_steps=None, skip_steps=0,
                                                check=False) as methods:
                report.in_request = methods
                result = original_call(pipe, **pipeline_args)
            report.seconds = time.perf_counter() - started
            return result

        signature = self.adapter.signature(pipe, call_args, self.model_id)
        generator = call_args.get("generator")
        seed = generator.initial_seed() if isinstance(generator, torch.Generator) else None
        plan = self.cache.plan(prompt, signature, tenant=tenant, user=user, seed=seed, parts=parts,
                               regions=self.adapter.supports_regions(pipe))
        device = pipe._execution_device
        start = self.cache.fetch_start(plan, device=device) if plan.hit else None
        latent = None if start is None else start.latent
        if plan.hit and latent is None:
            plan = plan.as_miss()
        report.num_steps = signature.num_steps
        report.similarity = plan.similarity

        capture = bool(plan.run_checkpoints) and (not plan.hit or self.cache.config.planner.cache_resumed)
        recorder = self._mask_recorder(pipe, plan, prompt, pipeline_args) if capture else None
        context = _CallContext(plan, pipeline_args.get("callback_on_step_end"), recorder,
                               self.cache.config.planner.solver_state and self.adapter.keeps_solver_state,
                               self.adapter, call_args)
        if capture and self.step_callbacks:
            tensor_inputs = list(pipeline_args.get("callback_on_step_end_tensor_inputs") or [])
            tensor_inputs = list(getattr(context.user_callback, "tensor_inputs", tensor_inputs))
            if "latents" not in tensor_inputs:
                tensor_inputs.append("latents")
            pipeline_args["callback_on_step_end"] = context.on_step_end
            pipeline_args["callback_on_step_end_tensor_inputs"] = tensor_inputs
        if plan.hit:
            report.hit, report.skip_steps, report.source_prompt = True, plan.skip_steps, plan.source_prompt
            report.object_similarity, report.background_similarity = plan.object_similarity, plan.background_similarity
            report.via_parts, report.region = plan.via_parts, plan.region
            pipeline_args.update(self.adapter.latent_arguments(pipe, call_args, latent, resume=True))
            with self.run_lock:
                original_scheduler = pipe.scheduler
                if state_fields(original_scheduler) is not None:
                    state = start.solver_state if self.adapter.keeps_solver_state else None
                    if state is not None and not check_compatible(original_scheduler, state):
                        state = None
                    report.solver_state = "restored" if state is not None else "restarted"
                    scheduler = resumed_multistep_scheduler(original_scheduler, plan.skip_steps, state)
                else:
                    scheduler = sliced_scheduler(original_scheduler, plan.skip_steps)
                timesteps = None
                if start.region is not None and start.method == "restart":
                    region = self.adapter.to_pipeline_latents(pipe, start.region, resume=False)
                    scheduler = region_scheduler(scheduler, original_scheduler, num_steps=signature.num_steps,
                                                 skip=plan.skip_steps, region=region,
                                                 catch_up=self.cache.config.planner.region_catch_up)
                    timesteps = TokenTimesteps(scheduler, region, self.adapter.patch_size(pipe))
                    timesteps.install(self.adapter.transformers(pipe))
                if capture and not self.step_callbacks:
                    scheduler = capturing_scheduler(scheduler, context, pipe)
                if capture and self.adapter.steps_scheduler_copies:
                    scheduler, context.copy_outputs = recording_copies(scheduler)
                # Bypass DiffusionPipeline.__setattr__, which would rewrite the saved config.
                pipe.__dict__["scheduler"] = scheduler
                original_guider = pipe.__dict__.get("guider")
                if original_guider is not None and hasattr(original_guider, "set_state"):
                    pipe.__dict__["guider"] = offset_guider(original_guider, plan.skip_steps)
                try:
                    with self._recording(pipe, recorder), self._in_request(pipe, report, signature, plan.skip_steps):
                        result = original_call(pipe, **pipeline_args)
                finally:
                    pipe.__dict__["scheduler"] = original_scheduler
                    if original_guider is not None:
                        pipe.__dict__["guider"] = original_guider
                    if timesteps is not None:
                        timesteps.remove()
        else:
            report.seed = plan.seed
            if self.adapter.draws_own_noise:
                if not isinstance(pipeline_args.get("generator"), torch.Generator):
                    pipeline_args["generator"] = torch.Generator().manual_seed(plan.seed)
            else:
                noise = seeded_noise(signature.latent_shape, plan.seed, device=device, dtype=signature.torch_dtype)
                pipeline_args.update(self.adapter.latent_arguments(pipe, call_args, noise, resume=False))
            with self.run_lock, self._recording(pipe, recorder):
                original_scheduler = pipe.scheduler
                scheduler = None
                if capture and not self.step_callbacks:
                    scheduler = capturing_scheduler(copy.deepcopy(original_scheduler), context, pipe)
                if capture and self.adapter.steps_scheduler_copies:
                    scheduler, context.copy_outputs = recording_copies(scheduler or copy.deepcopy(original_scheduler))
                if scheduler is not None:
                    pipe.__dict__["scheduler"] = scheduler
                try:
                    with self._in_request(pipe, report, signature, 0):
                        result = original_call(pipe, **pipeline_args)
                finally:
                    pipe.__dict__["scheduler"] = original_scheduler
        if context.captured:
            try:
                report.inserted = self.cache.insert(plan, context.captured, context.sigmas, context.masks,
                                                    context.solver_states)
            except FlexCacheError as exc:
                # The video was generated; only caching it failed. Serve it anyway.
                report.insert_error = f"{type(exc).__name__}: {exc}"
                logger.warning("flexcache: latents of %r were not cached: %s", prompt, exc)
        if self.cache.config.sharing.latency_padding:
            self._pad(report, started, signature.key())
        report.seconds = time.perf_counter() - started
        return result

    def _pad(self, report: CallReport, started: float, key: str) -> None:
        """Sleep until a hit has taken as long as a full run would (the mean of this binding's, or scaled)."""
        elapsed = time.perf_counter() - started
        with self.run_lock:
            count, total = self.full_runs.get(key, (0, 0.0))
            if not report.hit:
                self.full_runs[key] = (count + 1, total + elapsed)
                return
        steps_run = max(1, report.num_steps - report.skip_steps)
        target = max(total / count if count else 0.0, elapsed * report.num_steps / steps_run)
        if target > elapsed:
            report.padded_seconds = target - elapsed
            time.sleep(report.padded_seconds)

    def _mask_recorder(self, pipe: Any, plan: Plan, prompt: str, args: dict[str, Any]) -> Any:
        """A recorder of the object's cross-attention for this run, or None where no mask can be made.

        Needs decoupled look-up (the object part), an adapter that knows the
        transformer, and the pipeline's tokenizer (to find the object's tokens
        in the prompt embeddings, also when the caller passed the embeddings).
        """
        transformers = self.adapter.transformers(pipe)
        tokenizer = getattr(pipe, "tokenizer", None)
        if plan.parts is None or not transformers or tokenizer is None or not self.cache.config.planner.regions:
            return None

        embeds = args.get("prompt_embeds")
        length = int(embeds.shape[1]) if embeds is not None else int(args.get("max_sequence_length") or 512)
        weights = object_token_weights(tokenizer, prompt, plan.parts[0], length)
        if weights is None:
            return None
        grid = token_grid(plan.signature.latent_shape, self.adapter.patch_size(pipe), plan.signature.frame_axis)
        return ObjectMaskRecorder(weights, grid)

    @contextlib.contextmanager
    def _in_request(self, pipe: Any, report: CallReport, signature: Any, skip_steps: int):
        """The call's in-request caches, reset and offset to the resumed run's first step (`in_request`)."""
        with in_request_call(self.adapter.denoisers(pipe), num_steps=signature.num_steps, skip_steps=skip_steps,
                             steps_before=lambda i: self.adapter.steps_before(pipe, i, skip_steps)) as methods:
            report.in_request = methods
            yield

    @contextlib.contextmanager
    def _recording(self, pipe: Any, recorder: Any):
        """Point the transformers' cross-attention probes at `recorder` for one call (run lock held)."""
        if recorder is None:
            yield
            return

        states = [install_probes(t) for t in self.adapter.transformers(pipe)]
        for state in states:
            state.recorder = recorder
        try:
            yield
        finally:
            for state in states:
                state.recorder = None

    @staticmethod
    def _uncacheable_reason(args: dict[str, Any], embeds_name: str) -> str | None:
        prompt = args.get("prompt")
        if prompt is None:
            return "no prompt text to key the cache on (pass prompt= alongside prompt_embeds=)"
        if not isinstance(prompt, str):
            return "batched prompts are served uncached; call once per prompt"
        if args.get("num_videos_per_prompt") not in (None, 1):
            return "num_videos_per_prompt > 1 is served uncached"
        if args.get("latents") is not None:
            return "caller-supplied latents are served uncached"
        for name in ("video", "conditions"):
            if args.get(name) is not None:
                return f"video-to-video input ({name}=) is served uncached"
        embeds = args.get(embeds_name)
        if embeds is not None and embeds.shape[0] != 1:
            return f"batched {embeds_name} are served uncached"
        return None


# -- public API ---------------------------------------------------------------------


# The diffusers releases the adapters are tested against ([tool.flexcache] in pyproject.toml).
TESTED_DIFFUSERS = ((0, 42), (0, 43))  # [low, high)
_VERSION_WARNED: set[str] = set()


def check_diffusers_version(version: str | None = None) -> bool:
    """Whether `version` (default: the installed diffusers) is in the tested range; warns once per version if not."""
    if version is None:
        import diffusers

        version = diffusers.__version__
    parts = tuple(int(p) for p in re.findall(r"\d+", version)[:2])
    low, high = TESTED_DIFFUSERS
    tested = low <= parts < high
    if not tested and version not in _VERSION_WARNED:
        _VERSION_WARNED.add(version)
        warnings.warn(f"flexcache's pipeline adapters are tested with diffusers >={'.'.join(map(str, low))},"
                      f"<{'.'.join(map(str, high))}; this is diffusers {version}. Latent shapes come from the "
                      "pipelines' own code, but check the resume-equivalence tests before serving.", UserWarning,
                      stacklevel=3)
    return tested


def enable_flexcache(pipe: Any, cache: FlexCache, *, tenant: str = DEFAULT_TENANT,
                     model_id: str | None = None) -> Any:
    """Serve `pipe`'s calls through `cache`; returns the same pipeline object.

    Args:
        pipe: a diffusers pipeline of a supported class (`ADAPTERS`).
        cache: the `FlexCache` to use.
        tenant: default namespace for calls (override per call with
            ``flexcache_tenant=``).
        model_id: identifies the weights in the generation signature; defaults
            to the pipeline's ``name_or_path``. Pass it for pipelines built in
            code, which otherwise are identified by architecture only.

    Returns:
        `pipe`, now caching. `disable_flexcache(pipe)` undoes it.

    Raises:
        UnsupportedPipelineError: no adapter for this pipeline class.

    Example:
        >>> from flexcache import FlexCache, enable_flexcache          # doctest: +SKIP
        >>> pipe = enable_flexcache(WanPipeline.from_pretrained(...), FlexCache())  # doctest: +SKIP
        >>> video = pipe(prompt="a red fox running through snow").frames[0]  # doctest: +SKIP
    """
    if not isinstance(cache, FlexCache):
        raise UnsupportedPipelineError(f"cache must be a FlexCache; got {type(cache).__name__}")
    adapter = _adapter_for(pipe)
    check_diffusers_version()
    existing: _Binding | None = pipe.__dict__.get("_flexcache_binding")
    original_class = existing.original_class if existing else type(pipe)
    binding = _Binding(cache, adapter, tenant, model_id or _default_model_id(pipe), original_class)

    def __call__(self, *args, **kwargs):
        return self.__dict__["_flexcache_binding"](self, args, kwargs)

    __call__.__doc__ = original_class.__call__.__doc__
    __call__.__signature__ = inspect.signature(original_class.__call__)  # type: ignore[attr-defined]
    pipe.__dict__["_flexcache_binding"] = binding
    # Python looks __call__ up on the type, so the instance gets a one-off subclass.
    pipe.__class__ = type(original_class.__name__, (original_class,), {"__call__": __call__,
                                                                        "__module__": original_class.__module__})
    return pipe


def disable_flexcache(pipe: Any) -> Any:
    """Undo `enable_flexcache`; the cache and its entries are left as they are."""
    binding: _Binding | None = pipe.__dict__.pop("_flexcache_binding", None)
    if binding is not None:
        pipe.__class__ = binding.original_class
    return pipe


def last_call_report(pipe: Any) -> CallReport | None:
    """The `CallReport` of the last call this thread made through `pipe`."""
    binding: _Binding | None = pipe.__dict__.get("_flexcache_binding")
    return getattr(binding.reports, "last", None) if binding else None
