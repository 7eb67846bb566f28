"""The services the attacks run against: the engine API and pipeline calls, over one toy world.

A service runs requests; what it returns is what a user sees: how many
steps the run took (engine API: exactly; pipeline calls: the wall time, which
the attacker turns into steps against its own calibration) and the clip.
`requests` serves several requests concurrently: all of them are planned
before any of their runs is stored, as a service with several workers does.
"""

from __future__ import annotations

import statistics
import threading
import time
from dataclasses import dataclass, replace
from typing import Any

import torch

from flexcache.core import CacheConfig, SharingConfig
from flexcache.toyworld.model import (
    DEFAULT_FRAMES,
    DEFAULT_SIZE,
    DEFAULT_STEPS,
    MODEL_ID,
    WEIGHTS,
    PromptEncoder,
    initial_noise,
    pipeline_kwargs,
    sample,
    toyworld_pipeline,
)

UNDEFENDED = SharingConfig.undefended()
# How long one request of a concurrent batch waits for the others to be planned (a run fails open past it).
CONCURRENT_WAIT_SECONDS = 300.0


@dataclass(frozen=True)
class Request:
    """One user's request.

    Args:
        prompt: the prompt text.
        user: who sends it.
        seed: the seed the service runs it with.
        conditioning: attacker-supplied conditioning (the text whose embeddings the run gets instead of
            the prompt's); None: the service encodes the prompt itself.
        seed_chosen: the user chose the seed (honoured: only entries of that seed serve it in full);
            False: the service drew it (any entry may serve).
    """

    prompt: str
    user: str
    seed: int
    conditioning: str | None = None
    seed_chosen: bool = False


def config_for(sharing: SharingConfig) -> CacheConfig:
    # The engine-API services sign calls as the toy world but not with its scheduler's digest: serve them
    # the toy world's calibrated tables, as its pipeline calls get them.
    return replace(CacheConfig.from_dict({"embedder": {"device": "cpu"}, "index": {"device": "cpu"},
                                          "planner": {"uncalibrated": "tables"}}), sharing=sharing)


def toyworld_signature():
    from flexcache import GenerationSignature

    return GenerationSignature(MODEL_ID, "FlowMatchEulerDiscreteScheduler", num_steps=DEFAULT_STEPS,
                               height=DEFAULT_SIZE, width=DEFAULT_SIZE, num_frames=DEFAULT_FRAMES,
                               latent_shape=(3, DEFAULT_FRAMES, DEFAULT_SIZE, DEFAULT_SIZE))


class World:
    """What every run shares: pipelines (built on demand), the prompt encoder and one memoized embedder."""

    def __init__(self) -> None:
        from flexcache.benchmarks.serve.simulate import MemoizedEmbedder
        from flexcache.core import EmbedderConfig
        from flexcache.engine import build_embedder

        self._pipes: list[Any] = []
        self._offline: Any = None
        self.encoder = PromptEncoder()
        self.embedder = MemoizedEmbedder(build_embedder(EmbedderConfig(device="cpu")))
        self.signature = toyworld_signature()
        # What attackers work out offline on the public model, kept across runs: each defence meets the same targets.
        self.offline_results: dict[Any, Any] = {}

    @staticmethod
    def _new_pipe():
        pipe = toyworld_pipeline(WEIGHTS)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def pipeline(self, worker: int = 0):
        """The service's `worker`-th pipeline (the same weights): concurrent pipeline calls need one each."""
        while len(self._pipes) <= worker:
            self._pipes.append(self._new_pipe())
        return self._pipes[worker]

    @property
    def pipe(self):
        return self.pipeline(0)

    @property
    def offline_pipe(self):
        """The attacker's own copy of the public model, never behind a cache."""
        if self._offline is None:
            self._offline = self._new_pipe()
        return self._offline

    def cache(self, sharing: SharingConfig):
        from flexcache import FlexCache

        return FlexCache(config_for(sharing), embedder=self.embedder)


# -- the service, two ways -------------------------------------------------------------------------------


