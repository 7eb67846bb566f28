"""Stronger attackers: they read the returned videos as well as timing, hold sybils, and poison with honest text.

A hit from someone else's entry carries that entry's layout. Two requests
of the same prompt with different seeds, planned before either run is
stored (concurrent requests), come back near-identical when both resumed
from one entry, and as different as two seeds make them when both ran from
noise. Padding the latency hides nothing of that. The attacker calibrates
"near-identical" on prompts nobody asked (`calibrate_threshold`).

Each attacker holds up to ``SharingConfig().min_askers - 1`` identities
(`sybil_count`): as many as it may hold and still get nothing from
corroboration on its own.

* **prompt stealing, output reader** (`prompt_stealing_output`): victims
  generate toy-world prompts; the attacker sends each candidate of a
  public prompt list from every identity at once (its asks accumulate) and
  compares the last two responses; it claims the candidate whose clips came
  back as one run, the deepest hit (fewest steps) among several. Success:
  the claim is the victim's prompt.
* **covert channel, output reader** (`covert_channel_output`): sender and
  receivers together hold `sybil_count` identities and agree on prompts
  nobody else sends, none of which hits another (checked on the attacker's
  shadow cache). The sender sends a slot's prompt for a 1 and nothing for a
  0; the receivers send it at once and read a 1 when the last two clips are
  near-identical. Success: the advantage, as for the timing channel.
* **text poisoning** (`text_poisoning`): the poisoner sends a near-duplicate
  of a trending prompt (by the embedder) that asks for other content: the
  same words with the motion direction changed, the change the embedder
  finds closest. Its run is honest (the service encodes its text), with a
  seed it searched offline on the public model so that the direction is
  settled by the depth a victim resumes at under the service's config (it
  replays the config on a cache of its own); its sybils ask its prompt too,
  with that seed (corroboration, and their stored runs are the same plant).
  Victims then send the trending prompt. Success: the victim's clip moves
  the poisoner's way (the pixel reader's verdict).
"""

from __future__ import annotations

import itertools
import random
import statistics
from typing import Any

import torch

from flexcache.benchmarks.attacks.scoring import channel_row, with_bound
from flexcache.benchmarks.attacks.services import Request, Shadow, World
from flexcache.core import SharingConfig
from flexcache.toyworld.model import initial_noise, pipeline_kwargs, sample
from flexcache.toyworld.reader import read_clip
from flexcache.toyworld.world import TEMPLATES, VOCABULARY, all_specs, prompt_for

STEALER, SENDER, RECEIVER, POISONER = "stealer", "sender", "receiver", "poisoner"
# Two clips are one run when they differ by under this fraction of what two runs of a prompt nobody asked
# differ by (the median of the calibration pairs): a shared entry leaves them equal up to rounding.
SAME_RUN_FRACTION = 0.25
# Near-identical below this fraction of the threshold: a whole-latent hit (a region hit regenerates a part).
EXACT_FRACTION = 0.1
CALIBRATION_PAIRS = 3
# What the text poisoner changes: the motion direction. Of the five attributes the embedder rates a changed
# direction closest (mean cosine to the original over 12 toy prompts: direction 0.95, colour 0.90,
# background 0.89, shape 0.87, pattern 0.85) and the toy model settles it earliest: resumed at 20 % of N
# with the original text, 2 of 12 clips keep a changed direction from a random seed, 0 of 12 keep any
# other change, and a seed search finds settling seeds for a direction change far more often (colour:
# 2 of 8 prompts, 16 seeds each).
POISON_ATTRIBUTES = ("direction",)
# Words no toy prompt holds: prompts nobody else sends, far apart from each other.
_RARE_WORDS = (
    "harbor", "lantern", "orchid", "violin", "glacier", "teapot", "compass", "meadow", "falcon", "saddle",
    "velvet", "canyon", "trumpet", "pebble", "lighthouse", "walnut", "chimney", "marble", "spindle", "quarry",
    "saffron", "anchor", "lagoon", "thimble", "parsnip", "zeppelin", "cobalt", "juniper", "hammock", "bramble",
    "tundra", "oyster", "kettle", "mosaic", "vinegar", "sextant", "banjo", "ember", "fjord", "gazebo", "hemlock",
    "igloo", "jasmine", "kiln", "lichen", "mortar", "nutmeg", "obelisk", "pylon", "quiver", "rhubarb", "sorrel",
    "turret", "umber", "vellum", "wicket", "yarrow", "zither",
)


