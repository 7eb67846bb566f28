"""The pairs a calibration measures: prompt pairs in similarity bands, per rule, within a run budget.

A *rule* is how a target reuses a source (the whole latent, or a region keeping one part) and the
cosine that decides it (the full prompt's, the object part's or the background part's). Each
rule's cosine range is cut into bands; calibration fits one depth per band. Pairs come from the
operator's prompt file: every ordered pair of distinct prompts (and, for the full prompt's top
band, a prompt with itself) falls in one band per rule. Pairs are chosen so that runs are shared:
a prompt's full run serves every pair it is in, and a whole-latent resumed run serves the three
whole-latent rules at once.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from flexcache.errors import CalibrationError

WHOLE = "whole"
# rule -> (how the target reuses the source, the cosine that decides it)
RULES: dict[str, tuple[str, str]] = {
    "full": (WHOLE, "full"),
    "object_part": (WHOLE, "object"),
    "background_part": (WHOLE, "background"),
    "region_background": ("region:background", "background"),  # the setting kept, the object regenerated
    "region_object": ("region:object", "object"),  # the object kept, the setting regenerated
}
SAME_TEXT = 0.9999  # the same prompt up to embedding noise
# Few, wide bands: a band needs about 30 pairs that all keep their quality before its bound admits a
# 2-point tolerance (`calibrate`), and the budget pays every pair at every candidate depth.
BAND_EDGES: dict[str, tuple[float, ...]] = {
    "full": (0.70, 0.85, 0.95, SAME_TEXT),
    "object": (0.70, 0.85, 0.95),
    "background": (0.70, 0.85, 0.95),
}


@dataclass(frozen=True)
class Pair:
    """Target `target` resumed from source `source` (indices into the prompt list)."""

    source: int
    target: int


@dataclass
class Cosines:
    """The prompts' pairwise cosines: full prompt, object part, background part (NaN: no setting)."""

    full: torch.Tensor
    object: torch.Tensor
    background: torch.Tensor
    has_background: torch.Tensor

    def of(self, kind: str) -> torch.Tensor:
        return getattr(self, kind)


def prompt_cosines(prompts: list[str], embedder) -> Cosines:
    """Cosines of every prompt pair as the cache's look-up sees them (`engine.split_prompt` parts)."""
    from flexcache.engine import split_prompt

    parts = [split_prompt(p) for p in prompts]
    has_background = torch.tensor([p.background is not None for p in parts])

    def matrix(texts: list[str]) -> torch.Tensor:
        vectors = embedder.embed(texts).float().cpu()
        return vectors @ vectors.T

    background = matrix([p.background or "-" for p in parts])
    both = has_background[:, None] & has_background[None, :]
    background = torch.where(both, background, torch.full_like(background, float("nan")))
    return Cosines(matrix(prompts), matrix([p.object for p in parts]), background, has_background)


def band_of(edges: tuple[float, ...], cosine: float) -> int | None:
    """The band a cosine falls in (index of its lower edge), None below the first."""
    band = None
    for index, edge in enumerate(edges):
        if cosine >= edge:
            band = index
    return band


def band_label(edges: tuple[float, ...], band: int) -> str:
    high = edges[band + 1] if band + 1 < len(edges) else 1.0
    return f"{edges[band]:.4g}-{high:.4g}"


def candidate_pairs(cosines: Cosines, rule: str) -> dict[int, list[Pair]]:
    """Per band, the ordered prompt pairs whose rule cosine falls in it."""
    method, kind = RULES[rule]
    edges = BAND_EDGES[kind]
    matrix = cosines.of(kind)
    count = matrix.shape[0]
    out: dict[int, list[Pair]] = {}
    for source in range(count):
        for target in range(count):
            if source == target and rule != "full":
                continue  # a prompt with itself: only the full prompt's same-text band
            if method == "region:background" and not (cosines.has_background[source] and cosines.has_background[target]):
                continue  # a background region rule needs a setting on both sides
            cosine = float(matrix[source, target])
            if cosine != cosine:  # NaN: no setting on one side
                continue
            if source == target:
                cosine = 1.0
            band = band_of(edges, cosine)
            if band is not None:
                out.setdefault(band, []).append(Pair(source, target))
    return out


