"""A tiny procedural text-to-video world whose right answer is known.

A clip shows one flat-coloured object (circle, square or triangle) moving one
pixel per frame in one of four directions over a patterned background.  Five
attributes describe it completely (`ClipSpec`); `render` draws it, `prompt_for`
describes it in varied English and `parse_prompt` recovers it from any prompt
the templates produce.  `flexcache.toyworld.reader` recovers it from pixels.

Conventions: clips are float32 tensors shaped (3, frames, size, size) with values
in [-1, 1] (the range diffusers' VAEs use); row 0 is the top of the frame, so
"up" means decreasing row index.

Held-out split (`held_out_specs`): with every attribute value replaced by its
index in its vocabulary, (shape, colour, direction, background, pattern) =
(i, j, k, l, m), a combination is held out iff (i + j + k + l + m) % 7 == 0.
That holds out 97 of the 576 combinations (16.8%).  Because any two fixed
attribute values leave three free indices whose sums hit every residue mod 7,
every single attribute value *and every pair of values* still occurs in the
training split: held-out clips are new compositions of familiar parts.
"""

from __future__ import annotations

import functools
import itertools
import random
import re
from dataclasses import dataclass

import torch

SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
COLORS: tuple[str, ...] = ("red", "green", "blue", "yellow")
DIRECTIONS: tuple[str, ...] = ("left", "right", "up", "down")
BACKGROUNDS: tuple[str, ...] = ("white", "gray", "purple")
PATTERNS: tuple[str, ...] = ("plain", "stripes", "checker", "gradient")

ATTRIBUTES: tuple[str, ...] = ("shape", "color", "direction", "background", "pattern")
VOCABULARY: dict[str, tuple[str, ...]] = {
    "shape": SHAPES,
    "color": COLORS,
    "direction": DIRECTIONS,
    "background": BACKGROUNDS,
    "pattern": PATTERNS,
}

# Palette in [0, 1] RGB.  Every object colour is at least ~0.45 (Euclidean, [0, 1]
# units) from every point between the two shades of every background colour.
OBJECT_RGB: dict[str, tuple[float, float, float]] = {
    "red": (0.90, 0.10, 0.10),
    "green": (0.10, 0.70, 0.15),
    "blue": (0.10, 0.25, 0.95),
    "yellow": (0.95, 0.85, 0.10),
}
# (shade A, shade B): patterns mix the two shades; "plain" is all shade A.
BACKGROUND_RGB: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "white": ((0.96, 0.96, 0.96), (0.76, 0.76, 0.76)),
    "gray": ((0.55, 0.55, 0.55), (0.40, 0.40, 0.40)),
    "purple": ((0.55, 0.30, 0.65), (0.40, 0.18, 0.50)),
}
# (row step, column step) per frame.
DIRECTION_STEP: dict[str, tuple[int, int]] = {
    "left": (0, -1),
    "right": (0, 1),
    "up": (-1, 0),
    "down": (1, 0),
}

OBJECT_SIZE = 7
DEFAULT_FRAMES = 8
DEFAULT_SIZE = 16
STRIPE_PERIOD = 4  # horizontal bands, 2 px of each shade
CHECKER_CELL = 4  # 4x4 cells
HELD_OUT_MODULUS = 7


@dataclass(frozen=True)
class ClipSpec:
    """The five attributes that fully describe a toy clip."""

    shape: str
    color: str
    direction: str
    background: str
    pattern: str

    def __post_init__(self) -> None:
        for name in ATTRIBUTES:
            value = getattr(self, name)
            allowed = VOCABULARY[name]
            if value not in allowed:
                raise ValueError(f"{name}={value!r} is not one of {allowed}")

    def as_dict(self) -> dict[str, str]:
        return {name: getattr(self, name) for name in ATTRIBUTES}

    def indices(self) -> tuple[int, ...]:
        return tuple(VOCABULARY[name].index(getattr(self, name)) for name in ATTRIBUTES)

    def replace(self, **changes: str) -> ClipSpec:
        return ClipSpec(**{**self.as_dict(), **changes})