def sybil_count() -> int:
    """Identities one attacker holds: the most that corroboration (``min_askers``, defaults) still refuses."""
    return max(1, SharingConfig().min_askers - 1)


def rare_prompt(rng: random.Random, words: int = 5) -> str:
    """A prompt nobody else sends (random rare words)."""
    return " ".join(rng.sample(_RARE_WORDS, words))


def relative_distance(clip: torch.Tensor, other: torch.Tensor) -> float:
    """||clip - other|| / ||other||."""
    return float((clip - other).norm() / other.norm().clamp_min(1e-12))


def probe(prompt: str, identities: list[str], seeds) -> list[Request]:
    """`prompt` from every identity at once (the last one twice when there is one): the last two are compared."""
    users = identities if len(identities) >= 2 else identities * 2
    return [Request(prompt, user, next(seeds)) for user in users]


def compare_last_two(service, batch: list[Request]) -> tuple[float, int]:
    """(relative distance of the last two clips, steps the last one ran) of a concurrent batch."""
    responses = service.requests(batch)
    (_, first), (steps, last) = responses[-2:]
    return relative_distance(first, last), steps


def calibrate_threshold(service, identities: list[str], rng: random.Random, seeds) -> float:
    """The distance under which two clips count as one run: a fraction of what prompts nobody asked give."""
    distances = [compare_last_two(service, probe(rare_prompt(rng), identities, seeds))[0]
                 for _ in range(CALIBRATION_PAIRS)]
    return SAME_RUN_FRACTION * statistics.median(distances)


# -- prompt stealing ---------------------------------------------------------------------------------------


def prompt_stealing_output(service, world: World, rng: random.Random, *, victims: int, candidates: int,
                           identities: int | None = None) -> dict[str, Any]:
    """Victims' prompts read back from clips: one claim per victim, from a list of `candidates` prompts.

    Args:
        service: an `EngineService` (denoising) or a `PipelineService`.
        world: the toy world both run in.
        rng: picks the victims' prompts, the candidates and the calibration prompts.
        victims: victims, each with one prompt; the trials.
        candidates: prompts probed per victim, the victim's among them.
        identities: the attacker's identities (default `sybil_count`).

    Returns:
        A row: ``successes`` of ``trials``, ``success_rate`` and its ``success_upper_95``, ``claims``
        (victims with any claim), ``chance_rate`` (what claims at random would recover) and the threshold.
    """
    users = [f"{STEALER}{i}" for i in range(identities or sybil_count())]
    specs = all_specs()
    secrets_ = [(spec, prompt_for(spec, rng)) for spec in rng.sample(specs, victims)]
    for index, (_, text) in enumerate(secrets_):
        service.request(text, f"victim{index}", seed=10_000 + index)
    seeds = itertools.count(60_000)
    threshold = calibrate_threshold(service, users, rng, seeds)
    recovered = claims = 0
    for spec, secret in secrets_:
        pool = [(spec, secret)] + [(s, prompt_for(s, rng))
                                   for s in rng.sample([s for s in specs if s != spec], candidates - 1)]
        rng.shuffle(pool)
        evidence = []
        for candidate, text in pool:
            distance, steps = compare_last_two(service, probe(text, users, seeds))
            if distance <= threshold:
                # Several hits: a whole-latent copy before a region's, then the deepest (the timing), then the closest.
                evidence.append((distance <= EXACT_FRACTION * threshold, -steps, -distance, candidate))
        if evidence:
            claims += 1
            recovered += max(evidence, key=lambda e: e[:3])[3] == spec
    return with_bound({"trials": victims, "successes": recovered, "success_rate": recovered / victims,
                       "claims": claims, "chance_rate": claims / victims / candidates,
                       "candidates_per_victim": candidates, "identities": len(users), "threshold": threshold})


# -- covert channel ----------------------------------------------------------------------------------------


def agreed_prompts(world: World, rng: random.Random, count: int) -> list[str]:
    """Prompts nobody else sends, none of which any other would hit (checked on a shadow cache)."""
    shadow = Shadow(world, regions=True)
    chosen: list[str] = []
    try:
        for _ in range(1000 * count):  # rare-word prompts barely ever hit each other: far more than enough
            text = rare_prompt(rng)
            if text not in chosen and not shadow.hits(text):
                shadow.expected_steps(text, seed=len(chosen))
                chosen.append(text)
            if len(chosen) == count:
                return chosen
    finally:
        shadow.close()
    raise RuntimeError(f"found {len(chosen)} of {count} prompts that miss each other")


