"""Plug a FlexCache into a Hugging Face diffusers video pipeline.

`enable_flexcache(pipe, cache)` wraps the pipeline's ``__call__`` without
copying pipeline code; it uses only the public surface (`latents=`, the step callback, the scheduler):

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

Fail open: an error anywhere in the cache path (the key, plan, fetch, the resumed run's set-up or the
run itself, the mask probe, capture, insert) never fails the generation. Before the run, the call runs
as plain diffusers would (the caller's generator restored); after it, the video is kept. Each error is
counted by stage (`FlexCache.count_error`) and named in `CallReport.cache_error`; ``strict`` in the
cache's config re-raises instead. Only a combination that would make a wrong video (an in-request cache
that cannot be offset) refuses to run; the caller's own callback errors reach the caller.

Seeds: a caller's ``generator`` gives the run's seed (`calls.seed_from`), and is advanced as a
diffusers call advances it. A caller-seeded call resumes only from entries of its own seed (see
``planner.cross_seed_max_fraction``); ``flexcache_any_seed=True`` says the seed is not the user's choice.

Calls that cannot be keyed (a list of prompts, ``num_videos_per_prompt > 1``,
caller-supplied ``latents``, only ``prompt_embeds`` without ``prompt``,
video-to-video input, several conditioning images) run uncached;
`last_call_report` says why. ``pipe(prompt=..., prompt_embeds=...)``
keys the cache on the prompt text and hands the pipeline only the embeddings,
which is how pipelines built without a text encoder are served.

Six keyword arguments are added to the pipeline call: ``flexcache_any_seed``, ``flexcache_tenant``
(namespace for this call; default: the one given to `enable_flexcache`),
``flexcache_user`` (who makes it, default: the tenant; reuse of other users'
entries passes the ``sharing`` defences, `engine.guard`),
``flexcache_enabled=False`` (bypass the cache for this call) and
``flexcache_parts=(object, background)`` (the prompt's parts for decoupled
look-up, when the caller knows them better than the splitter) and
``flexcache_text_conditioned`` (whether the run is conditioned on the prompt
text alone; default: True unless the caller passes ``prompt_embeds``. A service
that computes the embeddings from the prompt itself passes True; its entries
then serve other users at the rules' depth, `FlexCache.insert`).
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
from typing import Any

import torch

from flexcache.core.errors import UncacheableCallError, UnsupportedPipelineError
from flexcache.engine.cache import DEFAULT_TENANT, FlexCache
from flexcache.engine.guard import check_identity
from flexcache.engine.splitter import parts_from
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
from flexcache.integrations.in_request import uncached_reason as in_request_uncached_reason
from flexcache.integrations.calls import (  # noqa: F401  (CallReport is public here)
    CallContext,
    CallReport,
    advance,
    progress_from,
    seed_from,
    single_generator,
    swap_component,
    uncacheable_reason,
)
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
from flexcache.integrations.audits import audit_queue, default_video  # noqa: F401  (default_video: public here)
from flexcache.kernels.noise import seeded_noise

logger = logging.getLogger(__name__)


_NOTHING = object()  # no pipeline result yet


# -- per-pipeline adapters: `integrations.adapter_table` ------------------------------


def _default_model_id(pipe: Any) -> str:
    name = getattr(pipe, "name_or_path", None)
    if name:
        return str(name)
    # Built in code: fall back to the architecture (enable_flexcache warns). The signature's weights
    # fingerprint still keeps differently trained models with one architecture apart.
    transformer = getattr(pipe, "transformer", None)
    config = transformer.config if transformer is not None else {}
    return f"{type(pipe).__name__}:{_config_digest(config)}"


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
        self.pad_in_call = True  # else the caller holds the answer (`CallReport.padded_seconds`)
        # Pipelines without step callbacks (HunyuanVideo 1.5) are captured through their scheduler's step.
        self.step_callbacks = "callback_on_step_end" in self.call_signature.parameters
        # A diffusers pipeline (its scheduler state) serves one call at a time.
        self.run_lock = threading.RLock()
        self.reports = threading.local()
        self.full_runs: dict[str, tuple[int, float]] = {}  # signature key -> (misses, seconds): latency padding
        self.audits = None  # an `integrations.audits.AuditQueue` once audit_scorer is given

    def __call__(self, pipe: Any, args: tuple, kwargs: dict) -> Any:
        original_call = self.original_class.__call__
        tenant = kwargs.pop("flexcache_tenant", None) or self.tenant
        user = kwargs.pop("flexcache_user", None)
        enabled = kwargs.pop("flexcache_enabled", True)
        parts = kwargs.pop("flexcache_parts", None)
        any_seed = bool(kwargs.pop("flexcache_any_seed", False))
        text_conditioned = kwargs.pop("flexcache_text_conditioned", None)
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
        if enabled:  # the caller's own FlexCache arguments: a typed error, as a pipeline's bad argument is
            check_identity(tenant, user, self.cache.config.sharing.tenants)
            if parts is not None:
                parts_from(parts)

        reason = None if enabled else "disabled for this call"
        if reason is None:
            reason = (uncacheable_reason(call_args, self.adapter.prompt_embeds_name)
                      or self.adapter.uncacheable_reason(pipe, call_args)
                      or in_request_uncached_reason(self.adapter.denoisers(pipe)))
        pipeline_args = dict(call_args)
        if pipeline_args.get("prompt_embeds") is not None:
            pipeline_args["prompt"] = None  # the pipeline refuses both; it gets the embeddings only
        if pipeline_args.get("negative_prompt_embeds") is not None:
            pipeline_args["negative_prompt"] = None
        signature = None
        if reason is None:
            try:
                signature = self.adapter.signature(pipe, call_args, self.model_id)
            except UncacheableCallError as exc:
                reason = str(exc)
            except Exception as exc:
                self._contained("signature", exc, report)
                return self._uncached(pipe, pipeline_args, report, started)
        if reason is not None:
            report.bypass_reason = reason
            return self._uncached(pipe, pipeline_args, report, started)

        generator = single_generator(call_args.get("generator"))
        generator_state = None if generator is None else generator.get_state()
        try:
            seed = None if generator is None else seed_from(generator)
            plan = self.cache.plan(prompt, signature, tenant=tenant, user=user, seed=seed, any_seed=any_seed,
                                   parts=parts, regions=self.adapter.supports_regions(pipe))
        except Exception as exc:
            self._contained("plan", exc, report)
            if generator is not None:
                generator.set_state(generator_state)  # the uncached run draws what plain diffusers would
            return self._uncached(pipe, pipeline_args, report, started)
        report.num_steps = signature.num_steps
        report.similarity, report.rules = plan.similarity, plan.rules
        start = None
        if plan.hit:
            try:
                start = self.cache.fetch_start(plan, device=pipe._execution_device)
            except Exception as exc:
                self._contained("fetch", exc, report)
            if start is None:
                plan = plan.as_miss()

        plain_args = dict(pipeline_args)  # what an uncached run gets, should the cached one fail
        context: CallContext | None = None
        recorder = None
        stage = "resume" if plan.hit else "capture"
        result = _NOTHING
        try:
            with contextlib.ExitStack() as stack:
                capture = bool(plan.run_checkpoints) and (not plan.hit or self.cache.config.planner.cache_resumed)
                stage = "mask_probe"
                recorder = self._mask_recorder(pipe, plan, prompt, pipeline_args) if capture else None
                stage = "resume" if plan.hit else "capture"
                context = CallContext(plan, pipeline_args.get("callback_on_step_end"), recorder,
                                       self.cache.config.planner.solver_state and self.adapter.keeps_solver_state,
                                       self.adapter, call_args, on_error=lambda s, e: self._contained(s, e, report))
                if capture and self.step_callbacks:
                    tensor_inputs = list(pipeline_args.get("callback_on_step_end_tensor_inputs") or [])
                    tensor_inputs = list(getattr(context.user_callback, "tensor_inputs", tensor_inputs))
                    if "latents" not in tensor_inputs:
                        tensor_inputs.append("latents")
                    pipeline_args["callback_on_step_end"] = context.on_step_end
                    pipeline_args["callback_on_step_end_tensor_inputs"] = tensor_inputs
                stack.enter_context(self.run_lock)
                if plan.hit:
                    self._prepare_resumed_run(pipe, plan, start, signature, context, capture, pipeline_args,
                                              call_args, report, stack)
                else:
                    self._prepare_full_run(pipe, plan, signature, context, capture, pipeline_args, call_args,
                                           report, stack)
                stage = "mask_probe"
                stack.enter_context(self._recording(pipe, recorder))
                stage = "in_request"
                stack.enter_context(self._in_request(pipe, report, signature, plan.skip_steps))
                stage = "run"
                result = original_call(pipe, **pipeline_args)
                stage = "teardown"
        except InRequestCacheError:
            raise  # a combination that would make a wrong video: refused, never run
        except Exception as exc:
            if context is not None and context.user_callback_failed:
                raise  # the caller's own callback: plain diffusers would raise it too
            if result is not _NOTHING:
                self._contained("run", exc, report)  # the video is made: only tidying up failed
            else:
                if stage != "run":
                    self._contained(stage, exc, report)
                elif self.cache.config.strict:
                    raise
                if generator is not None:
                    generator.set_state(generator_state)
                self._reset_report(report)
                result = self._uncached(pipe, plain_args, report, started)
                if stage == "run":
                    # The uncached run went through, so the cached one failed because of the cache (had the
                    # uncached one raised too, that error, the pipeline's own, would have reached the caller).
                    self._contained("run", exc, report)
                return result
        advance(generator, generator_state)
        if recorder is not None and recorder.failed is not None:
            self._contained("mask_probe", recorder.failed, report)  # the entries carry no mask: whole-latent hits
        if context.captured:
            try:
                if text_conditioned is None:  # the pipeline encoded the prompt text itself
                    text_conditioned = call_args.get(self.adapter.prompt_embeds_name) is None
                report.inserted = self.cache.insert(plan, context.captured, context.sigmas, context.masks,
                                                    context.solver_states, text_conditioned=bool(text_conditioned))
            except Exception as exc:
                # The video was generated; only caching it failed. Serve it anyway.
                report.insert_error = f"{type(exc).__name__}: {exc}"
                self._contained("insert", exc, report)
        if report.hit and self.audits is not None:  # sampled hits wait for an uncached run (`run_pending_audits`)
            self.audits.offer(plan, signature, plain_args, call_args, result)
        if self.cache.config.sharing.latency_padding:
            try:
                self._pad(report, started, signature.key(), plan.cross_user)
            except Exception as exc:
                self._contained("padding", exc, report)
        report.seconds = time.perf_counter() - started
        return result

    def _prepare_resumed_run(self, pipe: Any, plan: Plan, start: Any, signature: Any, context: "CallContext",
                             capture: bool, pipeline_args: dict, call_args: dict, report: CallReport,
                             stack: contextlib.ExitStack) -> None:
        """Hand a hit's start to the pipeline: latents, the sliced (or multistep, or region) scheduler, guider."""
        report.hit, report.skip_steps, report.source_prompt = True, plan.skip_steps, plan.source_prompt
        report.rule = plan.rule
        report.object_similarity, report.background_similarity = plan.object_similarity, plan.background_similarity
        report.via_parts, report.region = plan.via_parts, plan.region
        pipeline_args.update(self.adapter.latent_arguments(pipe, call_args, start.latent, resume=True))
        original_scheduler = pipe.scheduler
        if state_fields(original_scheduler) is not None:
            state = start.solver_state if self.adapter.keeps_solver_state else None
            if state is not None and not check_compatible(original_scheduler, state):
                state = None
            report.solver_state = "restored" if state is not None else "restarted"
            scheduler = resumed_multistep_scheduler(original_scheduler, plan.skip_steps, state)
        else:
            scheduler = sliced_scheduler(original_scheduler, plan.skip_steps)
        if start.region is not None and start.method == "restart":
            region = self.adapter.to_pipeline_latents(pipe, start.region, resume=False)
            scheduler = region_scheduler(scheduler, original_scheduler, num_steps=signature.num_steps,
                                         skip=plan.skip_steps, region=region,
                                         catch_up=self.cache.config.planner.region_catch_up)
            timesteps = TokenTimesteps(scheduler, region, self.adapter.patch_size(pipe))
            stack.callback(timesteps.remove)
            timesteps.install(self.adapter.transformers(pipe))
        if capture and not self.step_callbacks:
            scheduler = capturing_scheduler(scheduler, context, pipe)
        if capture and self.adapter.steps_scheduler_copies:
            scheduler, context.copy_outputs = recording_copies(scheduler)
        swap_component(pipe, "scheduler", scheduler, stack)
        original_guider = pipe.__dict__.get("guider")
        if original_guider is not None and hasattr(original_guider, "set_state"):
            swap_component(pipe, "guider", offset_guider(original_guider, plan.skip_steps), stack)
        stack.enter_context(progress_from(pipe, plan.skip_steps, signature.num_steps))

    def _prepare_full_run(self, pipe: Any, plan: Plan, signature: Any, context: "CallContext", capture: bool,
                          pipeline_args: dict, call_args: dict, report: CallReport,
                          stack: contextlib.ExitStack) -> None:
        """A miss: initial noise from the plan's seed, and the capturing scheduler where there is no step callback."""
        report.seed = plan.seed
        if self.adapter.draws_own_noise:
            # The pipeline composes its noise with a condition only its own draw gets (LTX image-to-video).
            generator = pipeline_args.get("generator")
            device = generator.device if isinstance(generator, torch.Generator) else "cpu"
            pipeline_args["generator"] = torch.Generator(device).manual_seed(plan.seed)
        else:
            noise = seeded_noise(signature.latent_shape, plan.seed, device=pipe._execution_device,
                                 dtype=signature.torch_dtype)
            pipeline_args.update(self.adapter.latent_arguments(pipe, call_args, noise, resume=False))
        original_scheduler = pipe.scheduler
        scheduler = None
        if capture and not self.step_callbacks:
            scheduler = capturing_scheduler(copy.deepcopy(original_scheduler), context, pipe)
        if capture and self.adapter.steps_scheduler_copies:
            scheduler, context.copy_outputs = recording_copies(scheduler or copy.deepcopy(original_scheduler))
        if scheduler is not None:
            swap_component(pipe, "scheduler", scheduler, stack)

    def _uncached(self, pipe: Any, pipeline_args: dict, report: CallReport, started: float) -> Any:
        """Run the call as plain diffusers would (in-request caches still start clean; no checks: MagCache
        calibrates on such a call)."""
        with self.run_lock, contextlib.ExitStack() as stack:
            try:
                report.in_request = stack.enter_context(
                    in_request_call(self.adapter.denoisers(pipe), num_steps=None, skip_steps=0, check=False))
            except Exception as exc:  # resetting them failed: run without
                self._contained("in_request", exc, report)
            result = self.original_class.__call__(pipe, **pipeline_args)
        report.seconds = time.perf_counter() - started
        return result

    def _contained(self, stage: str, exc: BaseException, report: CallReport) -> None:
        """An error of the cache path: re-raised under ``strict``; else counted, reported and logged once."""
        if self.cache.config.strict:
            raise exc
        self.cache.count_error(stage)
        message = f"{stage}: {type(exc).__name__}: {exc}"
        report.cache_error = message if report.cache_error is None else f"{report.cache_error}; {message}"
        logger.warning("flexcache: %s failed (%s: %s); the generation goes on without the cache", stage,
                       type(exc).__name__, exc, exc_info=logger.isEnabledFor(logging.DEBUG))

    @staticmethod
    def _reset_report(report: CallReport) -> None:
        """A cached run that fell back: the report describes the uncached run that follows."""
        report.hit, report.skip_steps, report.source_prompt, report.region, report.rule = False, 0, None, None, None
        report.via_parts, report.solver_state, report.seed = False, None, None
        report.object_similarity = report.background_similarity = None

    def _pad(self, report: CallReport, started: float, key: str, cross_user: bool) -> None:
        """Sleep until a hit from another user's entry has taken as long as a full run would (the mean of
        this binding's, or scaled); the pipeline is free for other calls meanwhile. Own hits reveal nothing."""
        elapsed = time.perf_counter() - started
        with self.run_lock:
            count, total = self.full_runs.get(key, (0, 0.0))
            if not report.hit:
                self.full_runs[key] = (count + 1, total + elapsed)
                return
        if not cross_user:
            return
        steps_run = max(1, report.num_steps - report.skip_steps)
        target = max(total / count if count else 0.0, elapsed * report.num_steps / steps_run)
        if target > elapsed:
            report.padded_seconds = target - elapsed
            if self.pad_in_call:
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


