"""`LTX2Pipeline`: video and audio denoised together, cached as one joint latent.

LTX-2 steps a packed video latent (B, tokens, features) and a packed audio
latent (B, length, channels x mel bins) through one transformer, at the same
timesteps. An entry holds both, flattened into one vector (video, then
audio), so the engine keeps, codes and resumes a single latent per step and
the seed noise of both is one draw.

How the pipeline is driven, through its public call:

* the audio latent is stepped on ``copy.deepcopy(pipe.scheduler)`` and is
  not among the step callback's tensors: the binding's scheduler records
  what its deep copies step (`integrations.resuming.recording_copies`);
* the pipeline normalizes latents it is given with the VAEs' statistics:
  the adapter hands them over denormalized, in float64, so that the
  pipeline's normalization gives back the cached float32 values exactly;
  unpacked (5-D video, 4-D audio), the shapes the pipeline reads its sizes
  from without a warning;
* a multistep solver's state is not kept (the audio copy's history is not
  captured): a hit under UniPC restarts the solver (`CallReport.solver_state`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from flexcache.core.types import dtype_name
from flexcache.engine.records import GenerationSignature
from flexcache.integrations.adapters import PipelineAdapter, _schedule_length


@dataclass(frozen=True)
class JointLayout:
    """Where one call's video and audio latents sit in the joint latent, and the sizes to unpack them."""

    video: tuple[int, int]  # packed (tokens, features)
    audio: tuple[int, int]  # packed (length, channels x mel bins)
    video_grid: tuple[int, int, int]  # latent (frames, height, width)
    audio_mel_bins: int  # latent mel bins

    @property
    def video_size(self) -> int:
        return self.video[0] * self.video[1]

    @property
    def size(self) -> int:
        return self.video_size + self.audio[0] * self.audio[1]


class LTX2Adapter(PipelineAdapter):
    """`LTX2Pipeline` (LTX-2 text-to-video with audio): one joint float32 latent per step, video then audio."""

    pipeline_class_name = "LTX2Pipeline"
    steps_scheduler_copies = True
    keeps_solver_state = False
    extra_names = ("guidance_scale", "stg_scale", "modality_scale", "guidance_rescale", "audio_guidance_scale",
                   "audio_stg_scale", "audio_modality_scale", "audio_guidance_rescale",
                   "spatio_temporal_guidance_blocks", "frame_rate", "motion_speed", "use_cross_timestep",
                   "negative_prompt", "max_sequence_length", "sigmas", "timesteps")

    def family_signature(self, pipe: Any, args: dict[str, Any], model_id: str) -> GenerationSignature:
        layout = self.layout(pipe, args)
        shapes = ("layout", f"video{layout.video}+audio{layout.audio}")
        return GenerationSignature(
            model_id=model_id,
            scheduler=self._scheduler_id(pipe),
            num_steps=_schedule_length(args),
            height=int(args["height"]),
            width=int(args["width"]),
            num_frames=self._num_frames(args),
            latent_shape=(layout.size,),
            latent_dtype=dtype_name(torch.float32),
            extra=tuple(sorted(self._extra(args, self.extra_names) + (shapes,))),
            frame_axis=0,
        )

    @staticmethod
    def _num_frames(args: dict[str, Any]) -> int:
        return 121 if args.get("num_frames") is None else int(args["num_frames"])  # the pipeline's fixed default

    def layout(self, pipe: Any, args: dict[str, Any]) -> JointLayout:
        """The call's latent shapes, from the pipeline's own `prepare_latents` and `prepare_audio_latents`.

        Drawn on the meta device. The audio length is the one ``__call__``
        computes from the clip's duration.
        """
        meta = dict(batch_size=1, noise_scale=0.0, dtype=torch.float32, device=torch.device("meta"), generator=None,
                    latents=None)
        height, width, num_frames = int(args["height"]), int(args["width"]), self._num_frames(args)
        video = pipe.prepare_latents(num_channels_latents=pipe.transformer.config.in_channels, height=height,
                                     width=width, num_frames=num_frames, **meta)
        audio_vae = getattr(pipe, "audio_vae", None)
        mel_bins = audio_vae.config.mel_bins if audio_vae is not None else 64
        channels = audio_vae.config.latent_channels if audio_vae is not None else 8
        per_second = pipe.audio_sampling_rate / pipe.audio_hop_length / float(pipe.audio_vae_temporal_compression_ratio)
        length = round(num_frames / float(args.get("frame_rate") or 24.0) * per_second)
        audio = pipe.prepare_audio_latents(num_channels_latents=channels, audio_latent_length=length,
                                           num_mel_bins=mel_bins, **meta)
        grid = ((num_frames - 1) // pipe.vae_temporal_compression_ratio + 1,
                height // pipe.vae_spatial_compression_ratio, width // pipe.vae_spatial_compression_ratio)
        return JointLayout(video=(int(video.shape[1]), int(video.shape[2])),
                           audio=(int(audio.shape[1]), int(audio.shape[2])), video_grid=grid,
                           audio_mel_bins=mel_bins // pipe.audio_vae_mel_compression_ratio)

    def latent_arguments(self, pipe: Any, args: dict[str, Any], latent: torch.Tensor, *,
                         resume: bool) -> dict[str, torch.Tensor]:
        layout = self.layout(pipe, args)
        video = latent[:layout.video_size].reshape(1, *layout.video).double()
        audio = latent[layout.video_size:].reshape(1, *layout.audio).double()
        frames, height, width = layout.video_grid
        config = pipe.transformer.config
        video = pipe._unpack_latents(video, frames, height, width, config.patch_size, config.patch_size_t)
        video = pipe._denormalize_latents(video, pipe.vae.latents_mean, pipe.vae.latents_std,
                                          pipe.vae.config.scaling_factor)
        audio = pipe._denormalize_audio_latents(audio, pipe.audio_vae.latents_mean, pipe.audio_vae.latents_std)
        audio = pipe._unpack_audio_latents(audio, layout.audio[0], num_mel_bins=layout.audio_mel_bins)
        return {"latents": video, "audio_latents": audio}

    def cache_latent(self, pipe: Any, args: dict[str, Any], latents: torch.Tensor,
                     copy_output: torch.Tensor | None) -> torch.Tensor | None:
        if copy_output is None:
            return None
        return torch.cat([latents[0].reshape(-1), copy_output[0].reshape(-1)]).to(torch.float32)

    def family_uncacheable_reason(self, pipe: Any, args: dict[str, Any]) -> str | None:
        if args.get("num_frames") is None and getattr(pipe, "duration_head", None) is not None:
            return "the duration head picks num_frames from the prompt; pass num_frames= to cache the call"
        if args.get("audio_latents") is not None:
            return "caller-supplied audio_latents are served uncached"
        if float(args.get("noise_scale") or 0.0) != 0.0:
            return "noise_scale > 0 noises the latents the pipeline is given; such calls are served uncached"
        if args.get("enable_prompt_enhancement"):
            return "prompt enhancement rewrites the prompt the cache is keyed on; such calls are served uncached"
        return None
