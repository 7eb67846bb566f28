"""In-request caches (diffusers' FirstBlockCache, MagCache, TaylorSeer, FasterCache, PAB) on FlexCache calls.

Users enable them on the transformer(s) the diffusers way, before or after
`enable_flexcache`: ``pipe.transformer.enable_cache(MagCacheConfig(...))``.
For each FlexCache call, `in_request_call` makes them correct:

* **per-call state**: every stateful hook is reset when the call starts and
  when it ends, so a request never sees another's cached residuals, Taylor
  factors or text K/V (diffusers resets only at the end of a call that
  returns; a call that raised left its state behind);
* **step offsets** on a resumed run, whose loop counts from step K:
  MagCache's step index (its per-step ratios and retention window) starts at
  the number of steps the transformer would have run before K;
  TaylorSeer's step counter starts there too, with its warm-up moved to the
  resumed run's first steps (it has no Taylor factors yet) and its
  cool-down left where the full run has it; the cache context's
  `step_index` and `num_inference_steps` describe the full schedule.
  FasterCache and PAB choose by timestep, which a resumed run shares with
  the full run; their periodic counters restart with the run, whose first
  step computes (nothing is cached yet);
* **clear errors** for combinations that cannot be made correct
  (`InRequestCacheError`): MagCache configured for another step count. A
  calibrating MagCache runs its calls uncached (`uncached_reason`); a
  TaylorSeer that hooks no module is inert, as in plain diffusers: a warning.

Wan2.2's two experts each get the offset of the steps they would have run.
cache-dit's contexts get the same treatment (`cache_dit_contexts`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from collections.abc import Callable, Iterator
from typing import Any

from flexcache.core.errors import FlexCacheError
from flexcache.integrations import cache_dit_contexts

# diffusers hook names (`diffusers.hooks.*`) -> the method, as the README's table names it.
HOOK_METHODS = {
    "fbc_leader_block_hook": "FirstBlockCache", "fbc_block_hook": "FirstBlockCache",
    "mag_cache_leader_block_hook": "MagCache", "mag_cache_block_hook": "MagCache",
    "taylorseer_cache": "TaylorSeer",
    "faster_cache_denoiser": "FasterCache", "faster_cache_block": "FasterCache",
    "pyramid_attention_broadcast": "PyramidAttentionBroadcast",
    "sea_cache_root": "SeaCache", "sea_cache_leader_block": "SeaCache", "sea_cache_block": "SeaCache",
    "sea_cache_post_norm": "SeaCache",
    "text_kv_cache_transformer": "TextKVCache", "text_kv_cache_block": "TextKVCache",
}


class InRequestCacheError(FlexCacheError, ValueError):
    """An in-request cache configured so that FlexCache cannot make its cached calls correct."""


def hooks_of(transformer: Any) -> list[tuple[str, Any]]:
    """(hook name, hook) of every diffusers cache hook registered under `transformer`."""
    found = []
    modules = transformer.modules() if hasattr(transformer, "modules") else ()
    for module in modules:
        registry = getattr(module, "_diffusers_hook", None)
        if registry is None:
            continue
        found.extend((name, hook) for name, hook in registry.hooks.items() if name in HOOK_METHODS)
    return found


def methods_of(transformer: Any) -> list[str]:
    """The in-request methods enabled on `transformer`, by README name, sorted."""
    names = {HOOK_METHODS[name] for name, _ in hooks_of(transformer)}
    config = getattr(transformer, "_cache_config", None)
    if config is not None and not names:
        names.add(type(config).__name__.removesuffix("Config"))  # enabled, but hooked no module
    cache_dit = cache_dit_contexts.cache_dit_method(transformer)
    if cache_dit is not None:
        names.add(cache_dit)
    return sorted(names)


def uncached_reason(transformers: list[Any]) -> str | None:
    """Why a call must run uncached for its in-request caches' sake (it then runs as plain diffusers), or None.

    A calibrating MagCache measures its ratios over the whole schedule: on a resumed run they would be
    wrong, so the call runs in full, uncached, and the ratios it logs are right.
    """
    for transformer in transformers:
        config = getattr(transformer, "_cache_config", None)
        if type(config).__name__ == "MagCacheConfig" and config.calibrate:
            return ("MagCache is calibrating: served uncached, so the ratios it logs describe full runs "
                    "(enable MagCache with them afterwards)")
    return None


_WARNED: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _WARNED:
        _WARNED.add(message)
        warnings.warn(message, UserWarning, stacklevel=4)


def _check(transformer: Any, num_steps: int) -> None:
    config = getattr(transformer, "_cache_config", None)
    name = type(config).__name__
    if name == "MagCacheConfig" and not config.calibrate and int(config.num_inference_steps) != num_steps:
        raise InRequestCacheError(
            f"MagCacheConfig.num_inference_steps is {config.num_inference_steps} but the call runs {num_steps} "
            "steps: its ratios and step counter would not line up with the schedule. Set num_inference_steps "
            "to the call's step count")
    if name == "TaylorSeerCacheConfig" and not hooks_of(transformer):
        # Inert, not wrong: plain diffusers runs such a call unchanged, and so does FlexCache.
        _warn_once(
            f"TaylorSeer is enabled on {type(transformer).__name__} but hooked no module, so it changes nothing: "
            "its default patterns (re.fullmatch of '^blocks.*attn' and the like) match no module name here "
            r"(Wan's are attn1/attn2). Pass cache_identifiers=[r'blocks\.\d+'] (whole blocks) or names that exist")


@dataclasses.dataclass
class _Offset:
    """One stateful hook's per-call step offset, applied to each state it creates during the call."""

    manager: Any
    apply: Callable[[Any], None]
    restore: tuple[Any, str, Any] | None = None  # (object, attribute, value) `apply` may change
    original_factory: Any = None

    def install(self) -> None:
        self.original_factory = factory = self.manager._state_cls

        def offset_state(*args, **kwargs):
            state = factory(*args, **kwargs)
            self.apply(state)
            return state

        self.manager._state_cls = offset_state

    def remove(self) -> None:
        self.manager._state_cls = self.original_factory
        if self.restore is not None:
            setattr(*self.restore)


