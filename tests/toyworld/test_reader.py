"""The attribute reader: accuracy on clean and noisy clips, and adherence."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F

from flexcache.toyworld.reader import (
    adherence,
    attribute_matches,
    describe_clip,
    read_clip,
    read_clips,
)
from flexcache.toyworld.world import ATTRIBUTES, VOCABULARY, ClipSpec, all_specs, render

NOISE_STD = 0.05


def _accuracy(pairs):
    hits = {name: 0 for name in ATTRIBUTES}
    for clip, spec in pairs:
        seen = read_clip(clip)
        for name in ATTRIBUTES:
            hits[name] += getattr(seen, name) == getattr(spec, name)
    return {name: hits[name] / len(pairs) for name in ATTRIBUTES}


def _noisy(clip, generator, std=NOISE_STD):
    return (clip + std * torch.randn(clip.shape, generator=generator)).clamp(-1.0, 1.0)


def _change(spec, names, rng):
    """`spec` with each attribute in `names` set to a different value."""
    return spec.replace(
        **{n: rng.choice([v for v in VOCABULARY[n] if v != getattr(spec, n)]) for n in names}
    )


@pytest.fixture(scope="module")
def fresh_clips():
    """Every one of the 576 combinations once, each with a random start (seed)."""
    rng = random.Random(20240611)
    return [(render(spec, seed=rng.randrange(2**31)), spec) for spec in all_specs()]


def test_reader_is_accurate_on_clean_clips(fresh_clips, record_property):
    assert len(fresh_clips) >= 500
    accuracy = _accuracy(fresh_clips)
    record_property("clean_accuracy", accuracy)
    print(f"\nreader accuracy, {len(fresh_clips)} clean clips: {accuracy}")
    for name, value in accuracy.items():
        assert value >= 0.98, (name, accuracy)


def test_reader_on_noisy_clips(fresh_clips, record_property):
    generator = torch.Generator().manual_seed(0)
    noisy = [(_noisy(clip, generator), spec) for clip, spec in fresh_clips]
    accuracy = _accuracy(noisy)
    record_property("noisy_accuracy", accuracy)
    print(f"\nreader accuracy, {len(noisy)} clips + N(0, {NOISE_STD}^2): {accuracy}")
    for name, value in accuracy.items():
        assert value >= 0.90, (name, accuracy)


def test_reader_tolerates_blur_plus_noise(record_property):
    """A 3x3 blur (soft model edges) plus noise: still mostly right."""
    rng = random.Random(1)
    generator = torch.Generator().manual_seed(1)
    kernel = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]) / 16.0
    pairs = []
    for spec in rng.sample(all_specs(), 100):
        clip = render(spec, seed=rng.randrange(2**31))
        x = clip.permute(1, 0, 2, 3).reshape(-1, 1, 16, 16)
        x = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel.view(1, 1, 3, 3))
        x = x.view(8, 3, 16, 16).permute(1, 0, 2, 3)
        pairs.append((_noisy(x, generator), spec))
    accuracy = _accuracy(pairs)
    record_property("blur_noisy_accuracy", accuracy)
    for name, value in accuracy.items():
        assert value >= 0.90, (name, accuracy)


def test_reader_never_sees_the_spec_and_handles_other_sizes():
    spec = ClipSpec("square", "yellow", "down", "purple", "gradient")
    assert read_clip(render(spec, seed=5, frames=6, size=20)) == spec
    assert read_clip(render(spec, seed=5).to(torch.float64)) == spec
    with pytest.raises(ValueError):
        read_clip(torch.zeros(8, 16, 16))


def test_read_clips_and_describe_clip():
    specs = all_specs()[::97]
    batch = torch.stack([render(s, seed=i) for i, s in enumerate(specs)])
    assert read_clips(batch) == specs
    info = describe_clip(batch[0])
    assert {"mask_pixels", "shape_features", "velocity", "pattern_std"} <= set(info)
    assert len(info["mask_pixels"]) == 8


def test_blank_clip_reads_without_error():
    blank = torch.full((3, 8, 16, 16), 0.9)
    assert read_clip(blank).background == "white"
    assert read_clip(blank).pattern == "plain"


def test_adherence_counts_matching_attributes():
    rng = random.Random(3)
    specs = all_specs()
    for _ in range(60):
        spec = rng.choice(specs)
        clip = render(spec, seed=rng.randrange(2**31))
        assert adherence(clip, spec) == 1.0
        assert all(attribute_matches(clip, spec).values())
        for k in range(1, 6):
            changed = rng.sample(ATTRIBUTES, k)
            other = _change(spec, changed, rng)
            assert adherence(clip, other) == pytest.approx((5 - k) / 5)


def test_adherence_on_noisy_clips_is_about_right():
    rng = random.Random(4)
    generator = torch.Generator().manual_seed(4)
    for k in (0, 2, 4):
        scores = []
        for _ in range(30):
            spec = rng.choice(all_specs())
            clip = _noisy(render(spec, seed=rng.randrange(2**31)), generator)
            changed = rng.sample(ATTRIBUTES, k)
            other = _change(spec, changed, rng)
            scores.append(adherence(clip, other))
        assert abs(sum(scores) / len(scores) - (5 - k) / 5) <= 0.05
