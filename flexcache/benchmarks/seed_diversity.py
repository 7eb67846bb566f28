"""Seed diversity on the toy world: does a request for another seed still get another video from a hit?

A user who asks again with another seed ("regenerate") wants a variation. Served from an entry of the
first seed, the request resumes from that seed's x_K, whose layout is already drawn. For each case
(identical prompt, near-duplicate prompt) and each K this measures

    seed_diversity(K) = d(target from seed A, target for seed B served from seed A's x_K)
                        / d(target from seed A, target from seed B)

with d the RMS pixel distance: 1.0 at K = 0 (a miss from seed B's own noise), 0.0 when another seed
brings back the same video. `planner.cross_seed_max_fraction` (default 0) is read against it.
"""

from __future__ import annotations

import random
from typing import Any

import torch

from flexcache.toyworld.cases import related_request, request_for
from flexcache.toyworld.model import initial_noise, sample
from flexcache.toyworld.world import held_out_specs

SEED_DIVERSITY_CASES = ("identical", "near-duplicate")


def _distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """RMS pixel distance per clip, in [0, 1] pixel units."""
    return ((a.clamp(-1, 1) - b.clamp(-1, 1)) / 2).pow(2).mean(dim=(1, 2, 3, 4)).sqrt()


def seed_diversity(pipe, encoder, *, pairs: int, skips: tuple[int, ...], steps: int, guidance: float,
                   seed: int = 0) -> dict[str, Any]:
    """``{case: {"K/N": share of the across-seed distance kept}}`` plus the uncached distances.

    Args:
        pipe, encoder: the toy-world pipeline and its prompt encoder.
        pairs: target prompts per case (held-out combinations).
        skips: the depths K to resume at (0 is the uncached reference, 1.0 by definition).
        steps, guidance: generation settings.
        seed: picks the prompts and the two seeds of each pair.
    """
    pool = held_out_specs()
    out: dict[str, Any] = {"cases": {}, "uncached_distance": {}, "pairs": pairs}
    for case_index, case in enumerate(SEED_DIVERSITY_CASES):
        rng = random.Random(seed * 104_729 + case_index)
        targets = [request_for(spec, rng) for spec in rng.sample(pool, min(pairs, len(pool)))]
        sources = [related_request(target, case, rng) for target in targets]
        seeds_a = [seed * 1_000_003 + 50_000 + case_index * 1_000 + i for i in range(len(targets))]
        seeds_b = [s + 500 for s in seeds_a]
        target_embeds = encoder([t.prompt for t in targets])
        source_embeds = encoder([s.prompt for s in sources])
        # The entry: the source prompt's run from seed A. The two uncached targets: seed A and seed B.
        _, source_trajectory = sample(pipe, source_embeds, initial_noise(seeds_a), steps=steps, guidance=guidance,
                                      capture=True)
        target_a, _ = sample(pipe, target_embeds, initial_noise(seeds_a), steps=steps, guidance=guidance)
        target_b, _ = sample(pipe, target_embeds, initial_noise(seeds_b), steps=steps, guidance=guidance)
        uncached = _distance(target_a, target_b)
        shares: dict[str, float] = {}
        for skip in skips:
            if skip == 0:
                shares[f"0/{steps}"] = 1.0
                continue
            served_b, _ = sample(pipe, target_embeds, source_trajectory[skip], skip=skip, steps=steps,
                                 guidance=guidance)
            shares[f"{skip}/{steps}"] = round(float(_distance(target_a, served_b).mean() / uncached.mean()), 4)
        out["cases"][case] = shares
        out["uncached_distance"][case] = round(float(uncached.mean()), 4)
    return out


def format_seed_diversity(result: dict[str, Any]) -> str:
    cases = result["cases"]
    depths = list(next(iter(cases.values())))
    lines = ["Seed diversity (share of the uncached across-seed distance a request for another seed keeps when "
             "served from the first seed's x_K; 1 = a new video, 0 = the same one):", "",
             "| case | " + " | ".join(f"K = {k}" for k in depths) + " | uncached distance |",
             "|---|" + "---|" * (len(depths) + 1)]
    for case, shares in cases.items():
        lines.append(f"| {case} | " + " | ".join(f"{shares[k]:.2f}" for k in depths)
                     + f" | {result['uncached_distance'][case]:.4f} |")
    return "\n".join(lines)