def covert_channel_output(service, world: World, rng: random.Random, *, bits: int,
                          identities: int | None = None) -> dict[str, Any]:
    """A message of `bits` random bits from a sender to receivers, read from clips.

    Args:
        service: an `EngineService` (denoising) or a `PipelineService`.
        world: the toy world both run in.
        rng: draws the message, the agreed prompts and the calibration prompts.
        bits: slots, one bit each; the trials.
        identities: sender and receivers together (default `sybil_count`; at least one receiver).

    Returns:
        `scoring.channel_row`: the advantage as ``success_rate``, its bound, bits per query.
    """
    total = identities or sybil_count()
    receivers = [f"{RECEIVER}{i}" for i in range(max(1, total - 1))]
    message = [rng.randrange(2) for _ in range(bits)]
    slots = agreed_prompts(world, rng, bits)
    seeds = itertools.count(70_000)
    threshold = calibrate_threshold(service, receivers, rng, seeds)
    received = []
    for slot, (bit, text) in enumerate(zip(message, slots)):
        if bit:
            service.request(text, SENDER, seed=40_000 + slot)
        distance, _ = compare_last_two(service, probe(text, receivers, seeds))
        received.append(int(distance <= threshold))
    return {**channel_row(message, received), "identities": len(receivers) + 1, "threshold": threshold}


# -- text poisoning ----------------------------------------------------------------------------------------


class _Settled(Exception):
    """Stops an offline run once the latent the victims resume from is made."""


def _latents_at(pipe, embeds: torch.Tensor, noise: torch.Tensor, step: int) -> torch.Tensor:
    """x_step of runs from `noise`, computing only the first `step` steps (the attacker's offline model)."""
    reached: list[torch.Tensor] = []

    def on_step_end(_pipe, index, _timestep, callback_kwargs):
        if index + 1 == step:
            reached.append(callback_kwargs["latents"].clone())
            raise _Settled
        return callback_kwargs

    try:
        with torch.inference_mode():
            pipe(latents=noise, callback_on_step_end=on_step_end, **pipeline_kwargs(embeds))
    except _Settled:
        return reached[0]
    raise RuntimeError(f"the run ended before step {step}")  # never: step < N


def search_seed(world: World, prompt: str, target: str, attribute: str, value: str, depth: int,
                seeds: list[int]) -> int | None:
    """A seed whose run of `prompt`, resumed at `depth` with the `target` text, still shows `value`."""
    pipe, count = world.offline_pipe, len(seeds)
    start = _latents_at(pipe, world.encoder([prompt]).expand(count, -1, -1), initial_noise(seeds), depth)
    clips, _ = sample(pipe, world.encoder([target]).expand(count, -1, -1), start, skip=depth)
    for seed, clip in zip(seeds, clips):
        if getattr(read_clip(clip.clamp(-1, 1)), attribute) == value:
            return seed
    return None


def victim_depth(world: World, prompt: str, target: str, sharing: SharingConfig, sybils: list[str]) -> int:
    """The step the first victim sending `target` resumes from the poisoner's entry of `prompt` at (0: none).

    The attacker knows the service's config (Kerckhoffs) and replays on its own cache what it will do:
    its honest run of `prompt`, its sybils asking it, then a victim.
    """
    cache, sig = world.cache(sharing), world.signature
    zeros = torch.zeros(sig.latent_shape)
    try:
        for number, user in enumerate([POISONER, *sybils]):
            plan = cache.plan(prompt, sig, user=user, seed=number, any_seed=number > 0)
            if plan.run_checkpoints:
                cache.insert(plan, {s: zeros for s in plan.run_checkpoints}, text_conditioned=True)
        plan = cache.plan(target, sig, user="victim0", seed=len(sybils) + 1, any_seed=True)
        return plan.skip_steps  # only entries of `prompt` are there to hit
    finally:
        cache.close()


def settling_seed(world: World, prompt: str, target: str, attribute: str, value: str, depth: int, *,
                  seed_batch: int, batches: int) -> int | None:
    """The first seed of `batches` x `seed_batch` that settles `value` by `depth` (`search_seed`)."""
    for batch in range(batches):
        seeds = tuple(range(50_000 + batch * seed_batch, 50_000 + (batch + 1) * seed_batch))
        key = ("settling_seed", prompt, target, attribute, value, depth, seeds)  # kept: defences share targets
        if key not in world.offline_results:
            world.offline_results[key] = search_seed(world, prompt, target, attribute, value, depth, list(seeds))
        if world.offline_results[key] is not None:
            return world.offline_results[key]
    return None


