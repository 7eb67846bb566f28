"""The pipeline a calibration measures, run through a FlexCache that it steers rule by rule.

`CalibrationPipeline` wraps a FlexCache-enabled pipeline so calibration can ask for exactly the
runs it needs: a prompt's full run (a miss in a tenant of its own, which caches its checkpoints),
and a target resumed from one source at one depth by one method (a hit forced by a probe table
that admits any pair at that depth, in the source's tenant). Every run goes through the same code
path a served request takes (codec, solver state, region schedule), so what is measured is what
would be served.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from typing import Any

import torch

from flexcache import CacheConfig, FlexCache
from flexcache.engine import SimilarityPlanner
from flexcache.errors import CalibrationError, ConfigError
from flexcache.integrations.diffusers import default_video, enable_flexcache, last_call_report

TOYWORLD = "toyworld"
# How a target reuses its source: the whole latent, or a region rule keeping one part.
WHOLE = "whole"
REGION_METHODS = ("region:background", "region:object")  # the part kept


@dataclass(frozen=True)
class GenerationSettings:
    """What every run of a calibration uses (recorded in the rules file)."""

    steps: int
    shift: float | None = None  # the flow-matching scheduler's shift (None: the pipeline's)
    guidance: float | None = None
    height: int | None = None
    width: int | None = None
    frames: int | None = None
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def tenant_of(prompt: str) -> str:
    """A tenant of one prompt: its full run's entries are all a probe in it can find."""
    return "p" + hashlib.sha256(prompt.encode()).hexdigest()[:16]


class CalibrationPipeline:
    """A pipeline and the cache calibration steers (one call at a time).

    Args:
        pipe: a diffusers video pipeline of a supported family (not yet enabled).
        settings: steps, scheduler shift, guidance, size, frames and the seed every run uses.
        model_id: the model's name in the generation signature.
        embedder_model: ``embedder.model`` of the cache the rules will serve (thresholds are its cosines).
        region_method: ``restart`` or ``renoise``, for region probes.
        call_kwargs: prompt -> the pipeline arguments besides the prompt, steps and generator
            (the toy world passes its prompt embeddings here).
        to_video: the pipeline output -> (B, F, 3, H, W) in [0, 1].
    """

    def __init__(self, pipe, settings: GenerationSettings, *, model_id: str, embedder_model: str = "multilingual",
                 region_method: str = "restart", call_kwargs=None, to_video=None) -> None:
        self.settings = settings
        if settings.shift is not None:
            if "shift" not in pipe.scheduler.config:
                raise ConfigError(f"--shift: {type(pipe.scheduler).__name__} has no shift; leave it out")
            pipe.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config, shift=settings.shift)
        self.cache = FlexCache(CacheConfig.from_dict({
            "name": "calibration", "embedder": {"model": embedder_model},
            "planner": {"uncalibrated": "tables", "cache_resumed": False, "region_method": region_method,
                        "lookup": "decoupled", "regions": True},
            "sharing": {"latency_padding": False},
        }))
        self.pipe = enable_flexcache(pipe, self.cache, model_id=model_id)
        self.pipe.set_progress_bar_config(disable=True)
        self.call_kwargs = call_kwargs or (lambda prompt: {})
        self.to_video = to_video or default_video
        self.runs = 0
        self.signature: dict[str, Any] | None = None
        self.fractions: tuple[float, ...] = self.cache.config.planner.checkpoint_fractions  # what full runs capture

    def _probe(self, method: str | None, fraction: float = 0.0) -> None:
        """Plan the next call with one row admitting any pair at `fraction` (`method` None: no row, a miss)."""
        base = dataclasses.replace(self.cache.config.planner, checkpoint_fractions=self.fractions)
        if method is None:
            config = dataclasses.replace(base, part_table=(), region_table=(), regions=False)
        elif method == WHOLE:
            config = dataclasses.replace(base, part_table=((-1.0, -1.0, fraction),), region_table=(), regions=False)
        else:
            kept = method.split(":")[1]
            config = dataclasses.replace(base, part_table=(), region_table=((kept, -1.0, fraction),), regions=True)
        object.__setattr__(config, "similarity_table", ())  # the part / region row alone decides
        self.cache.planners.configured = SimilarityPlanner(config, label="probe")

    def _call(self, prompt: str, tenant: str) -> tuple[torch.Tensor, Any]:
        s = self.settings
        kwargs: dict[str, Any] = {"num_inference_steps": s.steps, **self.call_kwargs(prompt)}
        for name, value in (("guidance_scale", s.guidance), ("height", s.height), ("width", s.width),
                            ("num_frames", s.frames)):
            if value is not None:
                kwargs.setdefault(name, value)
        with torch.inference_mode():
            out = self.pipe(prompt=prompt, generator=torch.Generator().manual_seed(s.seed), flexcache_tenant=tenant,
                            **kwargs)
        self.runs += 1
        report = last_call_report(self.pipe)
        if report.cache_error or report.bypass_reason:
            raise CalibrationError(f"the run of {prompt[:60]!r} did not go through the cache: "
                                   f"{report.cache_error or report.bypass_reason}")
        return self.to_video(out).float().cpu(), report

    def full_run(self, prompt: str) -> torch.Tensor:
        """The prompt's own run at the settings' seed; caches its checkpoints in its tenant."""
        self._probe(None)
        video, report = self._call(prompt, tenant_of(prompt))
        if report.hit:
            raise CalibrationError(f"the full run of {prompt[:60]!r} was served from the cache; "
                                   "a prompt appears twice in the prompt file?")
        if self.signature is None:
            self.signature = self._signature()
        return video

    def resumed_run(self, source: str, target: str, method: str, fraction: float) -> torch.Tensor | None:
        """`target` resumed from `source`'s checkpoint at `fraction` of N by `method` (None: not servable)."""
        self._probe(method, fraction)
        video, report = self._call(target, tenant_of(source))
        wanted = min(self.settings.steps - 1, max(1, round(fraction * self.settings.steps)))
        region = None if method == WHOLE else ("object" if method == "region:background" else "background")
        if not report.hit or report.skip_steps != wanted or report.region != region:
            return None  # e.g. a region rule on a source without a mask, or a prompt with no setting
        return video

    def _signature(self) -> dict[str, Any]:
        (record, *_) = self.cache._records.values()
        return record.signature.to_dict()

    def close(self) -> None:
        self.cache.close()


