"""Recover a toy clip's five attributes from its pixels alone.

The reader is the judge of prompt adherence, so it only knows the world's
palette and geometry (module constants of `flexcache.toyworld.world`), never the
clip's spec.  Every decision is a nearest-prototype or robust-statistic choice,
so slightly noisy or blurry clips (e.g. from a small diffusion model) still read:

* background colour: for each background colour, the distance of every pixel
  to the colour segment between its two shades; the colour with the smallest
  median distance wins (the object covers under a fifth of the pixels);
* object mask: pixels nearer to some object colour than to that background
  segment, reduced per frame to the largest 8-connected component;
* object colour: the mask's mean colour, nearest object colour;
* shape: the mask's fill ratio of its bounding box and its top/bottom mass
  asymmetry (median over frames), nearest to the rendered prototypes
  (square ~1.0/0, circle ~0.76/0, triangle ~0.51/0.48);
* direction: least-squares slope of the mask centroid over frames, the larger
  of the row / column velocities and its sign;
* pattern: each background pixel's position between the two shades, averaged
  over the frames where it is not (near) the object; "plain" when it barely
  varies, otherwise the best |correlation| with the stripes / checker (every
  phase) / gradient templates.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn.functional as F

from flexcache.toyworld.world import (
    ATTRIBUTES,
    BACKGROUND_RGB,
    BACKGROUNDS,
    CHECKER_CELL,
    COLORS,
    OBJECT_RGB,
    OBJECT_SIZE,
    SHAPES,
    STRIPE_PERIOD,
    ClipSpec,
    shape_mask,
    to_signed,
)

# Below this spread (in units of the shade-A-to-shade-B distance) the background is
# "plain"; stripes and checker spread ~0.5, the gradient ~0.3.
PLAIN_MAX_STD = 0.15
# Frames whose object mask has fewer pixels are ignored for shape and direction.
MIN_MASK_PIXELS = 3


def _segment(points: torch.Tensor, a: torch.Tensor, b: torch.Tensor):
    """Distance of (..., 3) points to segment [a, b] and their unclamped position t."""
    d = b - a
    t = ((points - a) * d).sum(-1) / (d * d).sum()
    nearest = a + t.clamp(0.0, 1.0).unsqueeze(-1) * d
    return (points - nearest).norm(dim=-1), t


def _largest_components(mask: torch.Tensor) -> torch.Tensor:
    """Keep, in every frame of a (T, H, W) bool mask, its largest 8-connected part."""
    frames, height, width = mask.shape
    if not bool(mask.any()):
        return mask
    maskf = mask.float().unsqueeze(1)
    labels = torch.arange(1, mask.numel() + 1, dtype=torch.float32).view(frames, 1, height, width)
    labels = labels * maskf
    for _ in range(height * width):
        grown = F.max_pool2d(labels, 3, stride=1, padding=1) * maskf
        if torch.equal(grown, labels):
            break
        labels = grown
    labels = labels.squeeze(1).long()
    keep = torch.zeros_like(mask)
    for t in range(frames):
        present = labels[t][mask[t]]
        if present.numel() == 0:
            continue
        values, counts = torch.unique(present, return_counts=True)
        keep[t] = labels[t] == values[counts.argmax()]
    return keep


def _shape_features(mask: torch.Tensor) -> tuple[float, float] | None:
    """(fill ratio of the bounding box, bottom-minus-top mass / total) of a 2-D mask."""
    coords = mask.nonzero()
    count = coords.shape[0]
    if count < MIN_MASK_PIXELS:
        return None
    rows, cols = coords[:, 0].float(), coords[:, 1].float()
    r0, r1 = rows.min(), rows.max()
    height = float(r1 - r0 + 1)
    width = float(cols.max() - cols.min() + 1)
    centre = (r0 + r1) / 2.0
    asym = float((rows > centre).sum() - (rows < centre).sum()) / count
    return count / (height * width), asym


@functools.lru_cache(maxsize=None)
def _shape_prototypes() -> tuple[tuple[str, float, float], ...]:
    protos = []
    for shape in SHAPES:
        feats = _shape_features(shape_mask(shape, OBJECT_SIZE))
        assert feats is not None
        protos.append((shape, *feats))
    return tuple(protos)


@functools.lru_cache(maxsize=None)
def _pattern_templates(height: int, width: int) -> tuple[tuple[str, ...], torch.Tensor]:
    """(names, (K, H, W) templates): stripes and checker at every phase, and the gradient."""
    rows = torch.arange(height).view(height, 1).expand(height, width)
    cols = torch.arange(width).view(1, width).expand(height, width)
    names: list[str] = []
    templates: list[torch.Tensor] = []
    half = STRIPE_PERIOD // 2
    for offset in range(STRIPE_PERIOD):
        names.append("stripes")
        templates.append((((rows + offset) // half) % 2).float())
    period = 2 * CHECKER_CELL
    for oy in range(period):
        for ox in range(period):
            names.append("checker")
            cells = (rows + oy) // CHECKER_CELL + (cols + ox) // CHECKER_CELL
            templates.append((cells % 2).float())
    names.append("gradient")
    templates.append(cols.float() / max(width - 1, 1))
    return tuple(names), torch.stack(templates)


def _nearest(value: torch.Tensor, palette: dict[str, tuple[float, float, float]]) -> str:
    names = list(palette)
    colours = torch.stack([to_signed(palette[n]) for n in names])
    return names[int((colours - value).norm(dim=-1).argmin())]


def describe_clip(clip: torch.Tensor) -> dict[str, Any]:
    """Read a (3, frames, H, W) clip in [-1, 1]; the attributes plus diagnostics.

    Keys: the five attribute names, and `mask_pixels` (per frame),
    `shape_features` (fill, asymmetry), `velocity` (rows, cols per frame),
    `pattern_std` (spatial spread of the shade, noise removed) and
    `pattern_scores` (best |correlation| per patterned kind).
    """
    if clip.dim() != 4 or clip.shape[0] != 3:
        raise ValueError(f"expected a (3, frames, H, W) clip, got {tuple(clip.shape)}")
    x = clip.detach().to("cpu", torch.float32)
    frames, height, width = x.shape[1:]
    pixels = x.permute(1, 2, 3, 0)  # (T, H, W, 3)

    background, dist_bg, shade, raw, mask = _object_pixels(pixels)
    counts = mask.flatten(1).sum(1)

    # Object colour.
    if bool(mask.any()):
        mean = pixels[mask].mean(0)
    else:  # nothing object-like: take the pixel least like the background
        mean = pixels.reshape(-1, 3)[dist_bg.flatten().argmax()]
    color = _nearest(mean, OBJECT_RGB)

    # Shape: median features over frames, nearest prototype.
    feats = [f for f in (_shape_features(mask[t]) for t in range(frames)) if f is not None]
    if feats:
        fill = float(torch.tensor([f[0] for f in feats]).median())
        asym = float(torch.tensor([f[1] for f in feats]).median())
    else:
        fill, asym = 0.0, 0.0
    shape = min(_shape_prototypes(), key=lambda p: (fill - p[1]) ** 2 + (asym - p[2]) ** 2)[0]

    # Direction: centroid velocity.
    valid = counts >= MIN_MASK_PIXELS
    vy = vx = 0.0
    if int(valid.sum()) >= 2:
        ts = torch.arange(frames, dtype=torch.float32)[valid]
        grid_r = torch.arange(height, dtype=torch.float32).view(1, height, 1)
        grid_c = torch.arange(width, dtype=torch.float32).view(1, 1, width)
        m = mask[valid].float()
        n = m.flatten(1).sum(1)
        cy = (m * grid_r).flatten(1).sum(1) / n
        cx = (m * grid_c).flatten(1).sum(1) / n
        dt = ts - ts.mean()
        vy = float((dt * (cy - cy.mean())).sum() / (dt * dt).sum())
        vx = float((dt * (cx - cx.mean())).sum() / (dt * dt).sum())
    if abs(vx) >= abs(vy):
        direction = "right" if vx > 0 else "left"
    else:
        direction = "down" if vy > 0 else "up"

    # Pattern: per-pixel shade position over frames where the pixel is background.
    near_obj = F.max_pool2d(raw.float().unsqueeze(1), 3, stride=1, padding=1).squeeze(1) > 0
    bg = (~near_obj).float()
    weight = bg.sum(0)
    if float(weight.sum()) == 0.0:  # fall back to everything
        bg = torch.ones_like(bg)
        weight = bg.sum(0)
    mean_shade = (shade * bg).sum(0) / weight.clamp(min=1.0)
    wsum = weight.sum()
    centred = mean_shade - (mean_shade * weight).sum() / wsum
    spread = float(((centred**2) * weight).sum() / wsum)
    # The background is static, so its variation over frames is noise; remove the
    # share of that noise left in the per-pixel means before judging "plain".
    resid = (shade - mean_shade) ** 2 * bg
    noise_var = float(resid.sum() / (weight - 1.0).clamp(min=0.0).sum().clamp(min=1.0))
    noise_in_mean = float((noise_var / weight.clamp(min=1.0) * weight).sum() / wsum)
    std = max(spread - noise_in_mean, 0.0) ** 0.5
    names, templates = _pattern_templates(height, width)
    tc = templates - (templates * weight).sum((1, 2), keepdim=True) / wsum
    cov = (tc * centred * weight).sum((1, 2))
    tstd = ((tc**2) * weight).sum((1, 2)).sqrt()
    corr = (cov.abs() / (tstd * ((centred**2) * weight).sum().sqrt() + 1e-8)).tolist()
    scores: dict[str, float] = {}
    for name, value in zip(names, corr):
        scores[name] = max(scores.get(name, 0.0), value)
    pattern = "plain" if std < PLAIN_MAX_STD else max(scores, key=scores.__getitem__)

    return {
        "shape": shape,
        "color": color,
        "direction": direction,
        "background": background,
        "pattern": pattern,
        "mask_pixels": counts.tolist(),
        "shape_features": (fill, asym),
        "velocity": (vy, vx),
        "pattern_std": std,
        "pattern_scores": scores,
    }


def object_mask(clip: torch.Tensor) -> torch.Tensor:
    """The pixels the reader takes for the object: a (frames, H, W) bool mask of a (3, frames, H, W) clip.

    For judging masks a model derives (`flexcache bench quality`); the engine never reads it.
    """
    return _object_pixels(clip.detach().to("cpu", torch.float32).permute(1, 2, 3, 0))[4]


def _object_pixels(pixels: torch.Tensor):
    """(background name, distance to its shade segment, shade position, raw object pixels, object mask).

    `pixels` is (T, H, W, 3). The background colour has the smallest median
    distance to its shade segment; an object pixel is nearer to an object
    colour than to that segment, and the mask keeps its largest components.
    """
    seg = {}
    for name in BACKGROUNDS:
        a, b = (to_signed(rgb) for rgb in BACKGROUND_RGB[name])
        seg[name] = _segment(pixels, a, b)
    background = min(BACKGROUNDS, key=lambda n: float(seg[n][0].median()))
    dist_bg, shade = seg[background]
    obj = torch.stack([to_signed(OBJECT_RGB[c]) for c in COLORS])
    dist_obj = (pixels.unsqueeze(-2) - obj).norm(dim=-1).min(-1).values
    raw = dist_obj < dist_bg
    return background, dist_bg, shade, raw, _largest_components(raw)


def read_clip(clip: torch.Tensor) -> ClipSpec:
    """The `ClipSpec` the reader sees in a (3, frames, H, W) clip in [-1, 1]."""
    info = describe_clip(clip)
    return ClipSpec(**{name: info[name] for name in ATTRIBUTES})


def read_clips(clips: torch.Tensor) -> list[ClipSpec]:
    """`read_clip` over a (batch, 3, frames, H, W) stack."""
    if clips.dim() != 5:
        raise ValueError(f"expected (batch, 3, frames, H, W), got {tuple(clips.shape)}")
    return [read_clip(c) for c in clips]


def attribute_matches(clip: torch.Tensor, spec: ClipSpec) -> dict[str, bool]:
    """Per attribute: does the reader find the requested value in the clip?"""
    seen = read_clip(clip)
    return {name: getattr(seen, name) == getattr(spec, name) for name in ATTRIBUTES}


def match_counts(clips, specs) -> dict[str, int]:
    """Per attribute: how many of the `clips` show the value their `specs` request."""
    counts = {name: 0 for name in ATTRIBUTES}
    for clip, spec in zip(clips, specs, strict=True):
        for name, ok in attribute_matches(clip, spec).items():
            counts[name] += ok
    return counts


def adherence(clip: torch.Tensor, spec: ClipSpec) -> float:
    """Fraction of the five requested attributes the reader finds (0.0 to 1.0)."""
    matches = attribute_matches(clip, spec)
    return sum(matches.values()) / len(matches)


__all__ = [
    "adherence",
    "attribute_matches",
    "describe_clip",
    "match_counts",
    "read_clip",
    "read_clips",
]
