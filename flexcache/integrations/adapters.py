"""One adapter per diffusers pipeline family: its latent layout and its generation signature.

Text-to-video families; image-to-video in `integrations.image_adapters`.
`integrations.adapter_table.ADAPTERS` lists them all, and `enable_flexcache`
picks one by the pipeline's class, searched along the class's MRO.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

import torch

from flexcache.core.types import dtype_name
from flexcache.engine.records import GenerationSignature
from flexcache.integrations.model_identity import (
    ATTENTION_KWARGS_NAMES,
    unkeyable_reason,
    with_model_identity,
)


def _digest(data: Any) -> str:
    payload = json.dumps(data, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _config_digest(config: Any) -> str:
    """A digest of a diffusers config that every process computes alike.

    Keys starting with ``_`` are diffusers' bookkeeping, not settings, and
    ``_use_default_values`` is a list built from a set, so its order changes
    with each process's hash seed: left in, no two workers of a fleet would
    share a signature (and so an entry).
    """
    return _digest({key: value for key, value in dict(config).items() if not str(key).startswith("_")})


def _rounded_frames(num_frames: int, temporal: int) -> int:
    """The frame count Wan-style pipelines (Wan, SkyReels-V2, Kandinsky 5) round a request to: 4k + 1."""
    if num_frames % temporal != 1:
        num_frames = num_frames // temporal * temporal + 1
    return max(num_frames, 1)


class PipelineAdapter:
    """Knows one pipeline family's latent layout and generation signature.

    A family implements `family_signature` (its sizes, latent, scheduler and
    settings) and `family_uncacheable_reason`; `signature` adds what every
    family shares: the model's identity (`integrations.model_identity`).
    """

    pipeline_class_name: str
    # A miss lets the pipeline draw its own initial latents from a generator seeded with the plan's seed,
    # where the pipeline composes them with a condition only its own draw gets (LTX image-to-video).
    draws_own_noise: bool = False
    # The call argument holding the (first) prompt embeddings; a batch of them runs uncached.
    prompt_embeds_name: str = "prompt_embeds"
    # The pipeline steps a second latent on a deep copy of its scheduler (LTX-2's audio), which
    # `cache_latent` joins to the step callback's latents.
    steps_scheduler_copies: bool = False
    # A multistep solver's state is captured and restored (not where a scheduler copy steps a second latent).
    keeps_solver_state: bool = True
    # The call arguments the pipeline hands to attention processors (diffusers' LoRA scale among them).
    attention_kwargs_names: tuple[str, ...] = ATTENTION_KWARGS_NAMES

    def signature(self, pipe: Any, args: dict[str, Any], model_id: str) -> GenerationSignature:
        """The call's generation signature: the family's, the denoisers' weights fingerprint, the loaded
        adapters and the call's attention kwargs.

        Raises:
            UncacheableCallError: attention kwargs that cannot be digested
                (`uncacheable_reason` says so first).
        """
        return with_model_identity(self.family_signature(pipe, args, model_id), pipe, self.named_denoisers(pipe),
                                   args, self.attention_kwargs_names)

    def family_signature(self, pipe: Any, args: dict[str, Any], model_id: str) -> GenerationSignature:
        """The family's part of the signature: sizes, latent shape and dtype, scheduler, settings."""
        raise NotImplementedError

    def to_pipeline_latents(self, pipe: Any, latent: torch.Tensor, *, resume: bool) -> torch.Tensor:
        """Cache layout (no batch) -> what the pipeline's ``latents=`` expects.

        `resume` is True for a cached x_K, False for fresh initial noise.
        """
        return latent.unsqueeze(0)

    def latent_arguments(self, pipe: Any, args: dict[str, Any], latent: torch.Tensor, *,
                         resume: bool) -> dict[str, torch.Tensor]:
        """The call arguments that hand the pipeline a cache-layout latent (LTX-2: video and audio)."""
        return {"latents": self.to_pipeline_latents(pipe, latent, resume=resume)}

    def cache_latent(self, pipe: Any, args: dict[str, Any], latents: torch.Tensor,
                     copy_output: torch.Tensor | None) -> torch.Tensor | None:
        """The step callback's `latents` (with the scheduler copy's output, where there is one) in the cache's
        layout; None when it cannot be made (the step is then not cached)."""
        return latents

    def transformers(self, pipe: Any) -> list[Any]:
        """The transformers whose cross-attention gives object masks; [] where masks are not captured."""
        return []

    def patch_size(self, pipe: Any) -> tuple[int, int, int]:
        return (1, 1, 1)

    def denoisers(self, pipe: Any) -> list[Any]:
        """The transformers the denoising loop calls (in-request caches are enabled on these)."""
        return [model for _, model in self.named_denoisers(pipe)]

    def named_denoisers(self, pipe: Any) -> list[tuple[str, Any]]:
        """`denoisers` by component name (their weights are fingerprinted into the signature)."""
        return [(name, model) for name in ("transformer", "transformer_2")
                if (model := getattr(pipe, name, None)) is not None]

    def steps_before(self, pipe: Any, index: int, skip_steps: int) -> int:
        """How many of a resumed run's `skip_steps` skipped steps denoiser `index` would have run."""
        return skip_steps if index == 0 else 0

    def supports_regions(self, pipe: Any) -> bool:
        """Whether a region hit can run: masks are captured and the scheduler takes a region schedule."""
        return False

    def uncacheable_reason(self, pipe: Any, args: dict[str, Any]) -> str | None:
        """Why the call cannot be keyed (it then runs uncached): attention kwargs that cannot be digested,
        or the family's own reason; None when it can."""
        return unkeyable_reason(args, self.attention_kwargs_names) or self.family_uncacheable_reason(pipe, args)

    def family_uncacheable_reason(self, pipe: Any, args: dict[str, Any]) -> str | None:
        """Why this family cannot key the call, beyond what every family checks."""
        return None

    def _conditions(self, args: dict[str, Any]) -> tuple[tuple[str, str], ...]:
        """Signature entries for conditioning inputs (image-to-video: the images' digests)."""
        return ()

    @staticmethod
    def _extra(args: dict[str, Any], names: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
        return tuple(sorted((name, str(args.get(name))) for name in names))

    @staticmethod
    def _scheduler_id(pipe: Any) -> str:
        return f"{type(pipe.scheduler).__name__}:{_config_digest(pipe.scheduler.config)}"


class WanAdapter(PipelineAdapter):
    """`WanPipeline` (Wan2.1 / Wan2.2 text-to-video): latents are (B, C, T, H, W) float32."""

    pipeline_class_name = "WanPipeline"

    def family_signature(self, pipe: Any, args: dict[str, Any], model_id: str) -> GenerationSignature:
        # Mirror the size adjustments WanPipeline.__call__ makes, so the
        # signature names the latent the pipeline will really produce.
        temporal = pipe.vae_scale_factor_temporal
        spatial = pipe.vae_scale_factor_spatial
        patch = self.patch_size(pipe)
        num_frames = _rounded_frames(int(args["num_frames"]), temporal)
        height = int(args["height"]) // (spatial * patch[1]) * (spatial * patch[1])
        width = int(args["width"]) // (spatial * patch[2]) * (spatial * patch[2])
        latent_shape = (
            self._latent_channels(pipe),
            (num_frames - 1) // temporal + 1,
            height // spatial,
            width // spatial,
        )
        return GenerationSignature(
            model_id=model_id,
            scheduler=self._scheduler_id(pipe),
            num_steps=int(args["num_inference_steps"]),
            height=height,
            width=width,
            num_frames=num_frames,
            latent_shape=latent_shape,
            latent_dtype="float32",  # WanPipeline denoises in float32 whatever the transformer's dtype
            extra=self._extra(args, ("guidance_scale", "guidance_scale_2", "negative_prompt",
                                     "max_sequence_length")) + self._experts(pipe) + self._conditions(args),
        )

    @staticmethod
    def _transformer(pipe: Any) -> Any:
        """The expert whose config shapes the latent (Wan2.2 A14B may run with its second one only)."""
        return pipe.transformer if pipe.transformer is not None else pipe.transformer_2

    def _latent_channels(self, pipe: Any) -> int:
        return int(self._transformer(pipe).config.in_channels)

    @staticmethod
    def _experts(pipe: Any) -> tuple[tuple[str, str], ...]:
        """Wan2.2's expert settings, where set (single-transformer signatures stay as they were).

        A resumed run needs nothing else: the pipeline picks the expert by each
        step's timestep, which the sliced schedule keeps.
        """
        config = getattr(pipe, "config", {})
        out = []
        if config.get("boundary_ratio") is not None:
            out.append(("boundary_ratio", str(config["boundary_ratio"])))
            if getattr(pipe, "transformer_2", None) is not None:
                out.append(("transformer_2", _config_digest(pipe.transformer_2.config)))
        if config.get("expand_timesteps"):
            out.append(("expand_timesteps", "True"))
        return tuple(out)


    def steps_before(self, pipe: Any, index: int, skip_steps: int) -> int:
        """Wan2.2 A14B: the high-noise expert runs the steps at or above the boundary timestep, the other the rest."""
        ratio = getattr(pipe.config, "boundary_ratio", None)
        full = getattr(pipe.scheduler, "flexcache_full", None)  # the resumed scheduler's full schedule
        if ratio is None or getattr(pipe, "transformer_2", None) is None or full is None:
            return super().steps_before(pipe, index, skip_steps)
        boundary = ratio * pipe.scheduler.config.num_train_timesteps
        high = int((full[0][:skip_steps] >= boundary).sum())
        return high if index == 0 else skip_steps - high

    def transformers(self, pipe: Any) -> list[Any]:
        return [t for t in (pipe.transformer, getattr(pipe, "transformer_2", None)) if t is not None]

    def patch_size(self, pipe: Any) -> tuple[int, int, int]:
        return tuple(int(p) for p in self._transformer(pipe).config.patch_size)

    def supports_regions(self, pipe: Any) -> bool:
        from flexcache.integrations.region_runs import supports_region_schedule

        # TI2V-5B's pipeline hands the transformer per-token timesteps of its own: not composed with a region's.
        return supports_region_schedule(pipe.scheduler) and not getattr(pipe, "config", {}).get("expand_timesteps")


class CogVideoXAdapter(PipelineAdapter):
    """`CogVideoXPipeline` (CogVideoX / CogVideoX1.5 text-to-video): latents are (B, T, C, H, W).

    The pipeline multiplies any ``latents=`` by ``scheduler.init_noise_sigma``
    (1.0 for its DDIM and DPM schedulers); a resumed run's scheduler says 1, so
    the pipeline starts from x_K itself.
    """

    pipeline_class_name = "CogVideoXPipeline"

    def family_signature(self, pipe: Any, args: dict[str, Any], model_id: str) -> GenerationSignature:
        config = pipe.transformer.config
        spatial, temporal = pipe.vae_scale_factor_spatial, pipe.vae_scale_factor_temporal
        height = int(args.get("height") or config.sample_height * spatial)
        width = int(args.get("width") or config.sample_width * spatial)
        num_frames = int(args.get("num_frames") or config.sample_frames)
        latent_frames = (num_frames - 1) // temporal + 1
        if config.patch_size_t is not None and latent_frames % config.patch_size_t:
            latent_frames += config.patch_size_t - latent_frames % config.patch_size_t  # CogVideoX1.5 padding
        dtype = _embeddings_dtype(pipe, args)
        timesteps = args.get("timesteps")
        num_steps = len(timesteps) if timesteps is not None else int(args["num_inference_steps"])
        return GenerationSignature(
            model_id=model_id,
            scheduler=self._scheduler_id(pipe),
            num_steps=num_steps,
            height=height,
            width=width,
            num_frames=num_frames,
            latent_shape=(latent_frames, self._latent_channels(pipe), height // spatial, width // spatial),
            latent_dtype=dtype_name(dtype),
            extra=self._extra(args, ("guidance_scale", "use_dynamic_cfg", "eta", "negative_prompt",
                                     "max_sequence_length", "timesteps")) + self._conditions(args),
            frame_axis=0,
        )

    def _latent_channels(self, pipe: Any) -> int:
        return int(pipe.transformer.config.in_channels)


def _embeddings_dtype(pipe: Any, args: dict[str, Any]) -> torch.dtype:
    """The dtype of the prompt embeddings the pipeline will use: the caller's, else its text encoder's.

    CogVideoX, Mochi and Allegro denoise in it.
    """
    embeds = args.get("prompt_embeds")
    if embeds is not None:
        return embeds.dtype
    if getattr(pipe, "text_encoder", None) is not None:
        return pipe.text_encoder.dtype
    return pipe.transformer.dtype


def _prepared_latent(prepare_latents: Any, sizes: dict[str, int], channels: int, dtype: torch.dtype) -> torch.Tensor:
    """One latent as the pipeline's own `prepare_latents` shapes it (batch 1), for its shape and dtype.

    Drawn on the meta device: every call computes the signature, and no
    values are needed. Arguments go by name: the families order them differently.
    """
    return prepare_latents(batch_size=1, num_channels_latents=channels, dtype=dtype, device=torch.device("meta"),
                           generator=None, latents=None, **sizes)


def _schedule_length(args: dict[str, Any]) -> int:
    for name in ("timesteps", "sigmas"):
        if args.get(name) is not None:
            return len(args[name])
    return int(args["num_inference_steps"])


class PreparedLatentsAdapter(PipelineAdapter):
    """A family whose latent shape and dtype come from the pipeline's own `prepare_latents`.

    Subclasses name the pipeline class, the call arguments that change the
    trajectory (`extra_names`) and the latent's frame axis.
    """

    extra_names: tuple[str, ...] = ()
    frame_axis: int = 1

    def family_signature(self, pipe: Any, args: dict[str, Any], model_id: str) -> GenerationSignature:
        sizes = self._sizes(pipe, args)
        probe = self._prepared(pipe, sizes, self._latent_channels(pipe), self._latent_dtype(pipe, args))
        return GenerationSignature(
            model_id=model_id,
            scheduler=self._scheduler_id(pipe),
            num_steps=_schedule_length(args),
            height=sizes["height"],
            width=sizes["width"],
            num_frames=sizes["num_frames"],
            latent_shape=tuple(int(d) for d in probe.shape[1:]),
            latent_dtype=dtype_name(probe.dtype),
            extra=self._extra(args, self.extra_names) + self._conditions(args),
            frame_axis=self.frame_axis,
        )

    def _prepared(self, pipe: Any, sizes: dict[str, int], channels: int, dtype: torch.dtype) -> torch.Tensor:
        return _prepared_latent(pipe.prepare_latents, sizes, channels, dtype)

    def _sizes(self, pipe: Any, args: dict[str, Any]) -> dict[str, int]:
        """`prepare_latents`' size arguments, as the pipeline's ``__call__`` passes them."""
        return {"height": int(args["height"]), "width": int(args["width"]), "num_frames": int(args["num_frames"])}

    def _latent_channels(self, pipe: Any) -> int:
        return int(pipe.transformer.config.in_channels)

    def _latent_dtype(self, pipe: Any, args: dict[str, Any]) -> torch.dtype:
        """The dtype ``__call__`` hands `prepare_latents` (float32 for LTX, HunyuanVideo and SkyReels-V2)."""
        return torch.float32


class HunyuanVideoAdapter(PreparedLatentsAdapter):
    """`HunyuanVideoPipeline`: latents are (B, C, T, H, W) float32.

    `guidance_scale` is the embedded (distilled) guidance the transformer is
    given, `true_cfg_scale` real classifier-free guidance: both are in the
    signature, as are caller-given `sigmas`.
    """

    pipeline_class_name = "HunyuanVideoPipeline"
    extra_names = ("guidance_scale", "true_cfg_scale", "negative_prompt", "max_sequence_length", "sigmas",
                   "prompt_template")


class LTXAdapter(PreparedLatentsAdapter):
    """`LTXPipeline` (LTX-Video text-to-video): latents are packed tokens (B, tokens, channels), float32.

    `prepare_latents` packs the noise it draws, so patch sizes and compression
    ratios are the pipeline's own.
    """

    pipeline_class_name = "LTXPipeline"
    extra_names = ("guidance_scale", "guidance_rescale", "frame_rate", "decode_timestep", "decode_noise_scale",
                   "negative_prompt", "max_sequence_length", "timesteps")
    frame_axis = 0  # tokens, frame-major


class MochiAdapter(PreparedLatentsAdapter):
    """`MochiPipeline`: latents are (B, C, T, H, W) in the prompt embeddings' dtype, on linear-quadratic sigmas."""

    pipeline_class_name = "MochiPipeline"
    extra_names = ("guidance_scale", "negative_prompt", "max_sequence_length", "timesteps")

    def _latent_dtype(self, pipe: Any, args: dict[str, Any]) -> torch.dtype:
        return _embeddings_dtype(pipe, args)


class AllegroAdapter(PreparedLatentsAdapter):
    """`AllegroPipeline`: latents are (B, C, T, H, W) in the prompt embeddings' dtype.

    Its `prepare_latents` multiplies any ``latents=`` by the scheduler's
    ``init_noise_sigma`` (above 1 for its Euler-family schedulers): fresh
    noise is scaled as its own would be, and a resumed run's scheduler says 1
    (`integrations.resuming.sliced_scheduler`). Ancestral schedulers draw
    fresh noise at each step, so a resumed run matches the uninterrupted one
    only in distribution.
    """

    pipeline_class_name = "AllegroPipeline"
    extra_names = ("guidance_scale", "negative_prompt", "max_sequence_length", "timesteps", "eta", "clean_caption")

    def _latent_dtype(self, pipe: Any, args: dict[str, Any]) -> torch.dtype:
        return _embeddings_dtype(pipe, args)


class HunyuanVideo15Adapter(PreparedLatentsAdapter):
    """`HunyuanVideo15Pipeline` (text-to-video): (B, C, T, H, W) in the transformer's dtype.

    Guidance lives in the pipeline's `guider` component: its class and config
    join the signature, and a resumed run's guider numbers steps as the full
    schedule does. The pipeline takes no step callback: FlexCache captures
    through the scheduler's step. Height and width default as its ``__call__``
    defaults them.
    """

    pipeline_class_name = "HunyuanVideo15Pipeline"
    extra_names = ("negative_prompt", "sigmas")

    def family_signature(self, pipe: Any, args: dict[str, Any], model_id: str) -> GenerationSignature:
        signature = super().family_signature(pipe, args, model_id)
        guider = getattr(pipe, "guider", None)
        if guider is None:
            return signature
        entry = ("guider", f"{type(guider).__name__}:{_config_digest(guider.config)}")
        return dataclasses.replace(signature, extra=tuple(sorted(signature.extra + (entry,))))

    def _sizes(self, pipe: Any, args: dict[str, Any]) -> dict[str, int]:
        height, width = args.get("height"), args.get("width")
        if height is None and width is None:
            aspect_width, aspect_height = pipe.default_aspect_ratio
            height, width = pipe.video_processor.calculate_default_height_width(aspect_height, aspect_width,
                                                                                pipe.target_size)
        return {"height": int(height), "width": int(width), "num_frames": int(args["num_frames"])}

    def _latent_channels(self, pipe: Any) -> int:
        return int(pipe.num_channels_latents)

    def _latent_dtype(self, pipe: Any, args: dict[str, Any]) -> torch.dtype:
        return pipe.transformer.dtype


class Kandinsky5Adapter(PreparedLatentsAdapter):
    """`Kandinsky5T2VPipeline`: channel-last latents (B, T, H, W, C) in the transformer's dtype.

    With ``visual_cond`` the latent the pipeline steps carries the visual
    condition and its mask as extra channels (zeros for text-to-video); the
    cache keeps the whole tensor, as the step callback hands it over, and
    fresh noise fills only the denoised channels. Prompt embeddings are
    `prompt_embeds_qwen` / `prompt_embeds_clip` / `prompt_cu_seqlens`.
    """

    pipeline_class_name = "Kandinsky5T2VPipeline"
    extra_names = ("guidance_scale", "negative_prompt", "max_sequence_length")
    frame_axis = 0
    prompt_embeds_name = "prompt_embeds_qwen"

    def _sizes(self, pipe: Any, args: dict[str, Any]) -> dict[str, int]:
        sizes = super()._sizes(pipe, args)
        sizes["num_frames"] = _rounded_frames(sizes["num_frames"], pipe.vae_scale_factor_temporal)
        return sizes

    def _latent_channels(self, pipe: Any) -> int:
        return int(pipe.transformer.config.in_visual_dim)

    def _latent_dtype(self, pipe: Any, args: dict[str, Any]) -> torch.dtype:
        return pipe.transformer.dtype

    def to_pipeline_latents(self, pipe: Any, latent: torch.Tensor, *, resume: bool) -> torch.Tensor:
        latent = latent.unsqueeze(0)
        if not resume:
            latent = latent.clone()
            latent[..., self._latent_channels(pipe):] = 0  # no visual condition: zeros, as its own draw has
        return latent


class SkyReelsV2Adapter(PreparedLatentsAdapter):
    """`SkyReelsV2Pipeline` (text-to-video): Wan's latent layout, (B, C, T, H, W) float32, on UniPC.

    Its ``__call__`` rounds the frame count to 4k + 1 before `prepare_latents`, as Wan does.
    """

    pipeline_class_name = "SkyReelsV2Pipeline"
    extra_names = ("guidance_scale", "negative_prompt", "max_sequence_length")

    def _sizes(self, pipe: Any, args: dict[str, Any]) -> dict[str, int]:
        sizes = super()._sizes(pipe, args)
        sizes["num_frames"] = _rounded_frames(sizes["num_frames"], pipe.vae_scale_factor_temporal)
        return sizes
