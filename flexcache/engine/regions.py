"""Region hits: reuse one part of a cached latent and generate the other part anew.

A cached run records, per checkpoint, a soft mask of where its object lives
(the model's own cross-attention on the object words; captured by
`integrations.attention_masks`). A *region hit* resumes at step K from a
cached x_K, but a region of it starts again from fresh noise:

* ``object`` regenerated (same background, another object): the region is
  the cached object's mask, dilated;
* ``background`` regenerated (same object, another setting): everything
  outside the cached object's mask;
* ``composed``: the object of one entry over the background of another, at
  the same K; what neither keeps (the second entry's old object, where the
  first entry's object is not) is regenerated.

The regenerated region runs a schedule of its own, on the same steps
(`region_sigmas`): it starts at noise level 1 and catches up with the rest of
the latent within a window of the remaining steps, after which the latent is
uniform again and its checkpoints are ordinary entries. This needs a
transformer that takes a noise level per token (Wan) and a one-step flow
solver (Euler); the pipeline integration says whether it has them.

Masks are stored with their entry in a small checksummed container (FXMK,
`docs/format.md`); one that fails its checksum gives no region hit.
"""

from __future__ import annotations

import struct
import zlib

import torch
import torch.nn.functional as F

from flexcache.core.errors import CorruptBlobError, InvalidLatentError
from flexcache.kernels.ops import all_finite

MASK_MAGIC = b"FXMK"
MASK_VERSION = 1
_HEADER = struct.Struct("<4sBHHH")  # magic, version, frames, rows, cols
_CRC = struct.Struct("<I")
MAX_MASK_CELLS = 16384  # larger token grids are average-pooled down before storing

REGENERATED = ("object", "background", "composed")


def encode_mask(mask: torch.Tensor) -> bytes:
    """A (frames, rows, cols) soft mask in [0, 1] as a checksummed, compressed blob (one byte a cell).

    Grids over `MAX_MASK_CELLS` cells are average-pooled by 2 in space until they fit.

    >>> blob = encode_mask(torch.zeros(4, 8, 8))
    >>> decode_mask(blob).shape
    torch.Size([4, 8, 8])
    """
    if mask.dim() != 3 or mask.numel() == 0:
        raise ValueError(f"a mask is (frames, rows, cols); got shape {tuple(mask.shape)}")
    mask = mask.detach().to("cpu", torch.float32).clamp(0.0, 1.0)
    while mask.numel() > MAX_MASK_CELLS and min(mask.shape[1:]) >= 2:
        mask = F.avg_pool2d(mask.unsqueeze(1), 2).squeeze(1)
    frames, rows, cols = mask.shape
    body = zlib.compress((mask * 255.0).round().to(torch.uint8).numpy().tobytes(), 9)
    head = _HEADER.pack(MASK_MAGIC, MASK_VERSION, frames, rows, cols)
    return head + body + _CRC.pack(zlib.crc32(head + body))


def decode_mask(blob: bytes) -> torch.Tensor:
    """Inverse of `encode_mask`: a float32 (frames, rows, cols) mask in [0, 1].

    Raises:
        CorruptBlobError: a wrong magic or version, a failed checksum or a body of the wrong size.
    """
    blob = bytes(blob)
    if len(blob) < _HEADER.size + _CRC.size:
        raise CorruptBlobError(f"mask blob of {len(blob)} bytes is truncated")
    (crc,) = _CRC.unpack(blob[-_CRC.size:])
    if zlib.crc32(blob[:-_CRC.size]) != crc:
        raise CorruptBlobError("mask blob fails its checksum")
    magic, version, frames, rows, cols = _HEADER.unpack(blob[:_HEADER.size])
    if magic != MASK_MAGIC or version != MASK_VERSION:
        raise CorruptBlobError(f"not a version-{MASK_VERSION} mask blob ({magic!r} v{version})")
    try:
        raw = zlib.decompress(blob[_HEADER.size:-_CRC.size])
    except zlib.error as exc:
        raise CorruptBlobError(f"mask body does not decompress: {exc}") from None
    if len(raw) != frames * rows * cols:
        raise CorruptBlobError(f"mask body holds {len(raw)} cells, its header says {frames * rows * cols}")
    values = torch.frombuffer(bytearray(raw), dtype=torch.uint8).clone().float() / 255.0
    return values.reshape(frames, rows, cols)


def object_cells(soft: torch.Tensor, *, threshold: float, dilation: int) -> torch.Tensor:
    """The cells taken for the object: the soft mask at `threshold`, grown by `dilation` cells in space."""
    hard = (soft >= threshold).float()
    if dilation > 0:
        size = 2 * dilation + 1
        hard = F.max_pool3d(hard[None, None], (1, size, size), 1, (0, dilation, dilation))[0, 0]
    return hard > 0.5