def toyworld_pipeline_for(settings: GenerationSettings, *, embedder_model: str = "multilingual",
                          region_method: str = "restart") -> CalibrationPipeline:
    """The packaged toy world as a calibration target (its prompt embeddings, its clips)."""
    from flexcache.quality.scorers import from_toyworld
    from flexcache.toyworld.model import MODEL_ID, WEIGHTS, PromptEncoder, pipeline_kwargs, toyworld_pipeline

    encoder = PromptEncoder()
    guidance = 3.0 if settings.guidance is None else settings.guidance
    settings = dataclasses.replace(settings, guidance=guidance)

    def call_kwargs(prompt: str) -> dict[str, Any]:
        kwargs = pipeline_kwargs(encoder([prompt]), steps=settings.steps, guidance=guidance)
        kwargs.setdefault("negative_prompt", "")
        return kwargs

    return CalibrationPipeline(toyworld_pipeline(WEIGHTS), settings, model_id=MODEL_ID, embedder_model=embedder_model,
                               region_method=region_method, call_kwargs=call_kwargs,
                               to_video=lambda out: from_toyworld(out.frames.clamp(-1, 1)))


def diffusers_pipeline_for(model: str, settings: GenerationSettings, *, embedder_model: str = "multilingual",
                           region_method: str = "restart", device: str | None = None) -> CalibrationPipeline:
    """A diffusers model by id or local path (``local_files_only``: nothing is downloaded here)."""
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(model, local_files_only=True)
    if device:
        pipe.to(device)
    return CalibrationPipeline(pipe, settings, model_id=model, embedder_model=embedder_model,
                               region_method=region_method, call_kwargs=lambda prompt: {"output_type": "pt"})


def build_calibration_pipeline(name: str, settings: GenerationSettings, **kwargs) -> CalibrationPipeline:
    """``toyworld`` or a diffusers model id / path."""
    if name == TOYWORLD:
        return toyworld_pipeline_for(settings, **{k: v for k, v in kwargs.items() if k != "device"})
    return diffusers_pipeline_for(name, settings, **kwargs)
