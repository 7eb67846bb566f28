"""Pairs of toy-world requests that a cache could serve one from the other.

A *case* says how a new request (the target) relates to an earlier one (the
source) whose cached latent it might resume from:

* ``identical``: the same prompt text.
* ``near-duplicate``: the same five attributes, phrased with another template.
* ``same-background``: the same background colour and pattern, a different
  object (shape, colour and direction all differ), phrased with the same template.
* ``same-object``: the same object (shape, colour, direction) over a different
  background (colour and pattern both differ), phrased with the same template.
* ``object-edit``: one object attribute (shape, colour or direction) changed,
  all else the same, same template: the hardest "different object" pairs.
* ``background-edit``: the background colour or the pattern changed, all else
  the same, same template: the hardest "different background" pairs.

The quality benchmark measures each case; the demo's prompt stream mixes them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from flexcache.toyworld.world import (
    BACKGROUNDS,
    COLORS,
    DIRECTIONS,
    PATTERNS,
    SHAPES,
    TEMPLATES,
    ClipSpec,
    prompt_for,
)

CASES: tuple[str, ...] = ("identical", "near-duplicate", "same-background", "same-object", "object-edit",
                          "background-edit")
_VALUES = {"shape": SHAPES, "color": COLORS, "direction": DIRECTIONS, "background": BACKGROUNDS,
           "pattern": PATTERNS}


@dataclass(frozen=True)
class Request:
    spec: ClipSpec
    prompt: str
    template: int


def request_for(spec: ClipSpec, rng: random.Random, template: int | None = None) -> Request:
    template = rng.randrange(len(TEMPLATES)) if template is None else template
    return Request(spec, prompt_for(spec, rng, template), template)


def _other(values: tuple[str, ...], current: str, rng: random.Random) -> str:
    return rng.choice([v for v in values if v != current])


def related_request(source: Request, case: str, rng: random.Random) -> Request:
    """A request related to `source` as `case` says (see the module doc)."""
    spec = source.spec
    if case == "identical":
        return source
    if case == "near-duplicate":
        for _ in range(32):  # another template, and text that differs
            template = _other(tuple(range(len(TEMPLATES))), source.template, rng)
            candidate = request_for(spec, rng, template)
            if candidate.prompt != source.prompt:
                return candidate
        raise RuntimeError("no distinct paraphrase found")  # unreachable with 7 templates
    if case == "same-background":
        spec = spec.replace(shape=_other(SHAPES, spec.shape, rng), color=_other(COLORS, spec.color, rng),
                            direction=_other(DIRECTIONS, spec.direction, rng))
    elif case == "same-object":
        spec = spec.replace(background=_other(BACKGROUNDS, spec.background, rng),
                            pattern=_other(PATTERNS, spec.pattern, rng))
    elif case in ("object-edit", "background-edit"):
        name = rng.choice(("shape", "color", "direction") if case == "object-edit" else ("background", "pattern"))
        spec = spec.replace(**{name: _other(_VALUES[name], getattr(spec, name), rng)})
    else:
        raise ValueError(f"unknown case {case!r}; expected one of {CASES}")
    return request_for(spec, rng, source.template)
