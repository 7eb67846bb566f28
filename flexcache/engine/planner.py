"""Similarity -> skip depth K, and the `Plan` a request carries through the cache.

NIRVANA (Agarwal et al., NSDI'24, Table 2) maps the cosine similarity of the
best cached prompt to how many of N steps can be skipped; the default table
is theirs, expressed as fractions of N so it carries over to any step count.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from flexcache.core.config import PlannerConfig
from flexcache.engine.records import GenerationSignature


def checkpoint_steps(num_steps: int, fractions: tuple[float, ...]) -> tuple[int, ...]:
    """Steps after which a miss captures its latent, e.g. N=50 -> (5, 10, 15, 20, 25).

    Steps are rounded, deduplicated and kept within ``1 .. N-1`` so a resumed
    run always has at least one step left.
    """
    steps = {min(num_steps - 1, max(1, round(f * num_steps))) for f in fractions}
    return tuple(sorted(steps))


class SimilarityPlanner:
    """Maps a similarity to the number of steps a hit may skip."""

    def __init__(self, config: PlannerConfig | None = None) -> None:
        self.config = config or PlannerConfig()

    def skip_fraction(self, similarity: float) -> float:
        """Fraction of N to skip; 0.0 means miss."""
        fraction = 0.0
        for threshold, row_fraction in self.config.similarity_table:
            if similarity >= threshold:
                fraction = row_fraction
        return fraction

    def skip_steps(self, similarity: float, num_steps: int) -> int:
        """Steps the table allows at this similarity (0 = miss), never all N."""
        fraction = self.skip_fraction(similarity)
        if fraction == 0.0:
            return 0
        return min(num_steps - 1, max(1, round(fraction * num_steps)))

    def part_fraction(self, object_similarity: float | None, background_similarity: float | None) -> float:
        """Fraction of N the decoupled rules allow for these part similarities (0.0: none applies)."""
        if object_similarity is None or background_similarity is None:
            return 0.0
        fraction = 0.0
        for min_object, min_background, row_fraction in self.config.part_table:
            if object_similarity >= min_object and background_similarity >= min_background:
                fraction = max(fraction, row_fraction)
        return fraction

    def decoupled_skip_steps(self, similarity: float, object_similarity: float | None,
                             background_similarity: float | None, num_steps: int) -> tuple[int, bool]:
        """(K, whether the part rules allowed more than the full prompt alone)."""
        full = self.skip_fraction(similarity)
        parts = self.part_fraction(object_similarity, background_similarity)
        fraction = max(full, parts)
        if fraction == 0.0:
            return 0, False
        return min(num_steps - 1, max(1, round(fraction * num_steps))), parts > full

    def region_skip_steps(self, object_similarity: float | None, background_similarity: float | None,
                          num_steps: int, *, both_have_background: bool) -> dict[str, int]:
        """K each region rule allows, keyed by the part kept (``"background"``, ``"object"``); 0 rules left out.

        A background rule needs a setting on both sides: a prompt with no
        background part never keeps another entry's background.
        """
        if not self.config.regions or object_similarity is None or background_similarity is None:
            return {}
        similarity = {"object": object_similarity, "background": background_similarity}
        allowed: dict[str, float] = {}
        for part, minimum, fraction in self.config.region_table:
            if part == "background" and not both_have_background:
                continue
            if similarity[part] >= minimum:
                allowed[part] = max(allowed.get(part, 0.0), fraction)
        return {part: min(num_steps - 1, max(1, round(fraction * num_steps))) for part, fraction in allowed.items()}

    def catch_up_end(self, num_steps: int, skip: int) -> int:
        """The step after which a restarted region has caught up (the latent is uniform again)."""
        from flexcache.engine.regions import catch_up_steps

        return skip + catch_up_steps(num_steps, skip, self.config.region_catch_up)

    def checkpoint_steps(self, num_steps: int) -> tuple[int, ...]:
        return checkpoint_steps(num_steps, self.config.checkpoint_fractions)


@dataclass(frozen=True)
class Plan:
    """What the cache decided for one request.

    A hit names the entry to fetch and the step K to resume from; every plan
    also carries the seed and checkpoint steps a full run should use, so a hit
    whose fetch fails (evicted meanwhile, corrupt blob) becomes a miss with
    `as_miss()` and still fills the cache.

    Attributes:
        prompt, tenant, signature: the request.
        user: who made it (the tenant when not given); the writer of what `insert` stores.
        hit: whether `fetch` should be called.
        skip_steps: K, the steps a hit skips (0 on a miss).
        similarity: cosine similarity to the best candidate (None when the
            partition was empty).
        source_record: the record a hit resumes from.
        source_prompt: that record's prompt (for reports; same tenant only).
        source_seed: the seed that record's noise came from: a resumed run
            carries that noise, so its later checkpoints are coded against it.
        seed: the seed of the initial noise for a full run.
        checkpoint_steps: steps after which a full run captures latents.
        embedding: the prompt's unit vector, reused by `insert`.
        parts: (object part, background part) under decoupled look-up, else None.
        part_embeddings: their unit vectors (background None when empty).
        object_similarity, background_similarity: the hit's part similarities
            (None on a miss or under full-prompt look-up).
        via_parts: the hit's K came from the part rules (the full prompt alone
            would have allowed less, or missed).
        region: None for a whole-latent hit; else the part generated anew:
            ``"object"``, ``"background"`` or ``"composed"`` (the object of
            `object_record` over the background of `source_record`).
        object_record: a composed hit's second record.
        region_method: how the region is regenerated (``planner.region_method``).
        uniform_from: the step from which the run's latent has one noise level
            again (a restarted region catches up there); earlier checkpoints
            of the run are not cached.
        cross_user: the hit resumes from another user's entry (what ``sharing.latency_padding`` pads).
    """

    prompt: str
    tenant: str
    signature: GenerationSignature
    hit: bool
    skip_steps: int
    similarity: float | None
    source_record: int | None
    source_prompt: str | None
    seed: int
    checkpoint_steps: tuple[int, ...]
    embedding: torch.Tensor = dataclasses.field(repr=False, compare=False)
    parts: tuple[str, str] | None = None
    part_embeddings: tuple[torch.Tensor, torch.Tensor | None] | None = dataclasses.field(
        default=None, repr=False, compare=False)
    object_similarity: float | None = None
    background_similarity: float | None = None
    via_parts: bool = False
    source_seed: int | None = None
    region: str | None = None
    object_record: int | None = None
    region_method: str | None = None
    uniform_from: int = 0
    user: str | None = None
    cross_user: bool = False

    @property
    def num_steps(self) -> int:
        return self.signature.num_steps

    def as_miss(self) -> "Plan":
        return dataclasses.replace(self, hit=False, skip_steps=0, source_record=None, source_prompt=None,
                                   object_similarity=None, background_similarity=None, via_parts=False,
                                   source_seed=None, region=None, object_record=None, region_method=None,
                                   uniform_from=0, cross_user=False)

    @property
    def run_checkpoints(self) -> tuple[int, ...]:
        """The checkpoints the run this plan starts passes: all on a miss, those after K on a hit."""
        return tuple(step for step in self.checkpoint_steps if step > self.skip_steps and step >= self.uniform_from)
