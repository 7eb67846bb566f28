"""The attacks of arXiv 2508.20424 as a timing reader makes them: the attacker reads how long requests take.

What an attacker sees is what a service's response reveals without any
report: how long its request took. Through the engine API that is the steps
the service ran (a perfect timing attacker); through a pipeline call it is
the wall time of the call, against the attacker's own calibration of a full
run. Attackers know the system and its config (Kerckhoffs): each keeps a
shadow cache of its own requests, so a hit its own entries explain is not
evidence about anyone else's.

* **prompt stealing**: a victim generates a toy-world prompt; the attacker
  probes a dictionary of candidate prompts (the victim's among random
  others, as a public prompt list holds the prompts users send) and claims
  the one whose request ran fewest steps beyond what its own entries
  explain, when one stands out. Success: the claim is the victim's.
* **poisoning**: the attacker runs a trending prompt whose run carries a
  mark (its conditioning asks for another motion direction than the prompt
  text says: the latent differs from what the text describes, as a logo
  would), so it is cached under that text; victims, distinct users, then
  send that prompt. Success: the victim's clip moves in the marked direction
  (the pixel reader's verdict), not the one asked for.
* **covert channel**: a sender signals a bit per slot by sending the slot's
  agreed prompt (1) or nothing (0); the receiver sends the same prompt and
  reads a hit from its latency. Success: the channel's advantage, the share
  of 1s read as 1 minus the share of 0s read as 1; bits per query is the
  mutual information per receiver request at the measured error rates.
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

from flexcache.benchmarks.attacks.scoring import channel_row
from flexcache.benchmarks.attacks.services import Shadow, World
from flexcache.toyworld.reader import read_clip
from flexcache.toyworld.world import DIRECTIONS, all_specs, prompt_for

ATTACKER, SENDER, RECEIVER = "attacker", "sender", "receiver"


def prompt_stealing(service, world: World, rng: random.Random, *, victims: int, candidates: int,
                    margin: int) -> dict[str, Any]:
    specs = all_specs()
    secrets_ = [(spec, prompt_for(spec, rng)) for spec in rng.sample(specs, victims)]
    for index, (spec, text) in enumerate(secrets_):
        service.request(text, f"victim{index}", seed=10_000 + index)
    shadow = Shadow(world)
    recovered = claims = 0
    try:
        for index, (spec, secret) in enumerate(secrets_):
            pool = [(spec, secret)] + [(s, prompt_for(s, rng))
                                       for s in rng.sample([s for s in specs if s != spec], candidates - 1)]
            rng.shuffle(pool)
            evidence = []
            for probe, (candidate, text) in enumerate(pool):
                seed = 20_000 + 100 * index + probe
                expected = shadow.expected_steps(text, seed)
                observed, _ = service.request(text, ATTACKER, seed)
                evidence.append((expected - observed, candidate))
            evidence.sort(key=lambda e: e[0], reverse=True)
            best = evidence[0]
            stands_out = best[0] >= margin and (len(evidence) == 1 or evidence[1][0] < best[0])
            claims += stands_out
            recovered += stands_out and best[1] == spec
    finally:
        shadow.close()
    # A claim its own entries' noise made is right one time in `candidates`: the rate chance gives.
    return {"trials": victims, "successes": recovered, "success_rate": recovered / victims, "claims": claims,
            "chance_rate": claims / victims / candidates, "candidates_per_victim": candidates}


def poisoning(service, world: World, rng: random.Random, *, targets: int, victims_per_target: int) -> dict[str, Any]:
    """Also an honest control: the same sequence from an honest writer, whose entries should be vouched for."""
    marked = trials = 0
    verdicts = {"honest": {"vouches": 0, "accusations": 0}, "poisoned": {"vouches": 0, "accusations": 0}}

    def verdicts_now() -> tuple[int, int]:
        sharing = service.cache.stats()["sharing"]
        return sharing["vouches"], sharing["accusations"]

    specs = rng.sample(all_specs(), 2 * targets)
    for index in range(targets):
        for kind, spec in (("honest", specs[2 * index + 1]), ("poisoned", specs[2 * index])):
            text = prompt_for(spec, rng)  # the trending prompt, sent as is by everyone
            mark = rng.choice([d for d in DIRECTIONS if d != spec.direction])
            writer, conditioning = ATTACKER, prompt_for(replace(spec, direction=mark), rng, template=0)
            if kind == "honest":
                writer, conditioning = f"writer{index}", None
            before = verdicts_now()
            service.request(text, writer, seed=30_000 + 2 * index + (kind == "honest"), conditioning=conditioning)
            for victim in range(victims_per_target):
                _, clip = service.request(text, f"victim{victim}", seed=31_000 + 10 * index + victim)
                if kind == "poisoned":
                    trials += 1
                    marked += read_clip(clip).direction == mark
            after = verdicts_now()
            verdicts[kind]["vouches"] += after[0] - before[0]
            verdicts[kind]["accusations"] += after[1] - before[1]
    return {"trials": trials, "successes": marked, "success_rate": marked / trials, "verdicts": verdicts}


def covert_channel(service, world: World, rng: random.Random, *, bits: int, margin: int) -> dict[str, Any]:
    message = [rng.randrange(2) for _ in range(bits)]
    slots = rng.sample(all_specs(), bits)
    shadow = Shadow(world)
    received = []
    try:
        for slot, (bit, spec) in enumerate(zip(message, slots)):
            text = prompt_for(spec, random.Random(slot), template=slot % 7)
            if bit:
                service.request(text, SENDER, seed=40_000 + slot)
            expected = shadow.expected_steps(text, 41_000 + slot)
            observed, _ = service.request(text, RECEIVER, seed=41_000 + slot)
            received.append(int(expected - observed >= margin))
    finally:
        shadow.close()
    return channel_row(message, received)
