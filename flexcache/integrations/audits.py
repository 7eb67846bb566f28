"""Online audits of pipeline calls: a sampled hit's call is queued and later run uncached, and scored.

`enable_flexcache(pipe, cache, audit_scorer=...)` turns them on (with ``quality.audit_rate`` > 0).
A hit the cache's `Auditor` samples is queued with its arguments and its output; an audit runs the
same call in full, uncached, when the caller has time (`run_pending_audits(pipe)`). The drop between
the two goes to the auditor, which steps the rule that served the hit down when its drop exceeds the
tolerance. Audits never fail or slow the call they sample: their errors are counted
(``stats()["audits"]["failed"]``, ``["skipped"]`` by reason) and logged.

The uncached run starts from the noise the hit's *source* started from (`Plan.source_seed`): the
served video is that trajectory resumed at K under the new prompt, so the two differ by what the K
reused steps did, not by another seed's layout. It is the pair calibration measures (source and
target share a seed there), which the ``reference`` scorer needs: against another seed's run every
hit would look damaged. The call's own generator is neither used nor advanced.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import torch

from flexcache.integrations.calls import CallReport
from flexcache.kernels.noise import seeded_noise

logger = logging.getLogger("flexcache.audits")

# Arguments an audit run does not pass on: the caller's step callbacks (progress, previews, an
# interrupt) belong to the call they came with.
CALLER_ONLY_ARGUMENTS = ("callback_on_step_end", "callback_on_step_end_tensor_inputs", "callback", "callback_steps")


class UnreadableOutput(TypeError):
    """A pipeline output `audit_video` cannot turn into frames (the audit is skipped, not failed)."""


def default_video(output: Any) -> torch.Tensor:
    """A diffusers output's ``frames`` as (B, F, C, H, W) floats: a tensor (``output_type="pt"``) or numpy.

    Raises:
        UnreadableOutput: other frames (PIL images, latents of another rank): pass ``audit_video=``.
    """
    frames = output.frames if hasattr(output, "frames") else output
    if isinstance(frames, torch.Tensor):
        if frames.dim() != 5:
            raise UnreadableOutput(f"audits need (B, F, C, H, W) frames; got shape {tuple(frames.shape)}: "
                                   "pass audit_video=")
        return frames.detach().float().cpu()
    try:
        import numpy as np

        array = np.asarray(frames, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise UnreadableOutput("audits read output.frames as a tensor or an array; pass audit_video= for "
                               f"{type(frames).__name__} outputs") from exc
    if array.ndim != 5:
        raise UnreadableOutput(f"audits need (B, F, H, W, C) frames; got shape {array.shape}: pass audit_video=")
    return torch.from_numpy(array).permute(0, 1, 4, 2, 3)


def scorer_name(scorer: Any) -> str:
    """How a scorer names itself (`Scorer.name`, else a callable's ``__name__``)."""
    return getattr(scorer, "name", None) or getattr(scorer, "__name__", None) or type(scorer).__name__


@dataclass
class AuditJob:
    plan: Any
    signature: Any
    pipeline_args: dict
    call_args: dict
    output: Any
    tolerance: float
    generation: int  # the rule's step-downs when the hit was served (`Auditor.generation`)


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
        self.scorer_name = scorer_name(scorer)
        self._jobs: deque[AuditJob] = deque()
        self._lock = threading.Lock()
        self._warned: set[str] = set()

    def __len__(self) -> int:
        with self._lock:
            return len(self._jobs)

    def _tolerance(self, plan: Any) -> float | None:
        """The tolerance of the tables that planned `plan`; None (skipped, counted) where it cannot be had."""
        auditor = self.cache.auditor
        planner = self.cache.planners.find(plan.rules)
        if planner is None:
            auditor.skip("unknown_rules")
            return None
        rules = planner.rules
        if rules is not None and auditor.config.audit_tolerance is None and rules.scorer != self.scorer_name:
            auditor.skip("scorer_mismatch")
            if plan.rules not in self._warned:
                self._warned.add(plan.rules)
                logger.warning("flexcache audit: %s was calibrated with scorer %r (tolerance %g in its units); "
                               "audits score with %r: its rules are not audited. Audit with %r, or set "
                               "quality.audit_tolerance in %r's units", plan.rules, rules.scorer, rules.tolerance,
                               self.scorer_name, rules.scorer, self.scorer_name)
            return None
        return auditor.tolerance_for(rules.tolerance if rules is not None else None)

    def offer(self, plan: Any, signature: Any, pipeline_args: dict, call_args: dict, output: Any) -> None:
        """Queue a served hit if the auditor samples it (the oldest waiting job gives way when full)."""
        auditor = self.cache.auditor
        try:
            if not auditor.sample(plan):
                return
            tolerance = self._tolerance(plan)
            if tolerance is None:
                return
            args = {k: v for k, v in pipeline_args.items() if k not in CALLER_ONLY_ARGUMENTS}
            job = AuditJob(plan, signature, args, dict(call_args), output, tolerance,
                           auditor.generation(plan.rules, plan.rule))
            with self._lock:
                if len(self._jobs) >= auditor.config.audit_queue:
                    self._jobs.popleft()
                    auditor.count("dropped")
                self._jobs.append(job)
        except Exception as exc:  # never the call's problem
            auditor.count("failed")
            logger.warning("flexcache audit: could not queue a hit (%s: %s)", type(exc).__name__, exc)

    def run(self, binding: Any, pipe: Any, limit: int | None = None) -> int:
        """Run up to `limit` queued audits (all when None); returns how many were taken from the queue."""
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

    def _uncached_arguments(self, binding: Any, pipe: Any, job: AuditJob) -> dict:
        """The call's arguments with the initial noise of the hit's source, and a generator of its own."""
        plan, args = job.plan, dict(job.pipeline_args)
        seed = plan.source_seed if plan.source_seed is not None else plan.seed
        generator = args.get("generator")
        if isinstance(generator, (list, tuple)) and len(generator) == 1:
            generator = generator[0]
        device = generator.device if isinstance(generator, torch.Generator) else "cpu"
        # A fresh generator: the caller's is theirs (drawing from it here would change their next video).
        args["generator"] = torch.Generator(device).manual_seed(seed)
        if not binding.adapter.draws_own_noise:
            noise = seeded_noise(job.signature.latent_shape, seed, device=pipe._execution_device,
                                 dtype=job.signature.torch_dtype)
            args.update(binding.adapter.latent_arguments(pipe, job.call_args, noise, resume=False))
        return args

    def _audit(self, binding: Any, pipe: Any, job: AuditJob) -> None:
        auditor, plan = self.cache.auditor, job.plan
        stage = "read_output"
        try:
            try:
                served = self.to_video(job.output)
            except UnreadableOutput as exc:
                auditor.skip("unreadable_output")
                self._warn_once("unreadable_output", f"flexcache audit: skipped, the output cannot be read ({exc})")
                return
            stage = "uncached_run"
            args = self._uncached_arguments(binding, pipe, job)
            started = time.perf_counter()
            report = CallReport(prompt=None, tenant=binding.tenant, bypass_reason="online audit")
            with torch.inference_mode():
                # The binding's uncached path: its run lock, and in-request caches reset for the run.
                baseline = binding._uncached(pipe, args, report, started)
            auditor.count("seconds", time.perf_counter() - started)
            stage = "score"
            full = self.to_video(baseline)
            if full.shape != served.shape:
                auditor.skip("shape_mismatch")
                return
            if getattr(self.scorer, "needs_reference", False):
                drop = 1.0 - self._score(served, plan.prompt, full)
            else:
                drop = self._score(full, plan.prompt, None) - self._score(served, plan.prompt, None)
            stage = "step_down"
            planner = self.cache.planners.find(plan.rules)
            auditor.record(plan.rules, plan.rule, drop, tolerance=job.tolerance, generation=job.generation,
                           step_down=lambda: planner.step_down(plan.rule))
        except Exception as exc:
            auditor.count("failed")
            logger.warning("flexcache audit of %r failed at %s (%s: %s); the rule keeps its depth", plan.prompt[:60],
                           stage, type(exc).__name__, exc)

    def _warn_once(self, kind: str, message: str) -> None:
        if kind not in self._warned:
            self._warned.add(kind)
            logger.warning(message)


def audit_queue(cache: Any, scorer: Any, to_video: Any = None) -> AuditQueue | None:
    """The pipeline's `AuditQueue`, or None without a scorer (warned when ``quality.audit_rate`` asks for audits)."""
    if scorer is None:
        if cache.config.quality.audit_rate > 0:
            logger.warning("flexcache audit: quality.audit_rate is %g but enable_flexcache got no audit_scorer: "
                           "no hit is audited. Pass audit_scorer= (a quality.scorers scorer or a (video, prompt) "
                           "-> float callable)", cache.config.quality.audit_rate)
        return None
    return AuditQueue(cache, scorer, to_video)


__all__ = ["AuditJob", "AuditQueue", "CALLER_ONLY_ARGUMENTS", "UnreadableOutput", "audit_queue", "default_video",
           "scorer_name"]
