"""One call's schedulers and guiders: what a resumed (or captured) pipeline run uses in place of its own.

Each is a copy of the pipeline's component, of a subclass made once per
class, installed for one call and removed after it (`integrations.diffusers`):

* `sliced_scheduler`: a schedule that starts at step K;
* `capturing_scheduler`: reports each step's output, for pipelines whose
  ``__call__`` takes no step callback;
* `offset_guider`: a diffusers guider that numbers a resumed run's steps as
  the full schedule does;
* `recording_copies`: keeps the last step output of the scheduler's deep
  copies, for pipelines that step a second latent on a copy (LTX-2's audio).

`noise_level` reads a scheduler's sigma after a step, for the codec's budget.
"""

from __future__ import annotations

import copy
import functools
import threading
from typing import Any

import torch

# Pipelines multiply ``latents=`` by the scheduler's init_noise_sigma (the std of fresh noise; a property of
# the sigmas set, for Euler-family schedulers). A resumed run starts from x_K itself: its scheduler says 1.
RESUMED_NOISE_SIGMA = property(lambda self: 1.0)

_SLICED_CLASSES: dict[type, type] = {}
_SLICED_LOCK = threading.Lock()


def sliced_scheduler_class(base: type) -> type:
    with _SLICED_LOCK:
        if base not in _SLICED_CLASSES:
            @functools.wraps(base.set_timesteps)  # keeps the signature diffusers inspects for `timesteps=`
            def set_timesteps(self, *args, **kwargs):
                base.set_timesteps(self, *args, **kwargs)
                skip = self.flexcache_skip_steps
                self.flexcache_full = (self.timesteps, getattr(self, "sigmas", None))  # multistep steps read it
                self.timesteps = self.timesteps[skip:]
                if getattr(self, "sigmas", None) is not None:
                    self.sigmas = self.sigmas[skip:]

            _SLICED_CLASSES[base] = type(f"FlexCacheSliced{base.__name__}", (base,),
                                         {"set_timesteps": set_timesteps, "init_noise_sigma": RESUMED_NOISE_SIGMA})
        return _SLICED_CLASSES[base]


def sliced_scheduler(scheduler: Any, skip_steps: int) -> Any:
    """A copy of `scheduler` whose schedule starts at step `skip_steps`.

    Exact for one-step solvers (Euler flow matching: resuming from the x_K an
    uninterrupted run produced reproduces that run). Multistep solvers (UniPC,
    DPM++) resume through `solver_state.resumed_multistep_scheduler`, which
    restores the history stored with the entry.
    """
    clone = copy.deepcopy(scheduler)
    clone.__class__ = sliced_scheduler_class(type(scheduler))
    clone.flexcache_skip_steps = skip_steps
    return clone


_CAPTURING_CLASSES: dict[type, type] = {}
_OFFSET_GUIDERS: dict[type, type] = {}


def capturing_scheduler(scheduler: Any, context: Any, pipe: Any) -> Any:
    """`scheduler` (a copy made for this call) reporting each step's output to `context`, as a step callback would.

    For pipelines whose ``__call__`` takes no ``callback_on_step_end``.
    """
    base = type(scheduler)
    with _SLICED_LOCK:
        if base not in _CAPTURING_CLASSES:
            def step(self, *args, **kwargs):
                out = base.step(self, *args, **kwargs)
                latents = out[0] if isinstance(out, tuple) else out.prev_sample
                index, self.flexcache_steps_taken = self.flexcache_steps_taken, self.flexcache_steps_taken + 1
                self.flexcache_context.on_step_end(self.flexcache_pipe, index, None, {"latents": latents})
                return out

            _CAPTURING_CLASSES[base] = type(f"FlexCacheCapturing{base.__name__}", (base,), {"step": step})
    scheduler.__class__ = _CAPTURING_CLASSES[base]
    scheduler.flexcache_context, scheduler.flexcache_pipe, scheduler.flexcache_steps_taken = context, pipe, 0
    return scheduler


def offset_guider(guider: Any, skip_steps: int) -> Any:
    """A copy of a diffusers guider that numbers a resumed run's steps as the full schedule does.

    Guiders choose by ``step / num_inference_steps`` (a guidance window's
    start and stop); a resumed run's loop counts from 0 of N - K.
    """
    base = type(guider)
    with _SLICED_LOCK:
        if base not in _OFFSET_GUIDERS:
            def set_state(self, step, num_inference_steps, timestep):
                skip = self.flexcache_skip_steps
                base.set_state(self, step + skip, num_inference_steps + skip, timestep)

            _OFFSET_GUIDERS[base] = type(f"FlexCacheOffset{base.__name__}", (base,), {"set_state": set_state})
    clone = copy.deepcopy(guider)
    clone.__class__ = _OFFSET_GUIDERS[base]
    clone.flexcache_skip_steps = skip_steps
    return clone


class CopyOutputs:
    """The last step output of a scheduler's deep copies; shared by the scheduler and every copy of it."""

    def __init__(self, primary: Any) -> None:
        self.primary = primary
        self.latest: torch.Tensor | None = None

    def __deepcopy__(self, memo: dict) -> CopyOutputs:
        return self  # a deep copy of the scheduler reports here, and keeps no copy of `primary`


_RECORDING_CLASSES: dict[type, type] = {}


def recording_copies(scheduler: Any) -> tuple[Any, CopyOutputs]:
    """`scheduler` (a copy made for this call), whose deep copies report each step's output.

    LTX-2 steps its audio latent on ``copy.deepcopy(pipe.scheduler)`` and
    hands only the video latent to the step callback; the audio latent of
    each step is read from the returned `CopyOutputs`.
    """
    base = type(scheduler)
    with _SLICED_LOCK:
        if base not in _RECORDING_CLASSES:
            def step(self, *args, **kwargs):
                out = base.step(self, *args, **kwargs)
                outputs = self.flexcache_copy_outputs
                if self is not outputs.primary:
                    outputs.latest = out[0] if isinstance(out, tuple) else out.prev_sample
                return out

            _RECORDING_CLASSES[base] = type(f"FlexCacheRecording{base.__name__}", (base,), {"step": step})
    scheduler.__class__ = _RECORDING_CLASSES[base]
    outputs = CopyOutputs(scheduler)
    scheduler.flexcache_copy_outputs = outputs
    return scheduler, outputs


def noise_level(scheduler: Any, steps_done: int) -> float | None:
    """The noise std of the latent after `steps_done` steps, where the scheduler says.

    Flow matching (x = (1 - sigma) x0 + sigma eps): ``sigmas[steps_done]``.
    DDPM-family (x = sqrt(a) x0 + sqrt(1 - a) eps): ``sqrt(1 - alphas_cumprod[t])``
    at the next timestep. None when neither applies; the codec then uses a
    relative-L2 budget.
    """
    sigmas = getattr(scheduler, "sigmas", None)
    if isinstance(sigmas, torch.Tensor) and steps_done < sigmas.numel():
        return float(sigmas[steps_done])
    alphas = getattr(scheduler, "alphas_cumprod", None)
    timesteps = getattr(scheduler, "timesteps", None)
    if isinstance(alphas, torch.Tensor) and isinstance(timesteps, torch.Tensor) and steps_done < timesteps.numel():
        return float(torch.sqrt(1.0 - alphas[int(timesteps[steps_done])]))
    return None
