"""The toy world: specs, rendering, splits and prompts."""

from __future__ import annotations

import itertools
import random

import pytest
import torch
from torch.overrides import TorchFunctionMode

from flexcache.toyworld import world
from flexcache.toyworld.world import (
    ATTRIBUTES,
    BACKGROUND_RGB,
    OBJECT_RGB,
    TEMPLATES,
    VOCABULARY,
    ClipSpec,
    all_specs,
    background_image,
    held_out_specs,
    parse_prompt,
    prompt_for,
    render,
    render_batch,
    shape_mask,
    to_signed,
    training_specs,
)

SPEC = ClipSpec("triangle", "red", "left", "white", "checker")


def test_vocabularies():
    assert world.SHAPES == ("circle", "square", "triangle")
    assert world.COLORS == ("red", "green", "blue", "yellow")
    assert world.DIRECTIONS == ("left", "right", "up", "down")
    assert world.BACKGROUNDS == ("white", "gray", "purple")
    assert world.PATTERNS == ("plain", "stripes", "checker", "gradient")


def test_clipspec_validates_and_is_frozen():
    with pytest.raises(ValueError, match="circle"):
        ClipSpec("hexagon", "red", "left", "white", "plain")
    with pytest.raises(ValueError, match="yellow"):
        SPEC.replace(color="white")  # a background colour is not an object colour
    with pytest.raises(AttributeError):
        SPEC.shape = "circle"  # type: ignore[misc]
    assert SPEC.replace(shape="circle").shape == "circle"
    assert ClipSpec(**SPEC.as_dict()) == SPEC


def test_every_object_colour_contrasts_with_every_background():
    for obj, bg in itertools.product(OBJECT_RGB, BACKGROUND_RGB):
        a, b = (to_signed(c) for c in BACKGROUND_RGB[bg])
        c = to_signed(OBJECT_RGB[obj])
        t = ((c - a) @ (b - a) / ((b - a) @ (b - a))).clamp(0, 1)
        # [-1, 1] units: at least ~0.45 in [0, 1] RGB from anything between the shades
        assert float((c - (a + t * (b - a))).norm()) > 0.9, (obj, bg)


def test_render_shape_range_and_determinism():
    clip = render(SPEC, seed=3)
    assert clip.shape == (3, 8, 16, 16)
    assert clip.dtype == torch.float32
    assert float(clip.min()) >= -1.0 and float(clip.max()) <= 1.0
    assert torch.equal(clip, render(SPEC, seed=3))
    others = [render(SPEC, seed=s) for s in range(20)]
    assert sum(not torch.equal(clip, o) for o in others) >= 10
    assert render(SPEC, frames=4, size=12).shape == (3, 4, 12, 12)
    assert render_batch([SPEC, SPEC], [1, 2]).shape == (2, 3, 8, 16, 16)
    with pytest.raises(ValueError):
        render(SPEC, frames=12, size=16)  # 7 px object + 11 px travel > 16


