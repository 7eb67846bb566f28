"""FlexCache: the approximate latent cache (plan / fetch / insert / stats).

One request goes: `plan` embeds the prompt and searches the index partition
of its (tenant, generation signature); the planner turns the best similarity
into a skip depth K. A hit is served by `fetch`, which decodes the stored
latent x_K. A miss runs all N steps from noise seeded by `plan.seed` and
hands the latents captured at `plan.checkpoint_steps` to `insert`.

Thread-safety: one short lock guards the index and the records (what is
cached; where it lives is the store's alone). Embedding, encoding, decoding
and every store call run outside it, so a plan never waits on another
request's write, demotion or eviction.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import secrets
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from flexcache.codec.latent import LatentCodec, build_codec
from flexcache.core.blob import Blob
from flexcache.core.config import CacheConfig
from flexcache.core.errors import (
    CapacityError,
    CorruptBlobError,
    InvalidLatentError,
    InvalidPlanError,
)
from flexcache.core.types import dtype_name, is_valid_seed
from flexcache.engine.embedder import (
    TextEmbedder,
    build_embedder,
    embedder_identity,
    reembed_record,
    validate_prompts,
)
from flexcache.engine.fetching import Fetching
from flexcache.engine.containment import ContainmentGate
from flexcache.engine.guard import SharingGuard, check_identity, identity_of
from flexcache.engine.index import MISSING_ID, PartitionedIndex
from flexcache.engine.latency import LatencyHistograms, timed
from flexcache.engine.planner import Plan
from flexcache.engine.rules_book import PlannerBook
from flexcache.engine.reporting import Reporting
from flexcache.engine.records import (
    CacheEntry,
    GenerationSignature,
    PromptRecord,
    SolverState,
    decode_entry_meta,
    encode_entry_meta,
    entry_store_key,
    stable_record_id,
)
from flexcache.engine.region_hits import (
    RegionOption,
    choose_region,
    guarded_options,
    part_similarities,
    region_options_for,
    region_plan,
)
from flexcache.engine.regions import checked_mask_blob
from flexcache.engine.sharing import EventFollower, event_tiers
from flexcache.engine.solver_bundle import checked_state, encode_bundle, encode_state
from flexcache.engine.splitter import PromptParts, parts_from
from flexcache.kernels.ops import all_finite
from flexcache.store.base import Tier
from flexcache.store.factory import build_tier
from flexcache.store.integrity import checked
from flexcache.store.policy import build_policy
from flexcache.store.tiered import TieredStore

logger = logging.getLogger(__name__)

DEFAULT_TENANT = "default"


@dataclass
class CacheCounters:
    requests: int = 0
    hits: int = 0
    decoupled_hits: int = 0
    steps_total: int = 0
    steps_saved: int = 0
    inserts: int = 0
    resumed_inserts: int = 0  # of `inserts`, entries a hit's resumed run added
    duplicate_inserts: int = 0
    evictions: int = 0
    fetch_misses: int = 0
    corrupt_blobs: int = 0
    region_hits: int = 0  # of `hits`, hits that regenerated a region
    corrupt_masks: int = 0
    codec_raw_bytes: int = 0  # what the codec was handed, and made of it (`engine.metrics`)
    codec_coded_bytes: int = 0
    codec_errors: list[float] = field(default_factory=lambda: [0.0, 0])  # sum, count of achieved relative L2
    by_tenant: dict[str, dict[str, int]] = field(default_factory=dict)
    cache_errors: dict[str, int] = field(default_factory=dict)  # stage -> errors the cache path contained

    def tenant(self, name: str) -> dict[str, int]:
        return self.by_tenant.setdefault(name, {"requests": 0, "hits": 0, "decoupled_hits": 0, "steps_saved": 0})


class FlexCache(Fetching, Reporting):
    """An approximate cache of intermediate diffusion latents.

    Args:
        config: a `CacheConfig`; defaults when omitted.
        embedder: a `TextEmbedder`; the packaged MiniLM model by default.
        codec: a `LatentCodec`; built from ``config.codec`` by default.
        tiers: the store's tiers, fastest first; built from ``config.store``
            by default (2 GiB of host memory unless configured).

    A cache with a persistent tier (disk, redis) finds the entries committed
    there when it starts, and one with a shared tier (redis) follows the
    inserts and evictions other processes publish. Call `close()` (or use it
    as a context manager) to finish background copies and stop following.

    Example:
        >>> import torch
        >>> from flexcache import FlexCache, GenerationSignature
        >>> cache = FlexCache()
        >>> sig = GenerationSignature("tiny", "Euler", num_steps=10, height=64, width=64,
        ...                           num_frames=9, latent_shape=(4, 3, 8, 8))
        >>> plan = cache.plan("a red fox running through snow", sig)
        >>> plan.hit
        False
        >>> latents = {k: torch.randn(4, 3, 8, 8) for k in plan.checkpoint_steps}
        >>> _ = cache.insert(plan, latents)
        >>> again = cache.plan("a red fox running through snow", sig)
        >>> again.hit, again.skip_steps
        (True, 5)
        >>> cache.fetch(again).shape
        torch.Size([4, 3, 8, 8])
    """

    def __init__(self, config: CacheConfig | None = None, *, embedder: TextEmbedder | None = None,
                 codec: LatentCodec | None = None, tiers: list[Tier] | None = None) -> None:
        self.config = config or CacheConfig()
        build_policy(self.config.policy)  # fail early on an unknown name
        self.embedder = embedder or build_embedder(self.config.embedder)
        self.codec = codec or build_codec(self.config.codec)
        self.planners = PlannerBook(self.config.planner, self.config.embedder.model)
        self.planner = self.planners.configured  # the configured tables (what calls without a signature see)
        self.guard = SharingGuard(self.config.sharing)
        self.gate = ContainmentGate(lambda words: self.embedder.embed(words), self.config.sharing.gate_word_similarity)
        self.latency = LatencyHistograms()
        self._index: PartitionedIndex | None = None
        self._records: dict[int, PromptRecord] = {}
        # key -> entry: how a store notice finds its record. Existence only, never a tier.
        self._entries: dict[str, CacheEntry] = {}
        self._inserting: dict[int, int] = {}  # record id -> inserts in flight (its record must stay)
        self._counters = CacheCounters()
        self._lock = threading.RLock()
        if tiers is None:
            tiers = [build_tier(t, cache_name=self.config.name) for t in self.config.store.effective_tiers()]
        else:  # what leaves process memory is checksummed, whoever built the tier
            tiers = [checked(t) for t in tiers]
        self.store = TieredStore(tiers, policy=self.config.policy, queue_size=self.config.store.queue_size,
                                 on_evicted=self._on_store_evicted)
        self._follower: EventFollower | None = None
        shared = event_tiers(self.store.tiers)
        if shared:
            self._follower = EventFollower(self.adopt, self.store.disown, shared)
            self.store.on_placed, self.store.on_left = self._follower.published_insert, self._follower.published_evict
        if any(t.persistent or t.shared for t in self.store.tiers):
            self.restore()
        if self._follower is not None:
            self._follower.start()

    @property
    def tier(self):
        """The fastest tier (where new entries are written)."""
        return self.store.tiers[0]

    def close(self) -> None:
        """Stop following other processes, finish background copies, close the tiers."""
        if self._follower is not None:
            self._follower.stop()
        self.store.close()

    def __enter__(self) -> "FlexCache":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def count_error(self, stage: str) -> None:
        """Count an error of the cache path that a caller contained (the generation ran on without the cache).

        `stage` names where: ``"plan"``, ``"fetch"``, ``"insert"``, ``"mask_probe"``, ... It shows in
        ``stats()["cache_errors"]`` and as ``flexcache_cache_errors_total{stage}``.
        """
        with self._lock:
            errors = self._counters.cache_errors
            errors[stage] = errors.get(stage, 0) + 1

    # -- look-up ---------------------------------------------------------------

    @property
    def index(self) -> PartitionedIndex:
        # Built on first use: its dimension needs the embedder, which loads a model.
        if self._index is None:
            with self._lock:
                if self._index is None:
                    self._index = PartitionedIndex(self.embedder.dim, self.config.index)
        return self._index

    @timed("plan")
    def plan(self, prompt: str, signature: GenerationSignature, *, tenant: str = DEFAULT_TENANT,
             user: str | None = None, seed: int | None = None, any_seed: bool = False,
             parts: PromptParts | tuple[str, str] | None = None, regions: bool = False) -> Plan:
        """Decide whether `prompt` can resume from a cached latent, and from which step.

        Args:
            prompt: the request's prompt text.
            signature: the request's `GenerationSignature`; only entries with
                an equal signature are considered.
            tenant: whose namespace to search (its pool's, when ``sharing.pools`` puts it in one);
                other tenants' entries are never seen.
            user: who asks (default: the tenant); another user's entries pass the
                ``sharing`` defences (`engine.guard`), and `insert` records this user as writer.
            seed: the caller's seed (0 .. 2**64-1): a full run draws its noise from it, and only
                entries made from the same seed serve it at the rules' depth; another seed's entry
                serves at most ``planner.cross_seed_max_fraction`` of N (default 0: not at all), so
                a request for another seed gets another video. Omitted: a random seed, and any
                entry may serve.
            any_seed: the seed was not the user's choice (a server that always seeds its runs,
                for repeatability): `seed` seeds a full run, and any entry may serve.
            parts: (object, background) of the prompt under decoupled look-up;
                split from `prompt` by `engine.splitter.split_prompt` when omitted.
            regions: whether the caller can run a region hit (``planner.regions``
                must be on too). Off by default: a region hit's start latent holds fresh
                noise in its region, which only a run on the region schedule
                (`integrations.region_runs`, as `enable_flexcache` does) turns into video;
                resumed as a plain hit it stays garbage there. A caller that says True
                must use `fetch_start` and regenerate ``start.region``.

        Returns:
            A `Plan`; ``plan.hit`` says whether to call `fetch`.

        Raises:
            InvalidPromptError: empty or non-string prompt, bad parts, a bad tenant or user name, or a
                tenant not among ``sharing.tenants`` when those are given.
            InvalidPlanError: a seed out of range, or `signature` is not a GenerationSignature.
        """
        (prompt,) = validate_prompts([prompt])
        user = check_identity(tenant, user, self.config.sharing.tenants)
        requester = identity_of(tenant, user)
        namespace = self.guard.namespace(tenant)
        if seed is not None and not is_valid_seed(seed):
            raise InvalidPlanError(f"seed must be an int in 0 .. 2**64-1 or None; got {seed!r}")
        if not isinstance(signature, GenerationSignature):
            raise InvalidPlanError(f"signature must be a GenerationSignature; got {type(signature).__name__}")
        decoupled = self.config.planner.lookup == "decoupled"
        split = parts_from(prompt if parts is None else parts) if decoupled else None
        texts = [prompt] if split is None else [prompt, split.object] + ([split.background] if split.background else [])
        vectors = self.embedder.embed(texts)  # one embedder call for all three look-ups
        embedding = vectors[:1]
        part_vectors = None
        if split is not None:
            part_vectors = (vectors[1], vectors[2] if split.background else None)
        key = signature.key()
        num_steps = signature.num_steps
        planner = self.planners.for_signature(signature)
        seed_ceiling = None  # steps another seed's entry may serve; None: any entry serves
        if seed is not None and not any_seed:
            seed_ceiling = math.floor(self.config.planner.cross_seed_max_fraction * num_steps + 1e-9)
        k = self.config.index.candidates
        with self._lock:
            sims, ids = self.index.search((namespace, key), embedding, k)
            candidates = {int(i) for i in ids[0].tolist() if i != MISSING_ID}
            if part_vectors is not None:
                candidates |= self._part_candidates((namespace, key, "object"), part_vectors[0], k)
                if part_vectors[1] is not None:
                    candidates |= self._part_candidates((namespace, key, "background"), part_vectors[1], k)
            whole: list[tuple] = []
            use_regions = regions and part_vectors is not None and planner.config.regions
            region_options: list[RegionOption] = []
            for record_id in sorted(candidates):
                record = self._records[record_id]
                similarity = float(record.embedding.to(embedding.device) @ embedding[0])
                if part_vectors is None:
                    allowed, via_parts = planner.skip_steps(similarity, num_steps), False
                    object_similarity = background_similarity = None
                else:
                    object_similarity, background_similarity = part_similarities(record, part_vectors)
                    allowed, via_parts = planner.decoupled_skip_steps(
                        similarity, object_similarity, background_similarity, num_steps)
                step = record.deepest_step_at_most(allowed)
                options = region_options_for(
                    planner, record, similarity, object_similarity, background_similarity, num_steps,
                    query_has_background=part_vectors[1] is not None) if use_regions else []
                if record.seed != seed and seed_ceiling == 0:  # another seed's layout: not this request's video
                    continue
                ceiling = self.guard.ceiling(record, requester, matches=step is not None, num_steps=num_steps,
                                             unasked=lambda r=record: self.gate.unasked(r.prompt, prompt))
                if ceiling is not None and seed_ceiling is not None and record.seed != seed:
                    ceiling = min(ceiling, seed_ceiling)
                if ceiling is not None and ceiling < num_steps:  # another user's entry, capped
                    step = record.deepest_step_at_most(min(allowed, ceiling))
                if step is not None and ceiling is not None:
                    whole.append((step, similarity, record, object_similarity, background_similarity, via_parts))
                region_options += guarded_options(self.guard, self.gate, options, record, requester, split,
                                                  num_steps, seed_ceiling if record.seed != seed else None)
            best = self.guard.choose(whole, requester)
            region = choose_region(region_options, best[0] if best is not None else 0) if use_regions else None
            counters = self._counters
            counters.requests += 1
            counters.steps_total += num_steps
            counters.tenant(tenant)["requests"] += 1
        top_similarity = float(sims[0, 0]) if int(ids[0, 0]) != MISSING_ID else None
        run_seed = secrets.randbits(63) if seed is None else int(seed)
        common = dict(prompt=prompt, tenant=tenant, user=user, signature=signature, seed=run_seed,
                      checkpoint_steps=planner.checkpoint_steps(num_steps), embedding=embedding[0],
                      parts=None if split is None else (split.object, split.background), part_embeddings=part_vectors,
                      rules=planner.label)
        if region is not None:
            plan = region_plan(planner, region, common)
            others = [self.guard.served(option.record, requester) for option in region if option is not None]
            plan = dataclasses.replace(plan, cross_user=any(others))
            # Another tenant's prompt (a pool) is not this tenant's to read.
            return plan if region[0].record.tenant == tenant else dataclasses.replace(plan, source_prompt=None)
        if best is None:
            return Plan(hit=False, skip_steps=0, similarity=top_similarity, source_record=None,
                        source_prompt=None, **common)
        step, similarity, record, object_similarity, background_similarity, via_parts = best
        return Plan(hit=True, skip_steps=step, similarity=similarity, source_record=record.record_id,
                    source_prompt=record.prompt if record.tenant == tenant else None,
                    object_similarity=object_similarity,
                    background_similarity=background_similarity, via_parts=via_parts, source_seed=record.seed,
                    cross_user=self.guard.served(record, requester),
                    rule=planner.rule_for(similarity, object_similarity, background_similarity, via_parts), **common)

    def _part_candidates(self, partition: tuple, vector: torch.Tensor, k: int) -> set[int]:
        _, ids = self.index.search(partition, vector.unsqueeze(0), k)
        return {int(i) for i in ids[0].tolist() if i != MISSING_ID}

    # -- insertion ---------------------------------------------------------------

    @timed("insert")
    def insert(self, plan: Plan, latents: Mapping[int, torch.Tensor],
               sigmas: Mapping[int, float] | None = None,
               masks: Mapping[int, torch.Tensor] | None = None,
               solver_states: Mapping[int, SolverState] | None = None, *,
               text_conditioned: bool = False) -> list[str]:
        """Store the latents a run captured, keyed by the step they follow.

        Args:
            plan: the plan the run was made from. A miss: its seed drew the
                noise. A hit (with ``planner.cache_resumed``): the resumed
                run's checkpoints after K, `plan.run_checkpoints`; they
                carry the source's noise, so they are coded against its seed.
            latents: ``{step: x_step}``; steps in ``1 .. N-1``, each latent of
                the signature's shape (a leading batch dimension of 1 is
                accepted) and dtype, all values finite.
            sigmas: ``{step: noise level of x_step}`` where known; the codec's
                error budget is then relative to it (else relative L2).
            masks: ``{step: soft object mask}``, (frames, rows, cols) in [0, 1]
                (`integrations.attention_masks`); entries with a mask can
                serve region hits. Stored compressed and checksummed.
            solver_states: ``{step: SolverState}`` of a multistep solver
                (`integrations.solver_state`); stored with the step's latent,
                its tensors coded by the same codec (relative-L2 budget), and
                handed back by `fetch_start` so the resumed run restores it.
            text_conditioned: the run was conditioned on `plan.prompt` alone, encoded by the
                service or the pipeline (no caller-supplied embeddings, images or adapters): its
                content is what its text asks for, and other users may take it at the rules' depth.
                False (default): unverified content, which serves other users no deeper than
                ``sharing.cross_user_max_fraction`` until vouched for (README, "Threat model").

        Returns:
            Keys of the entries stored. Steps already stored for the same prompt
            are kept, not replaced (first writer wins).

        Raises:
            InvalidPlanError: `plan` is a hit and ``planner.cache_resumed`` is off.
            InvalidLatentError: a step out of range (for a hit: at or before K), or a latent of the wrong
                shape or dtype, or with NaN/inf values. Nothing is stored then.
            CapacityError: an encoded latent is larger than the whole store.
        """
        seed = plan.seed
        if plan.hit:
            if not self.config.planner.cache_resumed:
                raise InvalidPlanError("insert() of a hit plan needs planner.cache_resumed; this cache stores "
                                       "full runs (misses) only")
            early = sorted(step for step in latents if isinstance(step, int) and step <= plan.skip_steps)
            if early:
                raise InvalidLatentError(f"a run resumed at step {plan.skip_steps} did not compute steps {early}; "
                                         "insert only its later checkpoints (plan.run_checkpoints)")
            seed = plan.source_seed if plan.source_seed is not None else plan.seed
        signature = plan.signature
        checked = {step: self._checked_latent(step, latent, signature) for step, latent in latents.items()}
        writer = plan.user or plan.tenant
        # Before any encoding: a run over its writer's quota or rate costs no codec work.
        if not self.guard.may_store(identity_of(plan.tenant, writer), len(checked)):
            logger.debug("flexcache: %s/%s is over its write quota or rate; run not stored", plan.tenant, writer)
            return []
        sigmas = sigmas or {}
        mask_blobs = {step: checked_mask_blob(step, mask) for step, mask in (masks or {}).items() if step in checked}
        states = {step: checked_state(step, state, signature)
                  for step, state in (solver_states or {}).items() if step in checked}
        blobs = {step: self.codec.encode(latent, seed=seed, sigma=sigmas.get(step), frame_axis=signature.frame_axis)
                 for step, latent in sorted(checked.items())}
        self._note_coded(checked, blobs)
        for step, state in states.items():
            parts = encode_state(self.codec, state, seed=seed, sigma=sigmas.get(step),
                                 frame_axis=signature.frame_axis, latent_blob=blobs[step])
            blobs[step] = encode_bundle(blobs[step], state.solver, state.scalars, parts)
        for step, blob in blobs.items():
            if not self.store.can_hold(len(blob)):
                raise CapacityError(
                    f"an encoded latent of {len(blob)} bytes does not fit any tier (the largest holds "
                    f"{self.store.largest_fit()} bytes); raise the store's capacity"
                )
        candidate = PromptRecord(stable_record_id(plan.tenant, signature.key(), plan.prompt, writer), plan.tenant,
                                 plan.prompt, signature, seed, plan.embedding.detach(), writer=writer)
        candidate.embedder = embedder_identity(self.embedder)  # restore re-embeds entries of another
        candidate.text_conditioned = bool(text_conditioned) and self._source_text_conditioned(plan)
        candidate.borrowed = plan.hit and plan.cross_user
        if plan.parts is not None and plan.part_embeddings is not None:
            candidate.parts = plan.parts
            candidate.object_embedding = plan.part_embeddings[0].detach()
            if plan.part_embeddings[1] is not None:
                candidate.background_embedding = plan.part_embeddings[1].detach()
        # Registered under the lock, written outside it: plans see an entry once its write landed.
        writes: list[tuple[CacheEntry, Blob, bytes]] = []
        with self._lock:
            record = self._record_for(candidate)
            self._inserting[record.record_id] = self._inserting.get(record.record_id, 0) + 1
            for step, blob in blobs.items():
                if step in record.entries:
                    self._counters.duplicate_inserts += 1
                    continue
                entry = CacheEntry(record.record_id, step, signature.num_steps, len(blob),
                                   entry_store_key(record.tenant, record.record_id, step), ready=False,
                                   mask=mask_blobs.get(step), sigma=sigmas.get(step))
                record.entries[step] = entry
                self._entries[entry.key] = entry
                writes.append((entry, blob, encode_entry_meta(record, entry)))
        stored: list[str] = []
        try:
            for entry, blob, meta in writes:
                try:
                    self.store.put(entry.key, blob, meta, step=entry.step, token=entry)
                except CapacityError as exc:  # every tier refused (errors); keep serving
                    with self._lock:
                        if self._entries.get(entry.key) is entry:
                            self._forget_entry(entry.key)
                    logger.warning("flexcache: could not store %s: %s", entry.key, exc)
                    continue
                with self._lock:
                    self._mark_ready(record, entry)  # (if the store already evicted it, it is forgotten too)
                    self._counters.inserts += 1
                    self._counters.resumed_inserts += plan.hit
                stored.append(entry.key)
        finally:
            with self._lock:
                left = self._inserting[record.record_id] - 1
                if left:
                    self._inserting[record.record_id] = left
                else:
                    del self._inserting[record.record_id]
                if not record.entries and self._records.get(record.record_id) is record and not left:
                    self._drop_record(record)
        if plan.hit:
            self._vouch(plan, checked)
        return stored

    def _source_text_conditioned(self, plan: Plan) -> bool:
        """A resumed run carries its sources' early content: it follows its text only if theirs did."""
        if not plan.hit:
            return True
        with self._lock:
            sources = [self._records.get(r) for r in (plan.source_record, plan.object_record) if r is not None]
        return all(source is not None and source.text_conditioned for source in sources)

    def _record_for(self, candidate: PromptRecord) -> PromptRecord:
        """The record already known for `candidate`'s prompt, or `candidate` added (lock held)."""
        existing = self._records.get(candidate.record_id)
        if existing is not None:
            existing.text_conditioned = existing.text_conditioned and candidate.text_conditioned
            existing.borrowed = existing.borrowed or candidate.borrowed
            return existing
        key, namespace = candidate.signature.key(), self.guard.namespace(candidate.tenant)
        self._records[candidate.record_id] = candidate
        ids = torch.tensor([candidate.record_id])
        self.index.add((namespace, key), ids, candidate.embedding.unsqueeze(0))
        for part, vector in (("object", candidate.object_embedding), ("background", candidate.background_embedding)):
            if vector is not None:
                self.index.add((namespace, key, part), ids, vector.unsqueeze(0))
        return candidate

    def _mark_ready(self, record: PromptRecord, entry: CacheEntry) -> None:
        if not entry.ready:  # lock held
            entry.ready = True
            if self._entries.get(entry.key) is entry:
                self.guard.stored(record)

    def adopt(self, key: str, meta: bytes, tier_index: int) -> bool:
        """Take in an entry a tier already holds (restart scan, another process's insert).

        Returns False (and counts it) for metadata that cannot be read or does
        not belong to `key`; the tier's copy is then quarantined.
        """
        tier = self.store.tiers[tier_index]
        identity = embedder_identity(self.embedder)
        try:
            candidate, entry = decode_entry_meta(meta, self.index.dim, embedder=identity)
            if entry.key != key:
                raise CorruptBlobError(f"metadata describes {entry.key}, stored under {key}")
        except CorruptBlobError as exc:
            logger.warning("flexcache: %s tier holds unreadable entry %s (%s); quarantined", tier.name, key, exc)
            with self._lock:
                self._counters.corrupt_blobs += 1
            tier.quarantine(key)
            return False
        if candidate.embedder != identity:  # another embedder's vectors (or unnamed): never compared with ours
            try:
                reembed_record(candidate, self.embedder)
            except Exception as exc:  # the entry is sound; this process just cannot index it now
                logger.warning("flexcache: could not re-embed %s written under embedder %s: %s", key,
                               candidate.embedder, exc)
                return False
        with self._lock:
            record = self._record_for(candidate)
            entry.ready = False
            known = record.entries.setdefault(entry.step, entry)
            self._entries.setdefault(known.key, known)
            self._mark_ready(record, known)  # a tier holds it: servable, whoever wrote it
        self.store.adopt(key, meta, tier_index, step=known.step, nbytes=known.nbytes, token=known)
        return True

    def restore(self) -> int:
        """Adopt every committed entry of the persistent and shared tiers; returns how many."""
        adopted = 0
        for index, tier in enumerate(self.store.tiers):
            if tier.persistent or tier.shared:
                adopted += sum(self.adopt(key, meta, index) for key, meta in tier.scan())
        if adopted:
            logger.info("flexcache: restored %d entries", adopted)
        return adopted

    def _checked_latent(self, step: int, latent: torch.Tensor, signature: GenerationSignature) -> torch.Tensor:
        if isinstance(step, bool) or not isinstance(step, int) or not 1 <= step < signature.num_steps:
            raise InvalidLatentError(f"checkpoint step must be an int in 1..{signature.num_steps - 1}; got {step!r}")
        if not isinstance(latent, torch.Tensor):
            raise InvalidLatentError(f"latent for step {step} must be a torch.Tensor; got {type(latent).__name__}")
        if latent.dim() == len(signature.latent_shape) + 1 and latent.shape[0] == 1:
            latent = latent[0]
        if tuple(latent.shape) != signature.latent_shape:
            raise InvalidLatentError(
                f"latent for step {step} has shape {tuple(latent.shape)}; the signature expects "
                f"{signature.latent_shape} (optionally with a leading batch of 1)"
            )
        if latent.dtype != signature.torch_dtype:
            raise InvalidLatentError(
                f"latent for step {step} is {dtype_name(latent.dtype) if latent.is_floating_point() else latent.dtype}; "
                f"the signature expects {signature.latent_dtype}"
            )
        if not all_finite(latent):
            raise InvalidLatentError(f"latent for step {step} holds NaN or infinite values; it was not stored")
        return latent.detach()

    def _on_store_evicted(self, key: str, token: object) -> None:
        with self._lock:
            if self._entries.get(key) is token:  # not a newer entry re-inserted under the same key
                self._counters.evictions += 1
                self._forget_entry(key)

    def _forget_entry(self, key: str) -> None:
        """Drop an entry's bookkeeping (lock held); its record leaves the index with its last entry."""
        entry = self._entries.pop(key, None)
        if entry is None:
            return
        record = self._records.get(entry.record_id)
        if record is None:
            return
        if record.entries.get(entry.step) is entry:
            del record.entries[entry.step]
            if entry.ready:
                self.guard.forgot(record)
        if not record.entries and record.record_id not in self._inserting:
            self._drop_record(record)

    def _drop_record(self, record: PromptRecord) -> None:
        key, namespace = record.signature.key(), self.guard.namespace(record.tenant)
        ids = torch.tensor([record.record_id])
        self.index.remove((namespace, key), ids)
        for part, vector in (("object", record.object_embedding), ("background", record.background_embedding)):
            if vector is not None:
                self.index.remove((namespace, key, part), ids)
        del self._records[record.record_id]
