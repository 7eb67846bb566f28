"""Toy text-to-video world: procedural clips with known attributes.

`world` renders clips from a `ClipSpec` and writes / parses prompts; `reader`
recovers the attributes from pixels and scores prompt adherence.
"""

from flexcache.toyworld.world import (
    ATTRIBUTES,
    BACKGROUNDS,
    COLORS,
    DIRECTIONS,
    PATTERNS,
    SHAPES,
    ClipSpec,
    all_specs,
    held_out_specs,
    parse_prompt,
    prompt_for,
    render,
    training_specs,
)

__all__ = [
    "ATTRIBUTES",
    "BACKGROUNDS",
    "COLORS",
    "DIRECTIONS",
    "PATTERNS",
    "SHAPES",
    "ClipSpec",
    "adherence",
    "all_specs",
    "held_out_specs",
    "parse_prompt",
    "prompt_for",
    "read_clip",
    "render",
    "training_specs",
]


def __getattr__(name: str):
    if name in ("adherence", "read_clip"):
        from flexcache.toyworld import reader

        return getattr(reader, name)
    raise AttributeError(f"module 'flexcache.toyworld' has no attribute {name!r}")
