"""Prompt adherence of the toy-world model: ``python -m flexcache.toyworld.evaluate``.

Adherence = the fraction of the five requested attributes the pixel reader
finds in the generated clip, averaged over the held-out attribute
combinations (`world.held_out_specs`: the model never saw them together),
each with `--prompts` differently phrased prompts, at full steps.
"""

from __future__ import annotations

import argparse
import json
import random
from typing import Any

from flexcache.toyworld.model import (
    DEFAULT_GUIDANCE,
    DEFAULT_STEPS,
    WEIGHTS,
    PromptEncoder,
    generate,
    toyworld_pipeline,
)
from flexcache.toyworld.reader import match_counts
from flexcache.toyworld.world import (
    ATTRIBUTES,
    ClipSpec,
    held_out_specs,
    prompt_for,
    training_specs,
)


def evaluate(pipe, encoder: PromptEncoder, specs: list[ClipSpec], *, prompts_per_spec: int = 2,
             steps: int = DEFAULT_STEPS, guidance: float = DEFAULT_GUIDANCE, seed: int = 0) -> dict[str, Any]:
    rng = random.Random(seed)
    cases = [(spec, prompt_for(spec, rng)) for spec in specs for _ in range(prompts_per_spec)]
    hits = {name: 0 for name in ATTRIBUTES}
    for start in range(0, len(cases), 64):
        batch = cases[start:start + 64]
        clips = generate(pipe, encoder([p for _, p in batch]), steps=steps, guidance=guidance, seed=seed + start)
        for name, count in match_counts(clips, [spec for spec, _ in batch]).items():
            hits[name] += count
    per_attribute = {name: hits[name] / len(cases) for name in ATTRIBUTES}
    return {"adherence": sum(per_attribute.values()) / len(ATTRIBUTES), "per_attribute": per_attribute,
            "clips": len(cases), "steps": steps, "guidance": guidance, "seed": seed}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=str(WEIGHTS))
    parser.add_argument("--prompts", type=int, default=2, help="prompts per held-out combination")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    parser.add_argument("--guidance", type=float, default=DEFAULT_GUIDANCE, help="classifier-free guidance scale")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--split", choices=["held-out", "training"], default="held-out",
                        help="held-out combinations (the reported figure), or as many training ones (for "
                             "choosing settings such as --guidance without looking at the held-out set)")
    args = parser.parse_args(argv)
    pipe = toyworld_pipeline(args.weights)
    pipe.set_progress_bar_config(disable=True)
    specs = held_out_specs()
    if args.split == "training":
        specs = random.Random(args.seed).sample(training_specs(), len(specs))
    result = evaluate(pipe, PromptEncoder(), specs, prompts_per_spec=args.prompts, steps=args.steps,
                      guidance=args.guidance, seed=args.seed)
    print(json.dumps({"split": args.split, "combinations": len(specs), **result}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