def _offsets(transformer: Any, steps_before: Callable[[], int]) -> list[_Offset]:
    """The state offsets that resume `transformer`'s hooks after `steps_before()` of its steps.

    Evaluated when a state is first made in the call (the first forward),
    after the pipeline has set its schedule.
    """
    offsets: list[_Offset] = []
    seen: set[int] = set()
    for name, hook in hooks_of(transformer):
        manager = getattr(hook, "state_manager", None)
        if manager is None or id(manager) in seen:
            continue
        seen.add(id(manager))
        if HOOK_METHODS[name] == "MagCache":
            offsets.append(_Offset(manager, lambda state: setattr(state, "step_index", steps_before())))
        elif HOOK_METHODS[name] == "TaylorSeer":
            warm_up = hook.disable_cache_before_step

            def resume_taylorseer(state, hook=hook, warm_up=warm_up):
                before = steps_before()
                state.current_step = before - 1  # incremented before use: the first resumed forward sees `before`
                hook.disable_cache_before_step = warm_up + before  # it has no Taylor factors yet: warm up again

            offsets.append(_Offset(manager, resume_taylorseer, restore=(hook, "disable_cache_before_step", warm_up)))
    return offsets


def _reset(transformer: Any) -> None:
    reset = getattr(transformer, "_reset_stateful_cache", None)
    if reset is not None and hooks_of(transformer):
        reset()


@contextlib.contextmanager
def _shifted_cache_context(transformer: Any, skip_steps: int) -> Iterator[None]:
    """The transformer's `cache_context` describing the full schedule: step K of it is the resumed run's step 0."""
    original = getattr(type(transformer), "cache_context", None)
    if original is None or skip_steps == 0:
        yield
        return

    @contextlib.contextmanager
    def cache_context(name: str, **kwargs):
        for key in ("step_index", "num_inference_steps"):
            if kwargs.get(key) is not None:
                kwargs[key] = kwargs[key] + skip_steps
        with original(transformer, name, **kwargs):
            yield

    object.__setattr__(transformer, "cache_context", cache_context)
    try:
        yield
    finally:
        transformer.__dict__.pop("cache_context", None)


@contextlib.contextmanager
def in_request_call(transformers: list[Any], *, num_steps: int | None, skip_steps: int,
                    steps_before: Callable[[int], int] | None = None, check: bool = True) -> Iterator[list[str]]:
    """Make the in-request caches on `transformers` correct for one FlexCache call; yields the methods found.

    `steps_before(i)`: how many of the skipped steps transformer i would have
    run in the full schedule (default: all of them), asked at its first
    forward. `check=False` (a call the cache bypasses) only resets state.
    Nothing is changed for transformers without cache hooks.
    """
    methods = [(i, t, methods_of(t)) for i, t in enumerate(transformers)]
    active = [(i, t) for i, t, found in methods if found]
    for _, transformer in active if check else ():
        _check(transformer, num_steps)
    installed: list[_Offset] = []
    with contextlib.ExitStack() as stack:
        try:
            for index, transformer in active:
                _reset(transformer)
                cache_dit_contexts.reset_contexts(transformer)  # at the start only: its summary reads them after
                if skip_steps:
                    def before(index=index) -> int:
                        return skip_steps if steps_before is None else steps_before(index)

                    for offset in _offsets(transformer, before):
                        offset.install()
                        installed.append(offset)
                    remove = cache_dit_contexts.install_offsets(transformer, before)
                    if remove is not None:
                        stack.callback(remove)
                    stack.enter_context(_shifted_cache_context(transformer, skip_steps))
            yield sorted({m for _, _, found in methods for m in found})
        finally:
            for offset in installed:
                offset.remove()
            for _, transformer in active:
                _reset(transformer)
