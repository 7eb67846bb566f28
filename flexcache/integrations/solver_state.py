"""Multistep solver state: captured with a checkpoint, restored on a hit, so the resumed run is the uninterrupted one.

A multistep solver (UniPC, DPM-Solver++) keeps the model outputs of its last
steps, and UniPC its last sample for the corrector. A run resumed at K with a
fresh solver drops that history: its first steps run at a lower order and
land away from the uninterrupted run (`flexcache bench solvers` measures how
far). With the state captured after step K and restored into the resumed
scheduler, every step does the arithmetic the uninterrupted run did.

The resumed scheduler keeps the sliced schedule the pipeline loops over
(`integrations.resuming.sliced_scheduler`), but each `step` sees the full
schedule at the full run's index: the solvers look back at earlier sigmas by
index and choose their order from the schedule's length.
"""

from __future__ import annotations

import functools
import threading
from typing import Any

import torch

from flexcache.engine.records import SolverState
from flexcache.integrations.resuming import sliced_scheduler, sliced_scheduler_class

# Per scheduler class (matched along the MRO): the attributes `step` reads from earlier steps.
SOLVER_STATE_FIELDS: dict[str, tuple[str, ...]] = {
    "UniPCMultistepScheduler": ("model_outputs", "timestep_list", "lower_order_nums", "last_sample", "this_order"),
    "DPMSolverMultistepScheduler": ("model_outputs", "lower_order_nums"),
}
# The attributes that are points of the trajectory (they carry the run's noise); the rest are model outputs.
NOISY_FIELDS = frozenset({"last_sample"})


def _solver_name(scheduler: Any) -> str | None:
    """The class in `scheduler`'s MRO that `SOLVER_STATE_FIELDS` knows; None for one-step solvers."""
    return next((cls.__name__ for cls in type(scheduler).__mro__ if cls.__name__ in SOLVER_STATE_FIELDS), None)


def state_fields(scheduler: Any) -> tuple[str, ...] | None:
    """The state attributes of `scheduler`'s solver; None for one-step solvers (nothing to restore)."""
    name = _solver_name(scheduler)
    return None if name is None else SOLVER_STATE_FIELDS[name]


def capture_solver_state(scheduler: Any) -> SolverState | None:
    """The solver state after the step just taken, in the cache's layout (batch dimension dropped).

    Latent-sized tensors go into `SolverState.tensors` (the engine codes them
    with the latent's codec); counters and timesteps into `scalars`. None for
    a scheduler without state, or one whose state has a batch other than 1.
    """
    fields = state_fields(scheduler)
    if fields is None:
        return None
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for name in fields:
        value = getattr(scheduler, name, None)
        if isinstance(value, list):
            slots = []
            for index, item in enumerate(value):
                if item is None:
                    slots.append(None)
                elif item.dim() == 0:  # a timestep
                    slots.append({"value": float(item), "dtype": str(item.dtype).removeprefix("torch.")})
                else:
                    if item.shape[0] != 1:
                        return None
                    key = f"{name}.{index}"
                    tensors[key] = item.detach()[0].clone()
                    slots.append({"tensor": key})
            scalars[name] = slots
        elif isinstance(value, torch.Tensor):
            if value.dim() == 0 or value.shape[0] != 1:
                return None
            tensors[name] = value.detach()[0].clone()
            scalars[name] = {"tensor": name}
        else:
            scalars[name] = value  # an int or None
    return SolverState(_solver_name(scheduler), scalars, tensors, NOISY_FIELDS & set(tensors))


def restore_solver_state(scheduler: Any, state: SolverState, device: torch.device | str) -> None:
    """Put `state` back into `scheduler` (after its `set_timesteps`, which clears it)."""
    def value_of(slot: Any) -> Any:
        if isinstance(slot, dict) and "tensor" in slot:
            return state.tensors[slot["tensor"]].unsqueeze(0).to(device)
        if isinstance(slot, dict) and "value" in slot:
            return torch.tensor(slot["value"], dtype=getattr(torch, slot["dtype"]))
        return slot

    for name, slot in state.scalars.items():
        setattr(scheduler, name, [value_of(s) for s in slot] if isinstance(slot, list) else value_of(slot))


def check_compatible(scheduler: Any, state: SolverState) -> bool:
    """Whether `state` was captured from a solver of `scheduler`'s kind (the signature names the scheduler too)."""
    name = _solver_name(scheduler)
    return name is not None and state.solver == name and set(state.scalars) == set(SOLVER_STATE_FIELDS[name])


_RESUMED_CLASSES: dict[type, type] = {}
_LOCK = threading.Lock()


def _resumed_class(base: type) -> type:
    """`base`'s sliced class with the state restored and a `step` at the full schedule's index (module docstring)."""
    sliced = sliced_scheduler_class(base)
    with _LOCK:
        if base not in _RESUMED_CLASSES:
            @functools.wraps(base.set_timesteps)  # diffusers inspects its signature
            def set_timesteps(self, *args, **kwargs):
                sliced.set_timesteps(self, *args, **kwargs)  # clears the state: restore it after
                if self.flexcache_state is not None:
                    restore_solver_state(self, self.flexcache_state, self.timesteps.device)

            def step(self, model_output, timestep, sample, *args, **kwargs):
                skip = self.flexcache_skip_steps
                if self._step_index is None:
                    self._step_index = 0  # pipelines loop from the sliced schedule's first timestep
                view = (self.timesteps, self.sigmas)
                self.timesteps, self.sigmas = self.flexcache_full
                self._step_index += skip
                try:
                    return base.step(self, model_output, timestep, sample, *args, **kwargs)
                finally:
                    self._step_index -= skip
                    self.timesteps, self.sigmas = view

            _RESUMED_CLASSES[base] = type(f"FlexCacheResumed{base.__name__}", (sliced,),
                                          {"set_timesteps": set_timesteps, "step": step})
        return _RESUMED_CLASSES[base]


def resumed_multistep_scheduler(scheduler: Any, skip_steps: int, state: SolverState | None) -> Any:
    """A copy of the multistep `scheduler` that runs steps `skip_steps`..N, from `state` where given.

    Without a state the solver restarts its history at K (lower order first),
    as earlier versions' entries resume.
    """
    clone = sliced_scheduler(scheduler, skip_steps)
    clone.__class__ = _resumed_class(type(scheduler))
    clone.flexcache_state = state
    return clone