def enable_flexcache(pipe: Any, cache: FlexCache | None = None, *, tenant: str = DEFAULT_TENANT,
                     model_id: str | None = None, pad_in_call: bool = True, audit_scorer: Any = None,
                     audit_video: Any = None) -> Any:
    """Serve `pipe`'s calls through `cache`; returns the same pipeline object.

    Args:
        pipe: a diffusers pipeline of a supported class (`ADAPTERS`).
        cache: the `FlexCache` to use; omitted, one is built from ``CacheConfig.load()`` (defaults, then
            ``$FLEXCACHE_CONFIG`` and ``FLEXCACHE_*`` overrides). `get_flexcache(pipe)` returns it.
        tenant: default namespace for calls (override per call with
            ``flexcache_tenant=``).
        model_id: names the model in the generation signature; defaults
            to the pipeline's ``name_or_path``. Pass it for pipelines built in
            code (without one a UserWarning says so, once per pipeline, and
            entries are told apart by architecture and a sampled weights
            fingerprint only; `integrations.model_identity`).
        pad_in_call: with ``sharing.latency_padding``, a call served from another user's entry
            sleeps until a full run's time has passed (the pipeline is free for other threads
            meanwhile). False: it returns at once and `CallReport.padded_seconds` says how long the
            caller must hold the answer, as a server whose worker should take its next job does.
        audit_scorer, audit_video: online audits (``quality.audit_rate`` > 0): a scorer (`quality.scorers`,
            or any ``(video, prompt) -> float``) and the output -> (B, F, C, H, W) reader; sampled hits
            are run uncached by `run_pending_audits`.

    Returns:
        `pipe`, now caching. `disable_flexcache(pipe)` undoes it.

    Raises:
        UnsupportedPipelineError: no adapter for this pipeline class.

    Example:
        >>> from flexcache import FlexCache, enable_flexcache          # doctest: +SKIP
        >>> pipe = enable_flexcache(WanPipeline.from_pretrained(...), FlexCache())  # doctest: +SKIP
        >>> video = pipe(prompt="a red fox running through snow").frames[0]  # doctest: +SKIP
    """
    if cache is not None and not isinstance(cache, FlexCache):
        raise UnsupportedPipelineError(f"cache must be a FlexCache or None; got {type(cache).__name__}")
    adapter = _adapter_for(pipe)
    if cache is None:
        from flexcache.core.config import CacheConfig

        cache = FlexCache(CacheConfig.load())
    check_diffusers_version()
    from flexcache.integrations.model_identity import warn_if_anonymous

    warn_if_anonymous(pipe, model_id)  # once per pipeline: no name_or_path and no model_id
    existing: _Binding | None = pipe.__dict__.get("_flexcache_binding")
    original_class = existing.original_class if existing else type(pipe)
    binding = _Binding(cache, adapter, tenant, model_id or _default_model_id(pipe), original_class)
    cache.planners.check_model(binding.model_id)
    binding.pad_in_call = bool(pad_in_call)
    binding.audits = audit_queue(cache, audit_scorer, audit_video)  # None without a scorer (warns if asked for)

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


def get_flexcache(pipe: Any) -> FlexCache | None:
    """The `FlexCache` serving `pipe` (None when `enable_flexcache` was not called on it)."""
    binding: _Binding | None = pipe.__dict__.get("_flexcache_binding")
    return binding.cache if binding else None


def run_pending_audits(pipe: Any, limit: int | None = None) -> int:
    """Run up to `limit` queued audits of `pipe` (all when None), each a full uncached run; returns how many."""
    binding: _Binding | None = pipe.__dict__.get("_flexcache_binding")
    if binding is None or binding.audits is None:
        return 0
    return binding.audits.run(binding, pipe, limit)


def last_call_report(pipe: Any) -> CallReport | None:
    """The `CallReport` of the last call this thread made through `pipe`."""
    binding: _Binding | None = pipe.__dict__.get("_flexcache_binding")
    return getattr(binding.reports, "last", None) if binding else None
