"""Image-to-video adapters: the conditioning images' content digests join the generation signature."""

from __future__ import annotations

import functools
import hashlib
from typing import Any

import torch

from flexcache.integrations.adapters import (
    CogVideoXAdapter,
    LTXAdapter,
    WanAdapter,
    _prepared_latent,
)


def content_digest(value: Any) -> str | None:
    """A digest of an image's (or tensor's) content, the same in every process; None for what cannot be read.

    A list of one is that one. PIL images by mode, size and pixels; tensors
    and arrays by dtype, shape and bytes.
    """
    import numpy as np

    if isinstance(value, (list, tuple)):
        if len(value) != 1:
            return None
        value = value[0]
    digest = hashlib.sha256()
    if isinstance(value, torch.Tensor):
        data = value.detach().to("cpu").contiguous()
        digest.update(f"tensor:{data.dtype}:{tuple(data.shape)}:".encode())
        digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(value, np.ndarray):
        data = np.ascontiguousarray(value)
        digest.update(f"array:{data.dtype}:{data.shape}:".encode())
        digest.update(data.tobytes())
    else:
        try:
            import PIL.Image
        except ImportError:  # pragma: no cover - diffusers depends on Pillow
            return None
        if not isinstance(value, PIL.Image.Image):
            return None
        digest.update(f"image:{value.mode}:{value.size}:".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()[:32]


def _several(value: Any) -> bool:
    """A list of images, or a batch of them in one tensor or array (B, C, H, W) with B > 1."""
    if isinstance(value, (list, tuple)):
        return len(value) != 1
    shape = getattr(value, "shape", None)
    return shape is not None and len(shape) == 4 and int(shape[0]) > 1


class ImageConditioned:
    """What image-to-video adapters share: the conditioning images' content digests join the signature.

    An entry made for one image never serves another. Several images (a
    list, or a batch in one tensor) cannot be keyed: such calls run uncached.
    No region hits: the image fixes the first frame.
    """

    image_names: tuple[str, ...] = ("image",)

    def _conditions(self, args: dict[str, Any]) -> tuple[tuple[str, str], ...]:
        return tuple((name, content_digest(args[name])) for name in self.image_names if args.get(name) is not None)

    def family_uncacheable_reason(self, pipe: Any, args: dict[str, Any]) -> str | None:
        for name in self.image_names:
            value = args.get(name)
            if value is None:
                continue
            if _several(value):
                return f"several conditioning images ({name}) are served uncached; call once per image"
            if content_digest(value) is None:
                return f"{name} of type {type(value).__name__} cannot be keyed (pass a PIL image, array or tensor)"
        return None

    def transformers(self, pipe: Any) -> list[Any]:
        return []

    def supports_regions(self, pipe: Any) -> bool:
        return False


class WanImageToVideoAdapter(ImageConditioned, WanAdapter):
    """`WanImageToVideoPipeline` (Wan2.1 I2V / FLF2V, Wan2.2 I2V A14B).

    The cached latent is the noise latent (``vae.config.z_dim`` channels); the
    pipeline concatenates the image's latent condition at every step, so a
    resumed run gets it as the uninterrupted one did. `image`, `last_image`
    and caller `image_embeds` are keyed by content.
    """

    pipeline_class_name = "WanImageToVideoPipeline"
    image_names = ("image", "last_image", "image_embeds")

    def _latent_channels(self, pipe: Any) -> int:
        return int(pipe.vae.config.z_dim)


class CogVideoXImageToVideoAdapter(ImageConditioned, CogVideoXAdapter):
    """`CogVideoXImageToVideoPipeline`: the noise latent has half the transformer's input channels.

    The image latent is concatenated at every step. The pipeline samples it
    from the VAE with the call's `generator`: pass the same generator seed to
    get the same conditioning on a hit.
    """

    pipeline_class_name = "CogVideoXImageToVideoPipeline"

    def _latent_channels(self, pipe: Any) -> int:
        return int(pipe.transformer.config.in_channels) // 2


class LTXImageToVideoAdapter(ImageConditioned, LTXAdapter):
    """`LTXImageToVideoPipeline`: LTX's packed tokens; the image is the first latent frame.

    The pipeline writes the image's latent into its own initial draw and
    ignores the image when given ``latents=``, so on a miss it draws them
    itself, from a generator seeded with the plan's seed (the codec then finds
    no seed noise to subtract and stores the entry unsubtracted). A hit's x_K
    carries the image frame, kept through every step, and its digest is in
    the signature. The latent's shape comes from LTX's text-to-video
    `prepare_latents`, which packs the same noise latent.
    """

    pipeline_class_name = "LTXImageToVideoPipeline"
    draws_own_noise = True

    def _prepared(self, pipe: Any, sizes: dict[str, int], channels: int, dtype: torch.dtype) -> torch.Tensor:
        from diffusers import LTXPipeline

        return _prepared_latent(functools.partial(LTXPipeline.prepare_latents, pipe), sizes, channels, dtype)
