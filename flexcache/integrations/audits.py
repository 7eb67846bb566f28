"""Online audits of pipeline calls: a sampled hit's call is queued and later run uncached, and scored.

`enable_flexcache(pipe, cache, audit_scorer=...)` turns them on (with ``quality.audit_rate`` > 0).
A hit the cache's `Auditor` samples is queued with its arguments and its output; an audit runs the
same call as a full run from the same initial noise (what a miss would have served) when the caller
has time: `run_pending_audits(pipe)`. The drop between the two goes to the auditor, which steps the
rule that served the hit down when its drop exceeds the tolerance. Audits never fail or slow the
call they sample: their errors are counted (``stats()["audits"]["failed"]``) and logged.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import torch

from flexcache.kernels.noise import seeded_noise

logger = logging.getLogger("flexcache.audits")


def default_video(output: Any) -> torch.Tensor:
    """A diffusers output's ``frames`` as (B, F, C, H, W) floats: a tensor (``output_type="pt"``) or numpy."""
    frames = output.frames if hasattr(output, "frames") else output
    if isinstance(frames, torch.Tensor):
        return frames.detach().float().cpu()
    try:
        import numpy as np

        array = np.asarray(frames, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise TypeError("audits read output.frames as a tensor or an array; pass audit_video= for "
                        f"{type(frames).__name__} outputs") from exc
    if array.ndim != 5:
        raise TypeError(f"audits need (B, F, H, W, C) frames; got shape {array.shape}: pass audit_video=")
    return torch.from_numpy(array).permute(0, 1, 4, 2, 3)


@dataclass
class AuditJob:
    plan: Any
    signature: Any
    pipeline_args: dict
    call_args: dict
    output: Any


class AuditQueue:
    """Sampled hits waiting for their uncached run (one per enabled pipeline; thread-safe).

    Args:
        cache: the `FlexCache` whose auditor samples and records.
        scorer: a scorer (``score(videos, prompts, references)``, ``needs_reference``) or a callable
            ``(video, prompt) -> float``; higher is better.
        to_video: the pipeline output -> (B, F, C, H, W) (default: `default_video`).
    """

    def __init__(self, cache: Any, scorer: Any, to_video: Any = None) -> None:
        self.cache, self.scorer, self.to_video = cache, scorer, to_video or default_video
        self._jobs: deque[AuditJob] = deque()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._jobs)

    def offer(self, plan: Any, signature: Any, pipeline_args: dict, call_args: dict, output: Any) -> None:
        """Queue a served hit if the auditor samples it (the oldest waiting job gives way when full)."""
        auditor = self.cache.auditor
        try:
            if not auditor.sample(plan):
                return
            job = AuditJob(plan, signature, dict(pipeline_args), dict(call_args), output)
            with self._lock:
                if len(self._jobs) >= auditor.config.audit_queue:
                    self._jobs.popleft()
                    auditor.count("dropped")
                self._jobs.append(job)
        except Exception as exc:  # never the call's problem
            auditor.count("failed")
            logger.warning("flexcache audit: could not queue a hit (%s: %s)", type(exc).__name__, exc)

    def run(self, binding: Any, pipe: Any, limit: int | None = None) -> int:
        """Run up to `limit` queued audits (all when None); returns how many ran."""
        done = 0
        while limit is None or done < limit:
            with self._lock:
                if not self._jobs:
                    break
                job = self._jobs.popleft()
            self._audit(binding, pipe, job)
            done += 1
        return done

    def _score(self, video: torch.Tensor, prompt: str, reference: torch.Tensor | None) -> float:
        if hasattr(self.scorer, "score"):
            return float(self.scorer.score(video, [prompt], reference)[0])
        return float(self.scorer(video[0], prompt))

    def _audit(self, binding: Any, pipe: Any, job: AuditJob) -> None:
        auditor = self.cache.auditor
        try:
            args = dict(job.pipeline_args)
            if binding.adapter.draws_own_noise:
                generator = args.get("generator")
                device = generator.device if isinstance(generator, torch.Generator) else "cpu"
                args["generator"] = torch.Generator(device).manual_seed(job.plan.seed)
            else:
                noise = seeded_noise(job.signature.latent_shape, job.plan.seed, device=pipe._execution_device,
                                     dtype=job.signature.torch_dtype)
                args.update(binding.adapter.latent_arguments(pipe, job.call_args, noise, resume=False))
            started = time.perf_counter()
            with binding.run_lock, torch.inference_mode():
                baseline = binding.original_class.__call__(pipe, **args)
            auditor.count("seconds", time.perf_counter() - started)
            served, full = self.to_video(job.output), self.to_video(baseline)
            prompt = job.plan.prompt
            if getattr(self.scorer, "needs_reference", False):
                drop = 1.0 - self._score(served, prompt, full)
            else:
                drop = self._score(full, prompt, None) - self._score(served, prompt, None)
            planner = self.cache.planners.find(job.plan.rules)
            if planner is None:
                raise LookupError(f"no tables named {job.plan.rules!r}")
            tolerance = auditor.tolerance_for(planner.rules.tolerance if planner.rules is not None else None)
            auditor.record(job.plan.rules, job.plan.rule, drop, tolerance=tolerance,
                           step_down=lambda: planner.step_down(job.plan.rule))
        except Exception as exc:
            auditor.count("failed")
            logger.warning("flexcache audit of %r failed (%s: %s); the rule keeps its depth", job.plan.prompt[:60],
                           type(exc).__name__, exc)


__all__ = ["AuditJob", "AuditQueue", "default_video"]
