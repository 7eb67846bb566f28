"""How `FlexCache.plan` chooses a region hit, and how `fetch_start` builds its start latent.

A region option is one record whose object (or background) matches the
request closely enough for a row of ``planner.region_table``, at the deepest
step of that record that carries a mask. The plan takes a region option only
when it is deeper than the best whole-latent hit (a tie goes to the whole
latent: nothing to regenerate). When the best option keeps a background and
another record's object matches at the same step, the hit is composed: the
object of one over the background of the other.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from flexcache.engine.planner import Plan, SimilarityPlanner
from flexcache.engine.records import PromptRecord, SolverState
from flexcache.engine.regions import (
    broadcast_to_latent,
    compose_start,
    object_cells,
    regenerated_cells,
    to_latent_grid,
)


@dataclass(frozen=True)
class HitStart:
    """What a hit resumes from.

    Attributes:
        latent: the start latent (x_K, or x_K with a region regenerated).
        region: None for a whole-latent hit; else 1.0 where the latent starts
            again from noise, 0.0 where it is reused, shaped to broadcast
            against `latent` (channels of size 1).
        method: ``planner.region_method`` for a region hit.
        solver_state: the multistep solver's state stored with the entry
            (`SolverState`), for the resumed scheduler to restore; None for
            one-step solvers, region hits and entries stored without one.
    """

    latent: torch.Tensor
    region: torch.Tensor | None = None
    method: str | None = None
    solver_state: SolverState | None = None


@dataclass(frozen=True)
class RegionOption:
    step: int
    similarity: float
    record: PromptRecord
    kept: str  # "background" or "object"
    object_similarity: float
    background_similarity: float


def region_options_for(planner: SimilarityPlanner, record: PromptRecord, similarity: float,
                       object_similarity: float | None, background_similarity: float | None, num_steps: int, *,
                       query_has_background: bool) -> list[RegionOption]:
    """The region options one candidate record offers (lock held: reads its entries)."""
    if object_similarity is None or background_similarity is None:
        return []
    both = query_has_background and record.background_embedding is not None
    options = []
    for kept, allowed in planner.region_skip_steps(object_similarity, background_similarity, num_steps,
                                                   both_have_background=both).items():
        step = record.deepest_masked_step_at_most(allowed)
        if step is not None:
            options.append(RegionOption(step, similarity, record, kept, object_similarity, background_similarity))
    return options


def capped_options(options: list[RegionOption], record: PromptRecord, ceiling: int) -> list[RegionOption]:
    """`options` resumed no deeper than `ceiling` (another user's entry, `engine.guard`); lock held."""
    capped = []
    for option in options:
        step = option.step if option.step <= ceiling else record.deepest_masked_step_at_most(ceiling)
        if step is not None:
            capped.append(dataclasses.replace(option, step=step))
    return capped


def guarded_options(guard, gate, options: list[RegionOption], record: PromptRecord, requester: str, split,
                    num_steps: int, seed_ceiling: int | None) -> list[RegionOption]:
    """`options` of `record` that the sharing defences (`engine.guard`) let `requester` take, at the depth
    they allow (lock held): a region hit reuses, and reveals, only the part it keeps, so its askers and
    the containment gate are those of that part (`split`: the request's parts)."""
    allowed: list[RegionOption] = []
    for kept in ("object", "background"):
        kept_options = [option for option in options if option.kept == kept]
        if not kept_options or split is None or record.parts is None:
            continue
        source_text = record.parts[0] if kept == "object" else record.parts[1]
        request_text = split.object if kept == "object" else split.background
        ceiling = guard.ceiling(record, requester, matches=True, num_steps=num_steps, level=kept,
                                unasked=lambda: gate.unasked(source_text, request_text or ""))
        if ceiling is not None and seed_ceiling is not None:
            ceiling = min(ceiling, seed_ceiling)
        if ceiling is not None:
            allowed += kept_options if ceiling >= num_steps else capped_options(kept_options, record, ceiling)
    return allowed


def choose_region(options: list[RegionOption], whole_step: int) -> tuple[RegionOption, RegionOption | None] | None:
    """The region option to take (for a composed hit: the background's) and the object partner, if any.

    None when a whole-latent hit is as deep.
    """
    if not options:
        return None
    best = max(options, key=lambda o: (o.step, o.similarity, -o.record.record_id))
    if best.step <= whole_step:
        return None
    # another record that matches on the other part at the same step: keep both parts
    other_kind = "object" if best.kept == "background" else "background"
    partners = [o for o in options if o.kept == other_kind and o.record is not best.record and o.step >= best.step
                and (entry := o.record.entries.get(best.step)) is not None and entry.ready and entry.mask is not None]
    if not partners:
        return best, None
    key = (lambda o: (o.object_similarity, -o.record.record_id)) if other_kind == "object" else (
        lambda o: (o.background_similarity, -o.record.record_id))
    partner = max(partners, key=key)
    if best.kept == "object":  # the background's record leads: it is the one whose x_K is kept around the object
        best, partner = dataclasses.replace(partner, step=best.step), best
    return best, partner


def region_plan(planner: SimilarityPlanner, choice: tuple[RegionOption, RegionOption | None],
                common: dict[str, Any]) -> Plan:
    """The hit `Plan` of a chosen region option."""
    best, partner = choice
    config = planner.config
    regenerated = "composed" if partner is not None else ("object" if best.kept == "background" else "background")
    num_steps = common["signature"].num_steps
    uniform_from = planner.catch_up_end(num_steps, best.step) if config.region_method == "restart" else 0
    plan = Plan(hit=True, skip_steps=best.step, similarity=best.similarity, source_record=best.record.record_id,
                source_prompt=best.record.prompt, object_similarity=best.object_similarity,
                background_similarity=best.background_similarity, via_parts=True, source_seed=best.record.seed,
                **common)
    rule = planner.region_rules(best.object_similarity, best.background_similarity,
                                both_have_background=True).get(best.kept, (0.0, None))[1]
    return dataclasses.replace(plan, region=regenerated, region_method=config.region_method, rule=rule,
                               object_record=None if partner is None else partner.record.record_id,
                               uniform_from=uniform_from)


def region_start(regenerate: str, latent: torch.Tensor, masks: list[torch.Tensor], noise: torch.Tensor,
                 latent_shape: tuple[int, ...], frame_axis: int, *, threshold: float, dilation: int,
                 object_latent: torch.Tensor | None, method: str | None) -> HitStart:
    """Compose a region hit's start from the decoded entries and their masks (first: the kept background)."""
    cells = [to_latent_grid(object_cells(m, threshold=threshold, dilation=dilation), latent_shape, frame_axis) > 0.5
             for m in masks]
    region = regenerated_cells(regenerate, cells[0], cells[1] if len(cells) > 1 else None)

    def shaped(grid: torch.Tensor) -> torch.Tensor:
        return broadcast_to_latent(grid.float(), latent_shape, frame_axis).to(latent.device, latent.dtype)

    object_region = shaped(cells[1]) if object_latent is not None else None
    start = compose_start(latent, noise, shaped(region), object_latent=object_latent, object_region=object_region)
    return HitStart(start, shaped(region), method)


def part_similarities(record: PromptRecord, part_vectors: tuple) -> tuple[float | None, float | None]:
    """Cosines of a request's parts with a record's; (None, None) when the record has no parts."""
    if record.object_embedding is None:
        return None, None
    query_object, query_background = part_vectors
    object_similarity = float(record.object_embedding.to(query_object.device) @ query_object)
    if query_background is None or record.background_embedding is None:
        # Both without a setting match; one with and one without do not.
        background_similarity = 1.0 if query_background is None and record.background_embedding is None else 0.0
    else:
        background_similarity = float(record.background_embedding.to(query_background.device) @ query_background)
    return object_similarity, background_similarity
