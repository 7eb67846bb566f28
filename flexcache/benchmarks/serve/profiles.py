"""Model profiles for the serving benchmark: what one request costs on a GPU, from public figures.

Sources are the rows of `shared/SERVING-FACTS.md` (collected 2026-11; each
names its public origin). Public tables give the *total* time of one
generation, so `seconds_per_step` is total / steps: an upper bound that also
carries the text encoder and the VAE decode, which are therefore 0 here
(`overheads_in_step_time`). Passes per step (classifier-free guidance) are
already inside the measured time; `cfg_passes` is recorded for readers.
"""

from __future__ import annotations

from dataclasses import dataclass

from flexcache.errors import ConfigError


@dataclass(frozen=True)
class ModelProfile:
    name: str
    model_id: str
    gpu: str
    resolution: str  # width x height x frames
    steps: int
    seconds_per_step: float
    cfg_passes: int
    latent_shape: tuple[int, ...]  # as the pipeline holds one latent (no batch)
    latent_dtype: str
    source: str
    text_encoder_s: float = 0.0
    vae_decode_s: float = 0.0
    overheads_in_step_time: bool = True

    @property
    def seconds_full(self) -> float:
        """One uncached generation."""
        return self.text_encoder_s + self.steps * self.seconds_per_step + self.vae_decode_s

    @property
    def latent_bytes(self) -> int:
        size = {"float32": 4, "bfloat16": 2, "float16": 2}[self.latent_dtype]
        count = 1
        for dim in self.latent_shape:
            count *= dim
        return count * size


PROFILES: dict[str, ModelProfile] = {p.name: p for p in (
    ModelProfile("wan2.1-1.3b-480p", "Wan-AI/Wan2.1-T2V-1.3B-Diffusers", "H100", "832x480x81", 50, 95 / 50, 2,
                 (16, 21, 60, 104), "float32",
                 "ML.ENERGY leaderboard v3 (secondary): 95 s on H100; diffusers' WanPipeline keeps latents in float32"),
    ModelProfile("wan2.1-14b-720p", "Wan-AI/Wan2.1-T2V-14B-Diffusers", "H100", "1280x720x81", 50, 1837.9 / 50, 2,
                 (16, 21, 90, 160), "float32",
                 "Wan2.1 repository README, efficiency table: 1837.9 s on one H100/H800 (with offload)"),
    ModelProfile("hunyuanvideo-720p", "hunyuanvideo-community/HunyuanVideo", "H100", "1280x720x129", 50,
                 1904.1 / 50, 1, (16, 33, 90, 160), "bfloat16",
                 "xDiT documentation, HunyuanVideo performance page: 1904.1 s on one H100 (guidance embedded)"),
    ModelProfile("cogvideox-5b", "THUDM/CogVideoX-5b", "H100", "720x480x49", 50, 90 / 50, 2,
                 (13, 16, 60, 90), "bfloat16", "CogVideo README: about 90 s on H100 (CFG batched)"),
    ModelProfile("ltx-video", "Lightricks/LTX-Video", "H100", "704x512x121", 40, 9.7 / 40, 2,
                 (128, 16, 16, 22), "bfloat16", "arXiv 2509.19222 Table 4 (secondary): 9.7 s on H100, LTX-Video 0.9.7"),
)}


def get_profile(name: str) -> ModelProfile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ConfigError(f"unknown model profile {name!r}; choose one of {', '.join(PROFILES)}") from None
