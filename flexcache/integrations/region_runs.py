"""Running a region hit in a diffusers pipeline: a region's own noise schedule on the same steps.

For ``planner.region_method: restart`` the regenerated region starts at noise
level 1 while the rest of the latent resumes at sigma_K (`engine.regions`).
Two pieces make the stock pipeline run that without copying its loop:

* a scheduler (a sliced copy of the pipeline's Euler flow scheduler) whose
  `step` moves each latent element by its own level's difference;
* a forward pre-hook on the transformer that hands it one timestep per video
  token (the Wan transformer takes (batch, tokens) timesteps).

Both are installed for one call and removed after it.
"""

from __future__ import annotations

import copy
import threading
from typing import Any

import torch
import torch.nn.functional as F

from flexcache.engine.regions import catch_up_steps, region_sigmas

_REGION_CLASSES: dict[type, type] = {}
_LOCK = threading.Lock()


def supports_region_schedule(scheduler: Any) -> bool:
    """Whether `scheduler` is an Euler flow-matching scheduler this module can give a region schedule."""
    names = {cls.__name__ for cls in type(scheduler).__mro__}
    config = getattr(scheduler, "config", {})
    return ("FlowMatchEulerDiscreteScheduler" in names and not config.get("stochastic_sampling", False)
            and not config.get("invert_sigmas", False))


def _region_class(base: type) -> type:
    with _LOCK:
        if base not in _REGION_CLASSES:
            def step(self, model_output, timestep, sample, *args, return_dict: bool = True, **kwargs):
                if self.step_index is None:
                    self._init_step_index(timestep)
                index = self.step_index
                sigmas, own = self.sigmas, self.flexcache_region_sigmas
                rest = float(sigmas[index + 1] - sigmas[index])
                region = self.flexcache_region.to(sample.device, torch.float32)
                delta = rest + region * (float(own[index + 1] - own[index]) - rest)
                previous = (sample.to(torch.float32) + delta * model_output.to(torch.float32)).to(model_output.dtype)
                self._step_index += 1
                if not return_dict:
                    return (previous,)
                return _output_class(base)(prev_sample=previous)

            _REGION_CLASSES[base] = type(f"FlexCacheRegion{base.__name__}", (base,), {"step": step})
        return _REGION_CLASSES[base]


def _output_class(base: type) -> type:
    import importlib

    module = importlib.import_module(base.__module__)
    for name in dir(module):
        if name.endswith("SchedulerOutput"):
            return getattr(module, name)
    from diffusers.schedulers.scheduling_flow_match_euler_discrete import (
        FlowMatchEulerDiscreteSchedulerOutput,
    )

    return FlowMatchEulerDiscreteSchedulerOutput


def region_scheduler(sliced: Any, full_schedule: Any, *, num_steps: int, skip: int, region: torch.Tensor,
                     catch_up: float) -> Any:
    """A copy of the sliced scheduler `sliced` that runs `region` on its own catch-up schedule.

    `full_schedule`: the pipeline's scheduler (to read the full N-step sigmas
    from); `region`: 1.0 where the latent restarts, in the pipeline's latent
    layout (batch dimension included or broadcastable).
    """
    probe = copy.deepcopy(full_schedule)
    probe.set_timesteps(num_steps)
    sigmas = probe.sigmas.detach().to("cpu", torch.float32)
    own = region_sigmas(sigmas, skip, catch_up_steps(num_steps, skip, catch_up))
    clone = copy.deepcopy(sliced)
    clone.__class__ = _region_class(type(sliced))
    clone.flexcache_region = region
    clone.flexcache_region_sigmas = own
    clone.flexcache_train_timesteps = float(getattr(full_schedule.config, "num_train_timesteps", 1000))
    return clone


class TokenTimesteps:
    """A forward pre-hook giving the transformer one timestep per token: the region's own where it restarts.

    `region` is in the pipeline's latent layout, (1 or batch, 1, T, H, W); a
    batch of regions gives each batch item its own tokens.
    """

    def __init__(self, scheduler: Any, region: torch.Tensor, patch_size: tuple[int, int, int]) -> None:
        self.scheduler = scheduler
        grid = region.reshape(-1, 1, *region.shape[-3:]).float()
        # (items, tokens) in the transformer's (frame, row, col) order
        self.tokens = F.max_pool3d(grid, patch_size, patch_size).flatten(1) > 0.5
        self.handles: list[Any] = []

    def __call__(self, _module: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        timestep = kwargs.get("timestep")
        if timestep is None:
            return args, kwargs
        index = self.scheduler.step_index or 0
        own = self.scheduler.flexcache_region_sigmas[index] * self.scheduler.flexcache_train_timesteps
        tokens = self.tokens.to(timestep.device)
        batch = timestep.shape[0]
        per_token = timestep.unsqueeze(1).expand(batch, tokens.shape[1]) if timestep.dim() == 1 else timestep
        if per_token.shape[1] != tokens.shape[1]:
            raise RuntimeError(f"the transformer has {per_token.shape[1]} timesteps per sample, the region "
                               f"{tokens.shape[1]} tokens")
        kwargs = dict(kwargs, timestep=torch.where(tokens, own.to(per_token.dtype), per_token))
        return args, kwargs

    def install(self, transformers: list[Any]) -> None:
        for transformer in transformers:
            if transformer is not None:
                self.handles.append(transformer.register_forward_pre_hook(self, with_kwargs=True))

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []
