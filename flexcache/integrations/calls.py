"""One pipeline call's pieces: its report, its capture context, its generator's seed, swapped components.

`integrations.diffusers` runs a call with these; they hold no binding state.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from flexcache.engine.planner import Plan
from flexcache.integrations.adapters import PipelineAdapter
from flexcache.integrations.resuming import noise_level
from flexcache.integrations.solver_state import capture_solver_state


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
    # An error of the cache path, contained ("<stage>: <type>: <message>"; `FlexCache.count_error`): the call ran
    # on uncached (or, after the run, kept its video).
    cache_error: str | None = None
    seconds: float = 0.0
    # Held so the call took as long as a full run (``sharing.latency_padding``): slept in the call, or left to
    # the caller to hold the answer (``enable_flexcache(..., pad_in_call=False)``).
    padded_seconds: float = 0.0
    # Which tables planned the call (`engine.rules_book`): "rules file NAME", "toyworld", "configured", "uncalibrated".
    rules: str | None = None
    rule: str | None = None  # the table row that set a hit's K (`Plan.rule`)


def single_generator(generator: Any) -> torch.Generator | None:
    """The call's one generator (a list of one counts), or None."""
    if isinstance(generator, (list, tuple)) and len(generator) == 1:
        generator = generator[0]
    return generator if isinstance(generator, torch.Generator) else None


def seed_from(generator: torch.Generator) -> int:
    """The seed of the caller's generator (left as it is: the pipeline may draw from it, as without FlexCache).

    A freshly seeded generator (``torch.Generator().manual_seed(s)``, nothing drawn yet) gives `s`
    itself, so a report's seed is the caller's. A generator that has drawn before (reused for the next
    call, as plain diffusers allows) gives a seed drawn from a copy of it: another seed, so other noise.
    `advance` moves it on after the call.
    """
    initial = generator.initial_seed()
    state = generator.get_state()
    if torch.equal(torch.Generator(device=generator.device).manual_seed(initial).get_state(), state):
        return initial
    copy_of_it = torch.Generator(device=generator.device)
    copy_of_it.set_state(state)
    return int(torch.randint(0, 2**63 - 1, (1,), generator=copy_of_it, device=generator.device).item())


def advance(generator: torch.Generator | None, state_before: torch.Tensor | None) -> None:
    """Move the caller's generator on when the call drew nothing from it (FlexCache handed the pipeline its
    noise), so reusing it for the next call gives other noise, as plain diffusers does."""
    if generator is not None and torch.equal(generator.get_state(), state_before):
        torch.randint(0, 2, (1,), generator=generator, device=generator.device)


def swap_component(pipe: Any, name: str, value: Any, stack: contextlib.ExitStack) -> None:
    """Install `value` as `pipe`'s component for one call; the stack puts the original back."""
    original = pipe.__dict__[name] if name in pipe.__dict__ else getattr(pipe, name)
    # Bypass DiffusionPipeline.__setattr__, which would rewrite the saved config.
    pipe.__dict__[name] = value
    stack.callback(pipe.__dict__.__setitem__, name, original)


@contextlib.contextmanager
def progress_from(pipe: Any, skip_steps: int, num_steps: int):
    """A resumed run's progress bar starts at K of N, so it ends full (the loop runs N - K steps).

    Pipelines that size their bar by the sliced schedule (``len(timesteps)``, N - K) are left alone.
    """
    original = getattr(type(pipe), "progress_bar", None)
    if original is None or skip_steps == 0:
        yield
        return

    def progress_bar(iterable=None, total=None):
        bar = original(pipe, iterable=iterable, total=total)
        if iterable is None and total == num_steps and hasattr(bar, "update"):
            bar.update(skip_steps)
        return bar

    pipe.__dict__["progress_bar"] = progress_bar
    try:
        yield
    finally:
        pipe.__dict__.pop("progress_bar", None)


class CallContext:
    """State of one generation: its plan and the latents (and noise levels) captured so far.

    Capturing never fails the run: an error while capturing (or probing) is reported through
    `on_error` and capturing stops; what was captured before stays. An error of the caller's own
    callback is the caller's: it propagates, marked so the binding does not retry the call.
    """

    def __init__(self, plan: Plan, user_callback: Callable | None, recorder: Any = None,
                 keep_solver_state: bool = True, adapter: PipelineAdapter | None = None,
                 args: dict[str, Any] | None = None,
                 on_error: Callable[[str, BaseException], None] | None = None) -> None:
        self.plan = plan
        self.adapter = adapter or PipelineAdapter()
        self.args = args or {}
        self.copy_outputs: Any = None  # a scheduler copy's step outputs (`resuming.recording_copies`), if recorded
        self.keep_solver_state = keep_solver_state
        self.user_callback = user_callback
        self.user_callback_failed = False
        self.recorder = recorder
        self.on_error = on_error
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
            try:
                outputs = self.user_callback(pipe, step_index, timestep, callback_kwargs) or {}
            except BaseException:
                self.user_callback_failed = True
                raise
        steps_done = self.offset + step_index + 1
        if self.recorder is not None:
            try:
                self.recorder.step_done()
                if steps_done in self.checkpoints:
                    mask = self.recorder.mask()
                    if mask is not None:
                        self.masks[steps_done] = mask
            except Exception as exc:
                self.recorder.fail(exc)
                self.recorder = None
        if steps_done in self.checkpoints:
            try:
                self._capture(pipe, step_index, steps_done, outputs.get("latents", callback_kwargs["latents"]))
            except Exception as exc:
                self.checkpoints = set()  # capture no further step of this run
                self.captured.pop(steps_done, None)
                if self.on_error is None:
                    raise
                self.on_error("capture", exc)
        return outputs

    def _capture(self, pipe: Any, step_index: int, steps_done: int, latents: torch.Tensor) -> None:
        copy_output = None if self.copy_outputs is None else self.copy_outputs.latest
        latents = self.adapter.cache_latent(pipe, self.args, latents, copy_output)
        if latents is None:
            return
        self.captured[steps_done] = latents.detach().clone()
        sigma = noise_level(pipe.scheduler, step_index + 1)
        if sigma is not None:
            self.sigmas[steps_done] = sigma
        state = capture_solver_state(pipe.scheduler) if self.keep_solver_state else None
        if state is not None:
            self.solver_states[steps_done] = state


def uncacheable_reason(args: dict[str, Any], embeds_name: str) -> str | None:
    """Why a call cannot be keyed, whatever the family (it then runs uncached), or None."""
    prompt = args.get("prompt")
    if prompt is None:
        return "no prompt text to key the cache on (pass prompt= alongside prompt_embeds=)"
    if isinstance(prompt, (list, tuple)):
        return "batched prompts (a list) are served uncached; call once per prompt"
    if not isinstance(prompt, str):
        return f"the prompt is a {type(prompt).__name__}, not text: served uncached"
    if not prompt.strip():
        return "an empty prompt is served uncached (nothing to look up)"
    generator = args.get("generator")
    if isinstance(generator, (list, tuple)) and len(generator) != 1:
        return f"a list of {len(generator)} generators (one per video) is served uncached"
    steps = args.get("num_inference_steps")
    if isinstance(steps, int) and steps < 2:
        return f"a run of {steps} step(s) has nothing to skip or cache"
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