@dataclass
class Selection:
    """The pairs chosen per (rule, band), and the runs they cost."""

    pairs: dict[tuple[str, int], list[Pair]]
    full_runs: set[int]
    resumed: set[tuple[int, int, str]]  # (source, target, method)
    fractions: tuple[float, ...]

    @property
    def runs(self) -> int:
        return len(self.full_runs) + len(self.resumed) * len(self.fractions)


def select_pairs(cosines: Cosines, *, fractions: tuple[float, ...], budget_runs: int, pairs_per_band: int,
                 rules: tuple[str, ...] = tuple(RULES), seed: int = 0, scan: int = 400) -> Selection:
    """Choose pairs round-robin over (rule, band) cells, each time the one that costs the fewest new runs.

    Args:
        cosines: `prompt_cosines` of the prompt file.
        fractions: the candidate depths (fractions of N) every pair is resumed at.
        budget_runs: pipeline runs allowed in all (full runs plus resumed runs).
        pairs_per_band: the most pairs any band gets.
        rules: the rules to calibrate.
        seed: the shuffle of candidates.
        scan: candidates looked at per pick (the cheapest of them wins).
    """
    rng = random.Random(seed)
    candidates = {}
    for rule in rules:
        for band, pairs in candidate_pairs(cosines, rule).items():
            rng.shuffle(pairs)
            candidates[(rule, band)] = pairs
    selection = Selection({cell: [] for cell in candidates}, set(), set(), tuple(fractions))
    used: dict[tuple[str, int], int] = {cell: 0 for cell in candidates}  # candidates consumed per cell

    def cost(pair: Pair, method: str) -> int:
        new_prompts = len({pair.source, pair.target} - selection.full_runs)
        return new_prompts + (0 if (pair.source, pair.target, method) in selection.resumed else len(fractions))

    progress = True
    while progress:
        progress = False
        for cell, pool in candidates.items():
            if len(selection.pairs[cell]) >= pairs_per_band or used[cell] >= len(pool):
                continue
            method = RULES[cell[0]][0]
            window = [p for p in pool[used[cell]:used[cell] + scan] if p not in selection.pairs[cell]]
            if not window:
                used[cell] = len(pool)
                continue
            best = min(window, key=lambda p: cost(p, method))
            if selection.runs + cost(best, method) > budget_runs:
                continue
            selection.pairs[cell].append(best)
            selection.full_runs |= {best.source, best.target}
            selection.resumed.add((best.source, best.target, method))
            pool.remove(best)
            progress = True
    return selection


def require_enough(selection: Selection, *, min_pairs: int, prompts: int, budget_runs: int) -> None:
    """Refuse a calibration that cannot fit even the full prompt's rule.

    Raises:
        CalibrationError: no band of the full-prompt rule got `min_pairs` pairs; the message says
            how many prompts and runs it would take.
    """
    full = {band: len(pairs) for (rule, band), pairs in selection.pairs.items() if rule == "full"}
    if any(count >= min_pairs for count in full.values()):
        return
    per_pair = len(selection.fractions) + 2
    raise CalibrationError(
        f"{prompts} prompts and a budget of {budget_runs} runs give the full-prompt rule at most "
        f"{max(full.values(), default=0)} pairs in any similarity band; fitting a band needs {min_pairs} "
        f"(each pair costs {len(selection.fractions)} resumed runs plus up to 2 full runs, about {per_pair}). "
        f"Give at least {min_pairs * per_pair * 2} runs (--budget-runs) and a prompt file with related "
        "prompts (edits, rewordings, shared subjects and settings): a few hundred of your own requests "
        "usually hold enough")


__all__ = ["BAND_EDGES", "Cosines", "Pair", "RULES", "SAME_TEXT", "Selection", "band_label", "band_of",
           "candidate_pairs", "prompt_cosines", "require_enough", "select_pairs"]
