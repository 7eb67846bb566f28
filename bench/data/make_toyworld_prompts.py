"""Toy-world prompt files for `flexcache calibrate` and `flexcache bench quality --rules`.

Requests as a stream would bring them: random attribute combinations, each with a few related
requests (rewordings, edits of one attribute, the same object elsewhere, another object in the
same setting; `toyworld.cases`). The calibration file draws from the training combinations, the
held-out file from the held-out ones, with another seed: no prompt is in both.

    python bench/data/make_toyworld_prompts.py   # writes toyworld-calibration.txt, toyworld-heldout.txt
"""

import random
from pathlib import Path

from flexcache.toyworld.cases import CASES, related_request, request_for
from flexcache.toyworld.world import held_out_specs, training_specs


def prompts(specs, seed: int, groups: int, related: int) -> list[str]:
    rng = random.Random(seed)
    out: list[str] = []
    for _ in range(groups):
        anchor = request_for(rng.choice(specs), rng)
        out.append(anchor.prompt)
        for case in rng.sample(CASES, related):
            out.append(related_request(anchor, case, rng).prompt)
    return list(dict.fromkeys(out))


if __name__ == "__main__":
    here = Path(__file__).parent
    (here / "toyworld-calibration.txt").write_text("\n".join(prompts(training_specs(), 11, 40, 3)) + "\n")
    (here / "toyworld-heldout.txt").write_text("\n".join(prompts(held_out_specs(), 12, 30, 3)) + "\n")