def poison_for(world: World, spec, wording: int, template: int, *, sharing: SharingConfig, sybils: list[str],
               seed_batch: int, batches: int) -> dict[str, Any]:
    """The poisoner's prompt and seed for the trending prompt of `spec`: the closest change it can settle.

    Changes are tried closest first (by the embedder), each at the depth a victim would resume from it
    under the service's config; the first with a settling seed wins, else the closest that hits at all.
    """
    target = prompt_for(spec, random.Random(wording), template)
    changes = [(attribute, value, prompt_for(spec.replace(**{attribute: value}), random.Random(wording), template))
               for attribute in POISON_ATTRIBUTES for value in VOCABULARY[attribute] if value != getattr(spec, attribute)]
    vectors = world.embedder.embed([target] + [text for _, _, text in changes])
    ranked = sorted(zip((vectors[1:] @ vectors[0]).tolist(), changes), key=lambda c: -c[0])
    choices = [{"target": target, "prompt": text, "attribute": attribute, "value": value, "cosine": cosine,
                "depth": victim_depth(world, text, target, sharing, sybils), "seed": None}
               for cosine, (attribute, value, text) in ranked]
    for choice in choices:
        if choice["depth"]:
            seed = settling_seed(world, choice["prompt"], target, choice["attribute"], choice["value"],
                                 choice["depth"], seed_batch=seed_batch, batches=batches)
            if seed is not None:
                return {**choice, "seed": seed}
    # No seed settles any change: the closest change that hits at all (or the closest), the service's seed.
    return next((c for c in choices if c["depth"]), choices[0])


def text_poisoning(service, world: World, rng: random.Random, *, targets: int, victims_per_target: int,
                   sybils: int | None = None, seed_batch: int = 16, seed_batches: int = 2) -> dict[str, Any]:
    """Trending prompts poisoned through near-duplicates that ask for another direction.

    Args:
        service: an `EngineService` (denoising) or a `PipelineService`.
        world: the toy world both run in (its offline model searches the seeds).
        rng: picks the trending prompts and their wording.
        targets: trending prompts attacked.
        victims_per_target: distinct victims sending each; trials = targets x victims.
        sybils: identities asking the poisoner's prompt besides it (default `sybil_count`).
        seed_batch, seed_batches: the offline search: seed_batches x seed_batch seeds per direction.

    Returns:
        A row: ``successes`` (victims' clips moving the poisoner's way) of ``trials``, the rate and its
        bound, ``seeds_found`` (targets with a settling seed) and the ``depths`` victims resume at.
    """
    # Corroboration counts askers other than the writer: the poisoner's sybils ask its prompt.
    sybil_users = [f"{POISONER}{i}" for i in range(1, 1 + (sybil_count() if sybils is None else sybils))]
    sharing = service.cache.config.sharing  # the attacker knows the config it attacks
    marked = trials = settled = 0
    changed: dict[str, int] = {}
    depths: list[int] = []
    for index, spec in enumerate(rng.sample(all_specs(), targets)):
        poison = poison_for(world, spec, rng.randrange(2**31), rng.randrange(len(TEMPLATES)), sharing=sharing,
                            sybils=sybil_users, seed_batch=seed_batch, batches=seed_batches)
        settled += poison["seed"] is not None
        depths.append(poison["depth"])
        changed[poison["attribute"]] = changed.get(poison["attribute"], 0) + 1
        found = poison["seed"] is not None
        service.request(poison["prompt"], POISONER, seed=poison["seed"] if found else 55_000 + index, seed_chosen=found)
        for number, sybil in enumerate(sybil_users):
            # With the searched seed too: a sybil's run the service stores (served or not) is then the same plant.
            service.request(poison["prompt"], sybil, seed=poison["seed"] if found else 56_000 + 10 * index + number,
                            seed_chosen=found)
        for victim in range(victims_per_target):
            _, clip = service.request(poison["target"], f"victim{victim}", seed=57_000 + 10 * index + victim)
            trials += 1
            marked += getattr(read_clip(clip), poison["attribute"]) == poison["value"]
    return with_bound({"trials": trials, "successes": marked, "success_rate": marked / trials,
                       "seeds_found": settled, "targets": targets, "attributes_changed": changed,
                       "depths": depths, "sybils": len(sybil_users)})