class _CountTorchCalls(TorchFunctionMode):
    """Counts the torch functions and tensor methods called inside it."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.calls += 1
        return func(*args, **(kwargs or {}))


def _torch_calls_of_render(frames: int, size: int) -> int:
    render(SPEC, frames=frames, size=size, seed=3)  # the background and the shape mask are cached after this
    with _CountTorchCalls() as counter:
        render(SPEC, frames=frames, size=size, seed=3)
    return counter.calls


def test_render_is_vectorized():
    # Benchmarks render thousands of clips: what keeps that cheap on any machine is that rendering
    # does no per-pixel Python work. Its tensor operations do not grow with the frame size, and grow
    # with the frame count by a few per frame (one masked write of the object).
    assert _torch_calls_of_render(8, 16) == _torch_calls_of_render(8, 32) == _torch_calls_of_render(8, 64)
    per_frame = (_torch_calls_of_render(16, 32) - _torch_calls_of_render(8, 32)) / 8
    assert _torch_calls_of_render(8, 32) - _torch_calls_of_render(4, 32) == 4 * per_frame
    assert 0 < per_frame <= 4


@pytest.mark.parametrize("direction", world.DIRECTIONS)
@pytest.mark.parametrize("shape", world.SHAPES)
def test_object_stays_inside_and_moves_one_pixel(direction, shape):
    dy, dx = world.DIRECTION_STEP[direction]
    area = int(shape_mask(shape).sum())
    colour = to_signed(OBJECT_RGB["blue"]).view(3, 1, 1)
    for seed in range(60):
        spec = ClipSpec(shape, "blue", direction, "gray", "stripes")
        clip = render(spec, seed=seed)
        bg = background_image("gray", "stripes", 16).unsqueeze(1)
        obj = (clip - colour.unsqueeze(1)).abs().amax(0) < 1e-6  # (T, H, W)
        assert obj.flatten(1).sum(1).tolist() == [area] * 8  # whole object in every frame
        assert torch.equal(clip[:, ~obj], bg.expand_as(clip)[:, ~obj])  # the rest is background
        rows = torch.arange(16.0).view(1, 16, 1)
        cols = torch.arange(16.0).view(1, 1, 16)
        cy = (obj * rows).flatten(1).sum(1) / area
        cx = (obj * cols).flatten(1).sum(1) / area
        assert torch.allclose(cy.diff(), torch.full((7,), float(dy)))
        assert torch.allclose(cx.diff(), torch.full((7,), float(dx)))


def test_patterns_use_two_shades_of_the_background():
    for bg in world.BACKGROUNDS:
        plain = background_image(bg, "plain", 16)
        assert torch.equal(plain, to_signed(BACKGROUND_RGB[bg][0]).view(3, 1, 1).expand(3, 16, 16))
        for pattern in ("stripes", "checker"):
            img = background_image(bg, pattern, 16)
            assert len(torch.unique(img.reshape(3, -1), dim=1).T) == 2
        grad = background_image(bg, "gradient", 16)
        assert len(torch.unique(grad.reshape(3, -1), dim=1).T) == 16


def test_splits_partition_all_specs():
    specs = all_specs()
    assert len(specs) == len(set(specs)) == 576
    held, train = held_out_specs(), training_specs()
    assert set(held).isdisjoint(train)
    assert set(held) | set(train) == set(specs)
    assert len(held) == 97 and 0.10 <= len(held) / 576 <= 0.20
    assert held == held_out_specs() and train == training_specs()  # deterministic
    assert all(sum(s.indices()) % 7 == 0 for s in held)


def test_every_value_and_every_pair_of_values_occurs_in_training():
    train = training_specs()
    for name in ATTRIBUTES:
        assert {getattr(s, name) for s in train} == set(VOCABULARY[name])
    for a, b in itertools.combinations(ATTRIBUTES, 2):
        seen = {(getattr(s, a), getattr(s, b)) for s in train}
        assert seen == set(itertools.product(VOCABULARY[a], VOCABULARY[b])), (a, b)


@pytest.mark.parametrize("template", range(len(TEMPLATES)))
def test_prompt_round_trips_for_every_template(template):
    rng = random.Random(template)
    specs = all_specs()
    for _ in range(300):
        spec = rng.choice(specs)
        text = prompt_for(spec, rng, template=template)
        assert parse_prompt(text) == spec, text
        assert parse_prompt(text.upper()) == spec


def test_prompts_vary_and_are_reproducible():
    texts = {prompt_for(SPEC, random.Random(seed)) for seed in range(200)}
    assert len(texts) > 100
    assert prompt_for(SPEC, random.Random(7)) == prompt_for(SPEC, random.Random(7))
    rng = random.Random(0)
    seen = {parse_prompt(prompt_for(s, rng)) == s for s in all_specs()}
    assert seen == {True}


def test_examples_from_the_brief_parse():
    cases = {
        "a red circle drifting left over a white striped background":
            ClipSpec("circle", "red", "left", "white", "stripes"),
        "purple checkered backdrop, a small green square moves upward":
            ClipSpec("square", "green", "up", "purple", "checker"),
        "on a plain gray background, a yellow triangle slides to the right":
            ClipSpec("triangle", "yellow", "right", "gray", "plain"),
        "A blue disc fading grey backdrop heading downwards":
            ClipSpec("circle", "blue", "down", "gray", "gradient"),
    }
    for text, spec in cases.items():
        assert parse_prompt(text) == spec, text


def test_parse_prompt_rejects_incomplete_or_ambiguous_text():
    assert parse_prompt("") is None
    assert parse_prompt("a red circle moving left") is None  # no background
    assert parse_prompt("a red circle moving left and right over a white plain background") is None
    assert parse_prompt("a red and blue circle moving left over a white plain background") is None