# ---------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------


def to_signed(rgb: tuple[float, float, float]) -> torch.Tensor:
    """A [0, 1] RGB triple as a float32 tensor in [-1, 1]."""
    return torch.tensor(rgb, dtype=torch.float32) * 2.0 - 1.0


@functools.lru_cache(maxsize=None)
def shape_mask(shape: str, n: int = OBJECT_SIZE) -> torch.Tensor:
    """Boolean (n, n) mask of a shape filling an n x n box (no anti-aliasing).

    circle: the disc of diameter n; square: the full box; triangle: isosceles,
    apex at the top-centre pixel, base the full bottom row.
    """
    if shape not in SHAPES:
        raise ValueError(f"shape={shape!r} is not one of {SHAPES}")
    rows = torch.arange(n, dtype=torch.float32).view(n, 1)
    cols = torch.arange(n, dtype=torch.float32).view(1, n)
    centre = (n - 1) / 2.0
    if shape == "square":
        mask = torch.ones(n, n, dtype=torch.bool)
    elif shape == "circle":
        mask = (rows - centre) ** 2 + (cols - centre) ** 2 <= (n / 2.0) ** 2
    else:
        half_width = rows * (centre / max(n - 1, 1))
        mask = (cols - centre).abs() <= half_width + 1e-6
    return mask


