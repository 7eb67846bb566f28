"""cache-dit (`cache_dit.enable_cache`) on FlexCache calls: fresh contexts per call, step offsets on resumed runs.

cache-dit keeps one cache context per transformer block list (Wan2.2: one
per expert) in a context manager it attaches to the transformer
(``transformer._context_manager``, ``transformer._context_names``). Each
context counts its own steps (``executed_steps``; ``transformer_executed_steps``
counts forwards, two per step with a separate CFG branch) and decides by
that count: the warm-up, ``steps_computation_mask``, ``max_cached_steps``.
Enabled on a pipeline, cache-dit rebuilds the contexts when a call starts;
enabled on a transformer alone (persistent contexts), it rebuilds them only
once ``num_inference_steps`` steps have run, and never when that is unset,
so a request would inherit the previous one's residuals and counters.

For each FlexCache call this module:

* rebuilds every context of the transformer when the call starts, from the
  arguments cache-dit made it with (its statistics stay readable after the
  call, as cache-dit's ``summary`` expects);
* on a run resumed at step K, sets each context's counters at its first
  forward to the steps its transformer would have run before K, so the
  warm-up and the step mask fall where the full schedule has them;
* makes the resumed run's first step compute in full: it has no cached
  residual yet (cache-dit's static step policy would otherwise reuse a
  buffer that does not exist).

Nothing is imported from cache-dit: a transformer it never touched has no
context manager, and this module leaves it alone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

MANAGER_METHODS = {"CachedContextManager": "cache-dit DBCache", "PrunedContextManager": "cache-dit DBPrune"}


def _manager(transformer: Any) -> Any:
    manager = getattr(transformer, "_context_manager", None)
    if manager is None or not type(manager).__module__.startswith("cache_dit."):
        return None
    return manager


def _contexts(transformer: Any) -> list[tuple[str, Any]]:
    manager = _manager(transformer)
    if manager is None:
        return []
    registered = getattr(manager, "_cached_context_manager", {})
    return [(name, registered[name]) for name in getattr(transformer, "_context_names", None) or ()
            if name in registered]


def cache_dit_method(transformer: Any) -> str | None:
    """'cache-dit DBCache' (or DBPrune) when cache-dit is enabled on `transformer`, else None."""
    manager = _manager(transformer)
    if manager is None or not getattr(transformer, "_context_names", None):
        return None
    for cls in type(manager).__mro__:
        if cls.__name__ in MANAGER_METHODS:
            return MANAGER_METHODS[cls.__name__]
    return f"cache-dit {type(manager).__name__}"


def reset_contexts(transformer: Any) -> None:
    """Rebuild each of `transformer`'s cache-dit contexts as cache-dit first made it: no residuals, step 0."""
    manager = _manager(transformer)
    for name, context in _contexts(transformer):
        manager.reset_context(name, *getattr(context, "_init_args", ()), **dict(getattr(context, "_init_kwargs", {})))


def _resume(context: Any, steps_before: int) -> None:
    per_step = 2 if getattr(context.cache_config, "enable_separate_cfg", False) else 1
    context.executed_steps = steps_before
    context.transformer_executed_steps = steps_before * per_step
    first_step = steps_before
    in_warmup = context.is_in_warmup

    def is_in_warmup() -> bool:  # the resumed run's first step computes: nothing is cached yet
        return context.get_current_step() == first_step or in_warmup()

    context.is_in_warmup = is_in_warmup  # this context is rebuilt at the next call


def install_offsets(transformer: Any, steps_before: Callable[[], int]) -> Callable[[], None] | None:
    """At `transformer`'s first forward in the call, resume its contexts after `steps_before()` steps.

    Returns the function that removes the hook (None when cache-dit is not on
    `transformer`). A forward pre-hook runs before cache-dit's patched
    ``forward``, after the pipeline (and cache-dit's own wrapper) set up the call.
    """
    if cache_dit_method(transformer) is None:
        return None
    done = False

    def resume_at_first_forward(_module: Any, _args: Any) -> None:
        nonlocal done
        if done:
            return
        done = True
        before = steps_before()
        if before:
            for _, context in _contexts(transformer):
                _resume(context, before)

    handle = transformer.register_forward_pre_hook(resume_at_first_forward)
    return handle.remove
