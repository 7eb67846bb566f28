"""Similarity -> skip depth K, and the `Plan` a request carries through the cache.

NIRVANA (Agarwal et al., NSDI'24, Table 2) maps the cosine similarity of the
best cached prompt to how many of N steps can be skipped; the default table
is theirs, expressed as fractions of N so it carries over to any step count.
"""

from __future__ import annotations

import dataclasses
import threading
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


def full_rule_id(threshold: float) -> str:
    return f"full@{threshold:.4g}"


def part_rule_id(min_object: float, min_background: float) -> str:
    return f"part@{min_object:.4g}/{min_background:.4g}"


def region_rule_id(part: str, threshold: float) -> str:
    return f"region:{part}@{threshold:.4g}"


class SimilarityPlanner:
    """Maps a similarity to the number of steps a hit may skip.

    Each table row is a *rule* with an id (``full@0.8663``, ``part@0.8119/-1``,
    ``region:background@0.8755``) that plans carry (`Plan.rule`); `step_down` lowers one rule's
    depth by one checkpoint while the process runs (online audits, `quality.audits`).

    Args:
        config: the tables and the checkpoint fractions.
        label: which tables these are, as plans and reports name them (``rules``).
        rules: the calibrated rules file they came from, if any.
    """

    def __init__(self, config: PlannerConfig | None = None, *, label: str = "configured",
                 rules=None) -> None:
        self.config = config or PlannerConfig()
        self.label = label
        self.rules = rules
        self._caps: dict[str, float] = {}
        self._caps_lock = threading.Lock()

    def _capped(self, rule_id: str, fraction: float) -> float:
        cap = self._caps.get(rule_id)
        return fraction if cap is None else min(fraction, cap)

    def caps(self) -> dict[str, float]:
        """The rules `step_down` lowered, with the fraction of N each serves now."""
        with self._caps_lock:
            return dict(self._caps)

    def rule_fractions(self) -> dict[str, float]:
        """Every rule's id and the fraction of N it serves now (after any `step_down`)."""
        rows = [(full_rule_id(t), f) for t, f in self.config.similarity_table]
        rows += [(part_rule_id(o, b), f) for o, b, f in self.config.part_table]
        if self.config.regions:
            rows += [(region_rule_id(p, t), f) for p, t, f in self.config.region_table]
        return {rule: self._capped(rule, fraction) for rule, fraction in rows}

    def step_down(self, rule_id: str) -> float:
        """Lower rule `rule_id` to the next checkpoint fraction below its depth now (0.0: off).

        Returns:
            The fraction of N the rule serves from now on.

        Raises:
            KeyError: no rule of these tables has that id.
        """
        current = self.rule_fractions()[rule_id]
        lower = [f for f in self.config.checkpoint_fractions if f < current - 1e-9]
        new = max(lower, default=0.0)
        with self._caps_lock:
            self._caps[rule_id] = min(new, self._caps.get(rule_id, new))
            return self._caps[rule_id]

    def full_rule(self, similarity: float) -> tuple[float, str | None]:
        """(fraction of N, id of the row that gave it) for a full-prompt similarity; (0.0, None): miss."""
        best: tuple[float, str | None] = (0.0, None)
        for threshold, row_fraction in self.config.similarity_table:
            if similarity >= threshold:
                best = (row_fraction, full_rule_id(threshold))
        if best[1] is None:
            return best
        return self._capped(best[1], best[0]), best[1]

    def part_rule(self, object_similarity: float | None,
                  background_similarity: float | None) -> tuple[float, str | None]:
        """(fraction of N, row id) the decoupled rules allow for these part similarities."""
        best: tuple[float, str | None] = (0.0, None)
        if object_similarity is None or background_similarity is None:
            return best
        for min_object, min_background, row_fraction in self.config.part_table:
            if object_similarity >= min_object and background_similarity >= min_background:
                rule = part_rule_id(min_object, min_background)
                fraction = self._capped(rule, row_fraction)
                if fraction > best[0]:
                    best = (fraction, rule)
        return best

    def skip_fraction(self, similarity: float) -> float:
        """Fraction of N to skip; 0.0 means miss."""
        return self.full_rule(similarity)[0]

    def rule_for(self, similarity: float | None, object_similarity: float | None,
                 background_similarity: float | None, via_parts: bool) -> str | None:
        """The id of the rule that set a whole-latent hit's depth."""
        if via_parts:
            return self.part_rule(object_similarity, background_similarity)[1]
        return None if similarity is None else self.full_rule(similarity)[1]

    def skip_steps(self, similarity: float, num_steps: int) -> int:
        """Steps the table allows at this similarity (0 = miss), never all N."""
        fraction = self.skip_fraction(similarity)
        if fraction == 0.0:
            return 0
        return min(num_steps - 1, max(1, round(fraction * num_steps)))

    def part_fraction(self, object_similarity: float | None, background_similarity: float | None) -> float:
        """Fraction of N the decoupled rules allow for these part similarities (0.0: none applies)."""
        return self.part_rule(object_similarity, background_similarity)[0]

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
        allowed = self.region_rules(object_similarity, background_similarity, both_have_background=both_have_background)
        return {part: min(num_steps - 1, max(1, round(fraction * num_steps)))
                for part, (fraction, _) in allowed.items() if fraction > 0}

    def region_rules(self, object_similarity: float, background_similarity: float, *,
                     both_have_background: bool) -> dict[str, tuple[float, str]]:
        """Per part kept: (fraction of N, row id) of the deepest region row that applies."""
        similarity = {"object": object_similarity, "background": background_similarity}
        allowed: dict[str, tuple[float, str]] = {}
        for part, minimum, row_fraction in self.config.region_table:
            if part == "background" and not both_have_background:
                continue
            if similarity[part] >= minimum:
                rule = region_rule_id(part, minimum)
                fraction = self._capped(rule, row_fraction)
                if fraction > allowed.get(part, (0.0, ""))[0]:
                    allowed[part] = (fraction, rule)
        return allowed

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
        rules: which tables planned it (`engine.rules_book`): ``"rules file NAME"``, ``"toyworld"``
            (the shipped calibration), ``"configured"`` (the operator's) or ``"uncalibrated"``.
        rule: the id of the table row that set K (`SimilarityPlanner`); None on a miss.
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
    rules: str | None = None
    rule: str | None = None

    @property
    def num_steps(self) -> int:
        return self.signature.num_steps

    def as_miss(self) -> "Plan":
        return dataclasses.replace(self, hit=False, skip_steps=0, source_record=None, source_prompt=None,
                                   object_similarity=None, background_similarity=None, via_parts=False,
                                   source_seed=None, region=None, object_record=None, region_method=None,
                                   uniform_from=0, cross_user=False, rule=None)

    @property
    def run_checkpoints(self) -> tuple[int, ...]:
        """The checkpoints the run this plan starts passes: all on a miss, those after K on a hit."""
        return tuple(step for step in self.checkpoint_steps if step > self.skip_steps and step >= self.uniform_from)