def to_latent_grid(cells: torch.Tensor, latent_shape: tuple[int, ...], frame_axis: int) -> torch.Tensor:
    """A (frames, rows, cols) cell mask stretched to the latent's own (frames, H, W), as float 0/1.

    Nearest-neighbour in every axis, so a mask pooled down for storage still
    covers the whole latent.
    """
    frames, height, width = latent_shape[frame_axis], latent_shape[-2], latent_shape[-1]
    stretched = F.interpolate(cells.float()[None, None], size=(frames, height, width), mode="nearest")[0, 0]
    return stretched


def broadcast_to_latent(grid: torch.Tensor, latent_shape: tuple[int, ...], frame_axis: int) -> torch.Tensor:
    """A (frames, H, W) map shaped to broadcast against a latent of `latent_shape` (channels of size 1)."""
    if len(latent_shape) != 4:
        raise ValueError(f"region hits need a 4-d latent (channels, frames, H, W in some order); got {latent_shape}")
    if frame_axis == 1:  # (C, T, H, W)
        return grid.unsqueeze(0)
    if frame_axis == 0:  # (T, C, H, W)
        return grid.unsqueeze(1)
    raise ValueError(f"frame_axis {frame_axis} is not 0 or 1")


def regenerated_cells(regenerate: str, primary: torch.Tensor, secondary: torch.Tensor | None = None) -> torch.Tensor:
    """Which cells start again from noise, from the object cells of the entry (or entries) reused.

    `primary`: object cells of the entry whose background is kept (``object``,
    ``composed``) or whose object is kept (``background``). `secondary`
    (``composed`` only): object cells of the entry whose object is kept.
    """
    if regenerate == "object":
        return primary
    if regenerate == "background":
        return ~primary
    if regenerate == "composed":
        if secondary is None:
            raise ValueError("a composed region needs the object entry's cells")
        return primary & ~secondary
    raise ValueError(f"unknown region {regenerate!r}; expected one of {REGENERATED}")


def compose_start(kept: torch.Tensor, fresh_noise: torch.Tensor, region: torch.Tensor, *,
                  object_latent: torch.Tensor | None = None, object_region: torch.Tensor | None = None) -> torch.Tensor:
    """The latent a region hit starts from.

    `kept`: the cached x_K whose unregenerated part is reused; `region`: 1
    where the latent starts again (broadcastable to it); `fresh_noise`: the
    request's own seed noise there. For a composed hit, `object_latent` is the
    other entry's x_K and `object_region` its object cells: that part comes
    from it.
    """
    region = region.to(kept.device, kept.dtype)
    start = kept * (1 - region) + fresh_noise.to(kept.device, kept.dtype) * region
    if object_latent is not None and object_region is not None:
        object_region = object_region.to(kept.device, kept.dtype)
        start = start * (1 - object_region) + object_latent.to(kept.device, kept.dtype) * object_region
    return start


def region_sigmas(sigmas: torch.Tensor, skip: int, catch_up: int) -> torch.Tensor:
    """Noise levels of the regenerated region over the resumed steps.

    `sigmas` is the full schedule (N + 1 levels, the last 0); the rest of the
    latent runs ``sigmas[skip:]``. The region starts at 1.0 and falls linearly
    to ``sigmas[skip + catch_up]`` over `catch_up` steps, then follows the
    schedule. Same length as ``sigmas[skip:]``.

    >>> region_sigmas(torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0]), 2, 1).tolist()
    [1.0, 0.25, 0.0]
    """
    rest = sigmas[skip:].clone()
    remaining = rest.numel() - 1
    if not 1 <= catch_up <= remaining:
        raise ValueError(f"catch_up must be in 1..{remaining}; got {catch_up}")
    target = float(rest[catch_up])
    start = max(float(sigmas[0]), float(rest[0]))
    ramp = torch.linspace(start, target, catch_up + 1, dtype=rest.dtype)
    rest[: catch_up + 1] = ramp
    return rest


def catch_up_steps(num_steps: int, skip: int, window: float) -> int:
    """Resumed steps the region takes to catch up: `window` of the steps left, at least 1.

    >>> catch_up_steps(20, 8, 0.5)
    6
    """
    remaining = num_steps - skip
    return max(1, min(remaining, round(window * remaining)))


def checked_mask_blob(step: int, mask: torch.Tensor) -> bytes:
    """`encode_mask` of a run's mask at `step`, after checking it is a finite float (frames, rows, cols) tensor."""
    if not isinstance(mask, torch.Tensor) or mask.dim() != 3 or not mask.is_floating_point() or not all_finite(mask):
        raise InvalidLatentError(f"mask for step {step} must be a finite float (frames, rows, cols) tensor; "
                                 f"got {getattr(mask, 'shape', type(mask).__name__)}")
    return encode_mask(mask)