class EngineService:
    """A service on the engine API: runs are the toy world's `sample`, or none when content does not matter."""

    def __init__(self, world: World, sharing: SharingConfig, *, denoise: bool) -> None:
        self.world, self.denoise = world, denoise
        self.cache = world.cache(sharing)

    def request(self, prompt: str, user: str, seed: int, conditioning: str | None = None,
                seed_chosen: bool = False) -> tuple[int, Any]:
        """(steps run, clip or None) for one request; the run's checkpoints are stored as the service does."""
        return self.requests([Request(prompt, user, seed, conditioning, seed_chosen)])[0]

    def requests(self, batch: list[Request]) -> list[tuple[int, Any]]:
        """Concurrent requests: all planned, then all run, then all stored; (steps run, clip) for each."""
        cache, sig, steps = self.cache, self.world.signature, self.world.signature.num_steps
        plans = [cache.plan(r.prompt, sig, user=r.user, seed=r.seed, any_seed=not r.seed_chosen, regions=False)
                 for r in batch]
        self.last_plans = plans
        starts = [cache.fetch(plan) if plan.hit else None for plan in plans]
        runs = [plan if start is not None else plan.as_miss() for plan, start in zip(plans, starts)]
        skips = [plan.skip_steps if start is not None else 0 for plan, start in zip(plans, starts)]
        clips: list[Any] = [None] * len(batch)
        captured: list[dict[int, torch.Tensor]] = [{} for _ in batch]
        if self.denoise:
            for skip in sorted(set(skips)):  # one batched run per depth
                group = [i for i, s in enumerate(skips) if s == skip]
                embeds = self.world.encoder([batch[i].conditioning or batch[i].prompt for i in group])
                latents = torch.stack([starts[i] if starts[i] is not None else initial_noise([runs[i].seed])[0]
                                       for i in group])
                out, trajectory = sample(self.world.pipe, embeds, latents, skip=skip, capture=True)
                for row, i in enumerate(group):
                    clips[i] = out[row].clamp(-1, 1)
                    captured[i] = {s: trajectory[s - skip][row] for s in runs[i].run_checkpoints}
        else:  # content is never read: any latent of the right shape
            for i, run in enumerate(runs):
                captured[i] = {s: torch.randn(sig.latent_shape, generator=torch.Generator().manual_seed(batch[i].seed + s))
                               for s in run.run_checkpoints}
        for request, run, latents in zip(batch, runs, captured):
            if latents:
                # The service encoded the text itself unless the request carried its own conditioning.
                cache.insert(run, latents, text_conditioned=request.conditioning is None)
        return [(steps - skip, clip) for skip, clip in zip(skips, clips)]

    def close(self) -> None:
        self.cache.close()


