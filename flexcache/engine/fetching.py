"""Serving a hit: `FlexCache.fetch` and `fetch_start` (a part of `FlexCache`, kept in its own module).

A hit decodes the entry it resumes from; a region hit also checks the
entry's mask (FXMK checksum) and composes the start latent with the region to
regenerate (`engine.region_hits`). A missing entry, a corrupt blob or an
unusable mask means None: the caller serves the request as a miss.
"""

from __future__ import annotations

import dataclasses
import logging
import time

import torch

from flexcache.codec.devices import check_device
from flexcache.core.errors import CorruptBlobError, InvalidPlanError
from flexcache.engine.guard import identity_of
from flexcache.engine.latency import timed
from flexcache.engine.planner import Plan
from flexcache.engine.records import CacheEntry, SolverState
from flexcache.engine.region_hits import HitStart, region_start
from flexcache.engine.regions import decode_mask
from flexcache.engine.solver_bundle import decode_state, split_bundle
from flexcache.kernels.noise import seeded_noise

logger = logging.getLogger("flexcache.engine.cache")


class Fetching:
    """`FlexCache`'s hit path; it uses the cache's lock, records, store, codec and counters."""

    def fetch(self, plan: Plan, device: torch.device | str | None = None) -> torch.Tensor | None:
        """The cached latent x_K a hit plan resumes from, or None if it is gone.

        None means: the entry was evicted after `plan`, or its blob (or, for a
        region hit, its mask) failed its checksum or format checks (the blob is
        then quarantined and counted in ``stats()["corrupt_blobs"]``); serve
        the request as ``plan.as_miss()``. For a region hit this is the
        composed start; `fetch_start` also gives the region to regenerate.

        Args:
            plan: a hit plan from `plan`.
            device: where the latent is wanted (None: the blob's own device,
                the CPU for host tiers). An entry in device memory (the HBM
                tier) is decoded there from the device blob itself: the blob
                never passes through the host.

        Raises:
            InvalidPlanError: `plan` is a miss.
            InvalidDeviceError: `device` is not one this machine has (a typo,
                ``"cuda"`` without CUDA); raised before the store is read, so
                no entry is touched. Any other error while decoding (device
                memory, a missing backend) propagates as it is and leaves the
                entry in place: only damage in the blob takes one out.
        """
        start = self.fetch_start(plan, device)
        return None if start is None else start.latent

    @timed("fetch")
    def fetch_start(self, plan: Plan, device: torch.device | str | None = None) -> HitStart | None:
        """What a hit resumes from: the start latent, its solver state, and for a region hit the region.

        Same contract as `fetch` (None: serve as a miss). A whole-latent hit resumes at
        ``plan.skip_steps`` from ``start.latent`` (restoring ``start.solver_state`` into a
        multistep solver when there is one). Region hits come only from ``plan(..., regions=True)``:
        ``start.region`` is 1.0 where the latent holds fresh noise from ``plan.seed``, which
        must be denoised from noise level 1 on the region's own schedule
        (`integrations.region_runs`, ``start.method``); resumed as a plain hit, that region
        stays noise.

        Example:
            >>> import torch
            >>> from flexcache import FlexCache, GenerationSignature
            >>> cache = FlexCache()
            >>> sig = GenerationSignature("my-model", "Euler", num_steps=10, height=64, width=64,
            ...                           num_frames=9, latent_shape=(4, 3, 8, 8))
            >>> miss = cache.plan("a red fox running through snow", sig)
            >>> _ = cache.insert(miss, {k: torch.randn(4, 3, 8, 8) for k in miss.checkpoint_steps})
            >>> hit = cache.plan("a red fox running through snow", sig)  # regions=False: whole latents only
            >>> start = cache.fetch_start(hit, device="cpu")
            >>> hit.skip_steps, tuple(start.latent.shape), start.region is None
            (5, (4, 3, 8, 8), True)
        """
        if not plan.hit:
            raise InvalidPlanError("fetch() needs a hit plan; run a miss in full and insert() its latents")
        device = check_device(device)  # a caller's mistake, refused before any entry is read
        loaded = self._load(plan, plan.source_record, device)
        if loaded is None:
            return None
        latent, entry, state = loaded
        start = HitStart(latent, solver_state=state)
        if plan.region is not None:
            other = None
            if plan.region == "composed":
                other = self._load(plan, plan.object_record, device)
                if other is None:
                    return None
            start = self._region_start(plan, latent, entry, other, device)
            if start is None:
                return None
        with self._lock:
            for used in (entry,) if plan.region != "composed" else (entry, other[1]):
                used.hits += 1
                used.last_access = time.monotonic()
            counters = self._counters
            counters.hits += 1
            counters.decoupled_hits += plan.via_parts
            counters.region_hits += plan.region is not None
            counters.steps_saved += plan.skip_steps
            tenant = counters.tenant(plan.tenant)
            tenant["hits"] += 1
            tenant["decoupled_hits"] += plan.via_parts
            tenant["steps_saved"] += plan.skip_steps
        return start

    def _vouch(self, plan: Plan, latents: dict[int, torch.Tensor]) -> None:
        """Let a resumed run's latents vouch for (or against) its source (`engine.guard`): one decode."""
        requester = identity_of(plan.tenant, plan.user or plan.tenant)
        with self._lock:
            record = self._records.get(plan.source_record)  # type: ignore[arg-type]
            if record is None or not self.guard.wants_vouch(record, requester, plan.similarity, plan.region):
                return
            common = [s for s in latents if (e := record.entries.get(s)) is not None and e.ready]
        if not common:
            return
        step = max(common)
        loaded = self._load(dataclasses.replace(plan, skip_steps=step), plan.source_record, None)
        if loaded is None:
            return
        stored = loaded[0].float()
        mine = latents[step].to(stored.device, torch.float32)
        norm = float(stored.norm())
        # (Zero latents, as the serving simulator's: nothing to tell apart, they agree.)
        distance = float((mine - stored).norm()) / norm if norm > 0 else float(mine.norm() > 0)
        with self._lock:
            self.guard.judge(record, requester, distance, step, plan.signature.num_steps)

    def _load(self, plan: Plan, record_id: int | None,
              device) -> tuple[torch.Tensor, CacheEntry, SolverState | None] | None:
        """Decode the entry of `record_id` at the plan's step (and its solver state); None (counted) when it is gone or corrupt.

        Only `CorruptBlobError` (the blob's own format checks failed) takes the
        entry out of service, into quarantine; any other error propagates with
        the entry left in place. `device` has been through `check_device`.
        """
        with self._lock:
            record = self._records.get(record_id)  # type: ignore[arg-type]
            entry = record.entries.get(plan.skip_steps) if record else None
            entry = entry if entry is not None and entry.ready else None
        blob = None
        if entry is not None:
            with self.store.pinned(entry.key):  # no concurrent insert evicts it while it is read
                blob = self.store.get(entry.key, device=device)
        if blob is None:
            gone = entry is not None and not self.store.contains(entry.key)
            with self._lock:
                self._counters.fetch_misses += 1
                if gone and self._entries.get(entry.key) is entry:
                    self._forget_entry(entry.key)  # the store no longer has it: stop planning on it
            return None
        try:
            blob, coded_state = split_bundle(blob)
            latent = self.codec.decode(blob, device=device)
            shape = plan.signature.latent_shape
            if tuple(latent.shape) != shape:
                raise CorruptBlobError(f"blob decodes to shape {tuple(latent.shape)}, entry expects {shape}")
            state = None
            if coded_state is not None:
                solver, scalars, coded = coded_state
                tensors = decode_state(self.codec, coded, latent, device=device)
                if any(tuple(t.shape) != shape for t in tensors.values()):
                    raise CorruptBlobError(f"a solver-state part does not decode to the latent's shape {shape}")
                state = SolverState(solver, scalars, tensors)
        except CorruptBlobError as exc:
            logger.warning("flexcache: entry %s failed its format checks (%s); quarantined, serving as a miss",
                           entry.key, exc)
            with self._lock:
                self._counters.corrupt_blobs += 1
                self._counters.fetch_misses += 1
                current = self._entries.get(entry.key) is entry  # not an entry re-inserted meanwhile
                if current:
                    self._forget_entry(entry.key)
            if current:  # kept for inspection where a tier can (disk, Redis); else removed
                self.store.remove(entry.key, quarantine=True)
            return None
        return latent, entry, state

    def _region_start(self, plan: Plan, latent: torch.Tensor, entry: CacheEntry,
                      other: tuple[torch.Tensor, CacheEntry] | None, device) -> HitStart | None:
        """Compose a region hit's start; None (counted, the mask dropped) when a mask fails its checksum."""
        config = self.config.planner
        masks = []
        for used in (entry,) if other is None else (entry, other[1]):
            if used.mask is None:  # dropped since the plan was made (it failed its checksum)
                with self._lock:
                    self._counters.fetch_misses += 1
                return None
            try:
                masks.append(decode_mask(used.mask))
            except CorruptBlobError as exc:
                logger.warning("flexcache: entry %s has an unusable mask (%s); no region hit from it", used.key, exc)
                with self._lock:
                    used.mask = None  # whole-latent hits only from now on
                    self._counters.corrupt_masks += 1
                    self._counters.fetch_misses += 1
                return None
        signature = plan.signature
        noise = seeded_noise(signature.latent_shape, plan.seed, device=latent.device, dtype=latent.dtype)
        if plan.region_method == "renoise":
            noise = noise * (entry.sigma if entry.sigma is not None else 1.0)
        return region_start(plan.region, latent, masks, noise, signature.latent_shape, signature.frame_axis,
                            threshold=config.region_threshold, dilation=config.region_dilation,
                            object_latent=None if other is None else other[0], method=plan.region_method)