@functools.lru_cache(maxsize=None)
def pattern_map(pattern: str, size: int = DEFAULT_SIZE) -> torch.Tensor:
    """(size, size) float map in [0, 1]: 0 is shade A, 1 is shade B."""
    if pattern not in PATTERNS:
        raise ValueError(f"pattern={pattern!r} is not one of {PATTERNS}")
    rows = torch.arange(size).view(size, 1).expand(size, size)
    cols = torch.arange(size).view(1, size).expand(size, size)
    if pattern == "plain":
        return torch.zeros(size, size)
    if pattern == "stripes":
        return ((rows // (STRIPE_PERIOD // 2)) % 2).float()
    if pattern == "checker":
        return ((rows // CHECKER_CELL + cols // CHECKER_CELL) % 2).float()
    return (cols.float() / max(size - 1, 1)).contiguous()


@functools.lru_cache(maxsize=None)
def background_image(background: str, pattern: str, size: int = DEFAULT_SIZE) -> torch.Tensor:
    """(3, size, size) background in [-1, 1]. Cached: do not modify in place."""
    if background not in BACKGROUNDS:
        raise ValueError(f"background={background!r} is not one of {BACKGROUNDS}")
    shade_a, shade_b = (to_signed(rgb).view(3, 1, 1) for rgb in BACKGROUND_RGB[background])
    s = pattern_map(pattern, size).unsqueeze(0)
    return shade_a + s * (shade_b - shade_a)


def start_position(
    direction: str, *, frames: int, size: int, seed: int, object_size: int = OBJECT_SIZE
) -> tuple[int, int]:
    """Top-left (row, col) of the object in frame 0; the path stays in frame."""
    travel = frames - 1
    if object_size + travel > size:
        raise ValueError(
            f"an object of {object_size} px moving {travel} px does not fit in {size} px"
        )
    dy, dx = DIRECTION_STEP[direction]
    rng = random.Random(seed)

    def pick(step: int) -> int:
        low = travel if step < 0 else 0
        high = size - object_size - (travel if step > 0 else 0)
        return rng.randint(low, high)

    row = pick(dy)
    col = pick(dx)
    return row, col


def object_boxes(
    spec: ClipSpec, *, frames: int = DEFAULT_FRAMES, size: int = DEFAULT_SIZE, seed: int = 0,
    object_size: int = OBJECT_SIZE,
) -> list[tuple[int, int]]:
    """Top-left (row, col) of the object's box in every frame."""
    row, col = start_position(
        spec.direction, frames=frames, size=size, seed=seed, object_size=object_size
    )
    dy, dx = DIRECTION_STEP[spec.direction]
    return [(row + dy * t, col + dx * t) for t in range(frames)]


def render(
    spec: ClipSpec,
    *,
    frames: int = DEFAULT_FRAMES,
    size: int = DEFAULT_SIZE,
    seed: int = 0,
    object_size: int = OBJECT_SIZE,
) -> torch.Tensor:
    """Render `spec` as a float32 (3, frames, size, size) clip in [-1, 1].

    The start position comes from `seed` alone (see `start_position`), so the
    clip is a deterministic function of (spec, seed, frames, size).
    """
    if not isinstance(spec, ClipSpec):
        raise TypeError(f"spec must be a ClipSpec, not {type(spec).__name__}")
    if frames < 1 or size < 1 or object_size < 1:
        raise ValueError("frames, size and object_size must be positive")
    boxes = object_boxes(spec, frames=frames, size=size, seed=seed, object_size=object_size)
    clip = background_image(spec.background, spec.pattern, size).unsqueeze(1)
    clip = clip.repeat(1, frames, 1, 1)
    mask = shape_mask(spec.shape, object_size)
    colour = to_signed(OBJECT_RGB[spec.color]).view(3, 1)
    n = object_size
    for t, (row, col) in enumerate(boxes):
        region = clip[:, t, row : row + n, col : col + n]
        region[:, mask] = colour
    return clip


def render_batch(
    specs: list[ClipSpec], seeds: list[int] | None = None, **kwargs: int
) -> torch.Tensor:
    """Stack of `render` results shaped (batch, 3, frames, size, size)."""
    seeds = list(range(len(specs))) if seeds is None else list(seeds)
    if len(seeds) != len(specs):
        raise ValueError("specs and seeds differ in length")
    return torch.stack([render(s, seed=z, **kwargs) for s, z in zip(specs, seeds)])


# ---------------------------------------------------------------------------
# Splits
# ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _all_specs() -> tuple[ClipSpec, ...]:
    return tuple(
        ClipSpec(*values) for values in itertools.product(*(VOCABULARY[a] for a in ATTRIBUTES))
    )


def all_specs() -> list[ClipSpec]:
    """All 3 * 4 * 4 * 3 * 4 = 576 attribute combinations, in a fixed order."""
    return list(_all_specs())


def is_held_out(spec: ClipSpec) -> bool:
    """True iff sum of the attribute indices is divisible by 7 (see module doc)."""
    return sum(spec.indices()) % HELD_OUT_MODULUS == 0


def held_out_specs() -> list[ClipSpec]:
    """The fixed combinations never used for training (97 of 576)."""
    return [s for s in _all_specs() if is_held_out(s)]


def training_specs() -> list[ClipSpec]:
    """All combinations except `held_out_specs()` (479 of 576)."""
    return [s for s in _all_specs() if not is_held_out(s)]


# ---------------------------------------------------------------------------
# Prompts
# ---------------------------------------------------------------------------

_SHAPE_WORDS = {
    "circle": ("circle", "disc"),
    "square": ("square", "block"),
    "triangle": ("triangle",),
}
_BACKGROUND_WORDS = {"white": ("white",), "gray": ("gray", "grey"), "purple": ("purple", "violet")}
_DIRECTION_WORDS = {
    "left": ("left", "to the left", "leftward", "toward the left"),
    "right": ("right", "to the right", "rightward", "toward the right"),
    "up": ("up", "upward", "upwards", "toward the top"),
    "down": ("down", "downward", "downwards", "toward the bottom"),
}
_PATTERN_ADJ = {
    "plain": ("plain", "solid", "flat"),
    "stripes": ("striped", "stripy"),
    "checker": ("checkered", "checkerboard", "chequered"),
    "gradient": ("gradient", "fading"),
}
_PATTERN_NOUN = {
    "plain": ("a plain fill", "a solid fill", "no pattern, just a flat colour"),
    "stripes": ("stripes", "horizontal stripes"),
    "checker": ("a checker pattern", "a checkerboard"),
    "gradient": ("a gradient", "a soft fade"),
}
_VERB_ING = ("drifting", "moving", "sliding", "gliding", "travelling", "heading")
_VERB_S = ("drifts", "moves", "slides", "glides", "travels", "heads")

TEMPLATES: tuple[str, ...] = (
    "a {color} {shape} {verb_ing} {direction} over a {background} {pattern_adj} background",
    "{background} {pattern_adj} backdrop, a small {color} {shape} {verb_s} {direction}",
    "on a {pattern_adj} {background} background, a {color} {shape} {verb_s} {direction}",
    "{color} {shape} {verb_ing} {direction}, {background} background with {pattern_noun}",
    "a video of a {shape} in {color} {verb_ing} {direction} across a {background} scene "
    "with {pattern_noun}",
    "against a {pattern_adj} {background} background, a {color} {shape} keeps {verb_ing} "
    "{direction}",
    "{pattern_noun} in {background} behind a {color} {shape} that {verb_s} {direction}",
)


def prompt_for(spec: ClipSpec, rng: random.Random, template: int | None = None) -> str:
    """A natural-language prompt naming all five attributes of `spec`.

    `template` picks one of `TEMPLATES` (index); by default `rng` picks it.
    Synonyms are drawn from `rng` too, so the same rng state gives the same text.
    """
    index = rng.randrange(len(TEMPLATES)) if template is None else template
    fields = {
        "shape": rng.choice(_SHAPE_WORDS[spec.shape]),
        "color": spec.color,
        "direction": rng.choice(_DIRECTION_WORDS[spec.direction]),
        "background": rng.choice(_BACKGROUND_WORDS[spec.background]),
        "pattern_adj": rng.choice(_PATTERN_ADJ[spec.pattern]),
        "pattern_noun": rng.choice(_PATTERN_NOUN[spec.pattern]),
        "verb_ing": rng.choice(_VERB_ING),
        "verb_s": rng.choice(_VERB_S),
    }
    return TEMPLATES[index].format(**fields)


def _keyword_table() -> dict[str, tuple[str, str]]:
    table: dict[str, tuple[str, str]] = {}
    groups = {
        "shape": _SHAPE_WORDS,
        "background": _BACKGROUND_WORDS,
        "direction": _DIRECTION_WORDS,
    }
    for attr, words in groups.items():
        for value, phrases in words.items():
            for phrase in phrases:
                table[phrase.split()[-1]] = (attr, value)
    for value in COLORS:
        table[value] = ("color", value)
    for value, phrases in _PATTERN_ADJ.items():
        for phrase in phrases:
            table[phrase] = ("pattern", value)
    extra = {
        "checker": "checker", "stripes": "stripes", "stripe": "stripes", "fade": "gradient",
        "squares": "square", "circles": "circle", "triangles": "triangle",
    }
    for word, value in extra.items():
        attr = "shape" if value in SHAPES else "pattern"
        table[word] = (attr, value)
    table.update({"top": ("direction", "up"), "bottom": ("direction", "down")})
    table.update({"rightwards": ("direction", "right"), "leftwards": ("direction", "left")})
    return table


_KEYWORDS = _keyword_table()
_TOKEN = re.compile(r"[a-z]+")


def parse_prompt(text: str) -> ClipSpec | None:
    """Recover the spec from a prompt; None unless each attribute is named exactly once
    (synonyms of one value may repeat, e.g. "a plain fill ... flat colour")."""
    found: dict[str, set[str]] = {name: set() for name in ATTRIBUTES}
    for token in _TOKEN.findall(text.lower()):
        hit = _KEYWORDS.get(token)
        if hit is not None:
            found[hit[0]].add(hit[1])
    if any(len(values) != 1 for values in found.values()):
        return None
    return ClipSpec(**{name: next(iter(values)) for name, values in found.items()})