class PipelineService:
    """A service of pipeline calls; the attacker sees wall time (its calibration turns it into steps)."""

    def __init__(self, world: World, sharing: SharingConfig) -> None:
        self.world = world
        self.cache = world.cache(sharing)
        self.full_seconds: dict[str, list[float]] = {}
        self._workers: list[Any] = []
        self._worker(0)

    def _worker(self, index: int):
        """The `index`-th pipeline, behind this service's cache."""
        from flexcache.integrations.diffusers import enable_flexcache

        while len(self._workers) <= index:
            pipe = self.world.pipeline(len(self._workers))
            enable_flexcache(pipe, self.cache, model_id=MODEL_ID)
            self._workers.append(pipe)
        return self._workers[index]

    def timed(self, prompt: str, user: str, seed: int, conditioning: str | None = None, seed_chosen: bool = False,
              *, worker: int = 0, on_first_step=None, embeds: torch.Tensor | None = None) -> tuple[float, Any]:
        pipe = self._worker(worker)
        kwargs = pipeline_kwargs(self.world.encoder([conditioning or prompt]) if embeds is None else embeds)
        if on_first_step is not None:
            kwargs["callback_on_step_end"] = on_first_step
        started = time.perf_counter()
        with torch.inference_mode():
            # The service computed prompt_embeds from the prompt text itself, unless the request carried its own.
            out = pipe(prompt=prompt, negative_prompt="", flexcache_user=user,
                       generator=torch.Generator().manual_seed(seed), flexcache_any_seed=not seed_chosen,
                       flexcache_text_conditioned=conditioning is None, **kwargs).frames
        return time.perf_counter() - started, out[0].clamp(-1, 1)

    def calibrate(self, user: str, seed: int) -> None:
        """The user's full-run time: requests no cache can hold (nonsense, never asked before)."""
        times = [self.timed(f"zq{seed}x{i} vrk plo", user, seed + i)[0] for i in range(3)]
        self.full_seconds[user] = times

    def _steps(self, user: str, seconds: float) -> int:
        full = statistics.median(self.full_seconds[user]) if user in self.full_seconds else seconds
        steps = self.world.signature.num_steps
        return min(steps, round(steps * seconds / full)) if full else steps

    def request(self, prompt: str, user: str, seed: int, conditioning: str | None = None,
                seed_chosen: bool = False) -> tuple[int, Any]:
        seconds, clip = self.timed(prompt, user, seed, conditioning, seed_chosen)
        return self._steps(user, seconds), clip

    def requests(self, batch: list[Request]) -> list[tuple[int, Any]]:
        """Concurrent calls, one pipeline each: none passes its first step before all are planned."""
        if len(batch) == 1:
            r = batch[0]
            return [self.request(r.prompt, r.user, r.seed, r.conditioning, r.seed_chosen)]
        for index in range(len(batch)):
            self._worker(index)
        # Text models are called here, not from the calls' threads (a tokenizer serves one thread at a time).
        embeds = [self.world.encoder([r.conditioning or r.prompt]) for r in batch]
        self.world.embedder.prefill(r.prompt for r in batch)
        barrier = threading.Barrier(len(batch))
        results: list[Any] = [None] * len(batch)

        def call(index: int, request: Request) -> None:
            waited = []

            # A call plans before its first step, and stores its run after its last.
            def on_first_step(_pipe, _step, _timestep, callback_kwargs):
                if not waited:
                    waited.append(True)
                    try:
                        barrier.wait(CONCURRENT_WAIT_SECONDS)
                    except threading.BrokenBarrierError:
                        pass  # another call failed: this one goes on alone
                return callback_kwargs

            try:
                results[index] = self.timed(request.prompt, request.user, request.seed, request.conditioning,
                                            request.seed_chosen, worker=index, on_first_step=on_first_step,
                                            embeds=embeds[index])
            except BaseException as exc:  # noqa: BLE001 - handed to the caller below
                barrier.abort()
                results[index] = exc

        threads = [threading.Thread(target=call, args=(i, r), daemon=True) for i, r in enumerate(batch)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for result in results:
            if isinstance(result, BaseException):
                raise result
        # Concurrent calls share the CPU: their wall time reads long, so timing tells little here.
        return [(self._steps(r.user, seconds), clip) for r, (seconds, clip) in zip(batch, results)]

    def close(self) -> None:
        from flexcache.integrations.diffusers import disable_flexcache

        for pipe in self._workers:
            disable_flexcache(pipe)
        self.cache.close()


class Shadow:
    """An attacker's model of what its own entries explain (the same engine, its requests only)."""

    def __init__(self, world: World, *, regions: bool = False) -> None:
        self.world, self.regions = world, regions
        self.cache = world.cache(UNDEFENDED)

    def _plan(self, prompt: str, seed: int):
        return self.cache.plan(prompt, self.world.signature, seed=seed, any_seed=True, regions=self.regions)

    def hits(self, prompt: str) -> bool:
        """Whether the attacker's own entries would serve `prompt` (nothing is stored)."""
        return self._plan(prompt, 0).hit

    def expected_steps(self, prompt: str, seed: int) -> int:
        """Steps a request of `prompt` runs given the attacker's own entries; the request is then stored."""
        sig = self.world.signature
        plan = self._plan(prompt, seed)
        if plan.run_checkpoints:  # what the service stores of the attacker's run
            shape = sig.latent_shape
            masks = {s: torch.ones(shape[1:]) for s in plan.run_checkpoints} if self.regions else None
            self.cache.insert(plan, {s: torch.zeros(shape) for s in plan.run_checkpoints}, masks=masks)
        return sig.num_steps - plan.skip_steps

    def close(self) -> None:
        self.cache.close()
