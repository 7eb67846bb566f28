"""The toy-world text-to-video model: a tiny `WanTransformer3DModel` in a real `WanPipeline`.

It denoises pixels directly (the "latent" is the 3 x 8 x 16 x 16 clip in
[-1, 1]; the pipeline's VAE scale factors are set to 1), conditioned on the
packaged MiniLM model's token embeddings. Trained with flow matching, so the
stock `FlowMatchEulerDiscreteScheduler` samples it and FlexCache's Wan
adapter caches it like any Wan model. Trained with dropped captions (all-zero
embeddings), so classifier-free guidance works with zeros as the negative
prompt embeddings (`null_prompt_embeds`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from flexcache.toyworld.world import DEFAULT_FRAMES, DEFAULT_SIZE

TEXT_TOKENS = 24
TEXT_DIM = 384
WEIGHTS = Path(__file__).with_name("weights") / "toyworld-wan.safetensors"
MODEL_ID = "flexcache/toyworld-wan-v2"
DEFAULT_STEPS = 20
DEFAULT_GUIDANCE = 3.0

# Patches of 2 frames x 2 x 2 pixels: 256 tokens a clip, so a model 4x wider
# than one with 1-frame patches trains at the same speed on CPU.
TRANSFORMER_CONFIG: dict[str, Any] = dict(
    patch_size=(2, 2, 2), num_attention_heads=4, attention_head_dim=32, in_channels=3, out_channels=3,
    text_dim=TEXT_DIM, freq_dim=64, ffn_dim=512, num_layers=4, cross_attn_norm=True,
    qk_norm="rms_norm_across_heads", rope_max_seq_len=64,
)


def build_transformer(config: dict[str, Any] | None = None):
    from diffusers import WanTransformer3DModel

    config = dict(TRANSFORMER_CONFIG if config is None else config)
    config["patch_size"] = tuple(config["patch_size"])
    return WanTransformer3DModel(**config)


def weights_config(weights: Path | str) -> dict[str, Any]:
    """The transformer config stored in a weights file's metadata (older files: the v1 config)."""
    from safetensors import safe_open

    with safe_open(str(weights), framework="pt") as handle:
        metadata = handle.metadata() or {}
    if "transformer_config" in metadata:
        return json.loads(metadata["transformer_config"])
    return {**TRANSFORMER_CONFIG, "patch_size": (1, 2, 2), "attention_head_dim": 16, "ffn_dim": 256}


def null_prompt_embeds(batch: int = 1) -> torch.Tensor:
    """The embedding of the dropped caption the model was trained with: all zeros."""
    return torch.zeros(batch, TEXT_TOKENS, TEXT_DIM)


class PromptEncoder:
    """MiniLM token embeddings, padded or cut to `TEXT_TOKENS` (zeros past the prompt)."""

    def __init__(self) -> None:
        from flexcache.core import EmbedderConfig
        from flexcache.engine import SentenceTransformerEmbedder

        # The model was trained on MiniLM token embeddings, whatever embedder the cache looks prompts up with.
        self._embedder = SentenceTransformerEmbedder(EmbedderConfig(model="all-MiniLM-L6-v2", device="cpu"))

    def __call__(self, prompts: list[str]) -> torch.Tensor:
        model = self._embedder._load()
        with torch.inference_mode():
            tokens = model.encode(prompts, output_value="token_embeddings", convert_to_tensor=False,
                                  show_progress_bar=False)
        out = torch.zeros(len(prompts), TEXT_TOKENS, TEXT_DIM)
        for i, t in enumerate(tokens):
            n = min(TEXT_TOKENS, t.shape[0])
            out[i, :n] = t[:n].float()
        return out


def prompt_tokenizer():
    """The packaged MiniLM model's tokenizer: its tokens are the rows of `PromptEncoder`'s embeddings."""
    import os

    from transformers import AutoTokenizer

    from flexcache.engine import SentenceTransformerEmbedder

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return AutoTokenizer.from_pretrained(SentenceTransformerEmbedder.packaged_model_path())


def toyworld_pipeline(weights: Path | str | None = WEIGHTS):
    """A `WanPipeline` over the toy-world transformer (trained weights when `weights` is given).

    With `weights=None` the transformer has random weights and the current config.
    """
    from diffusers import FlowMatchEulerDiscreteScheduler, WanPipeline

    if weights is not None:
        from safetensors.torch import load_file

        transformer = build_transformer(weights_config(weights))
        transformer.load_state_dict(load_file(str(weights)))
    else:
        transformer = build_transformer()
    transformer.eval()
    # The tokenizer is never run by the pipeline (it gets `prompt_embeds`); it is
    # there so FlexCache can find the object's tokens in them (object masks).
    pipe = WanPipeline(tokenizer=prompt_tokenizer(), text_encoder=None, transformer=transformer, vae=None,
                       scheduler=FlowMatchEulerDiscreteScheduler(shift=1.0))
    # Pixels are the latents: no spatial or temporal compression.
    pipe.vae_scale_factor_spatial = 1
    pipe.vae_scale_factor_temporal = 1
    # With a temporal factor of 1 the pipeline "rounds" every frame count up by
    # one and warns each call; callers pass frames - 1 (see `generate`).
    logging.getLogger("diffusers.pipelines.wan.pipeline_wan").setLevel(logging.ERROR)
    return pipe


def pipeline_kwargs(prompt_embeds: torch.Tensor, *, steps: int = DEFAULT_STEPS,
                    guidance: float = DEFAULT_GUIDANCE, frames: int = DEFAULT_FRAMES,
                    size: int = DEFAULT_SIZE) -> dict[str, Any]:
    """The `WanPipeline` arguments for toy-world clips (output: the clip itself, in `.frames`)."""
    kwargs: dict[str, Any] = dict(prompt_embeds=prompt_embeds, num_frames=frames - 1, height=size, width=size,
                                  num_inference_steps=steps, guidance_scale=guidance, output_type="latent")
    if guidance > 1.0:
        kwargs["negative_prompt_embeds"] = null_prompt_embeds(prompt_embeds.shape[0])
    return kwargs


def generate(pipe, prompt_embeds: torch.Tensor, *, steps: int = DEFAULT_STEPS, seed: int = 0,
             guidance: float = DEFAULT_GUIDANCE, frames: int = DEFAULT_FRAMES,
             size: int = DEFAULT_SIZE) -> torch.Tensor:
    """Clips (B, 3, frames, size, size) in [-1, 1] for a batch of prompt embeddings."""
    generator = torch.Generator().manual_seed(seed)
    with torch.inference_mode():
        out = pipe(generator=generator, **pipeline_kwargs(prompt_embeds, steps=steps, guidance=guidance,
                                                         frames=frames, size=size)).frames
    return out.clamp(-1, 1)


def initial_noise(seeds: list[int], frames: int = DEFAULT_FRAMES, size: int = DEFAULT_SIZE) -> torch.Tensor:
    """x_0 for each seed, drawn as FlexCache draws it on a miss (`engine.noise.seeded_noise`)."""
    from flexcache.kernels import seeded_noise

    return torch.stack([seeded_noise((3, frames, size, size), seed) for seed in seeds])


def sample(pipe, prompt_embeds: torch.Tensor, latents: torch.Tensor, *, skip: int = 0,
           steps: int = DEFAULT_STEPS, guidance: float = DEFAULT_GUIDANCE,
           capture: bool = False) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Denoise `latents` (x_skip, shaped (B, 3, F, S, S)) through steps skip..steps-1.

    Returns the clips (not clamped) and, with `capture`, the trajectory
    [x_skip, x_skip+1, ..., x_steps]. Resuming is what FlexCache does on a hit:
    the scheduler is sliced to start at step `skip` (`sliced_scheduler`). Not
    thread-safe: the pipeline's scheduler is swapped for the call.
    """
    from flexcache.integrations.diffusers import sliced_scheduler

    if not 0 <= skip < steps:
        raise ValueError(f"skip must be in [0, {steps}), got {skip}")
    trajectory = [latents.clone()] if capture else []

    def on_step_end(_pipe, _index, _timestep, callback_kwargs):
        trajectory.append(callback_kwargs["latents"].clone())
        return callback_kwargs

    original = pipe.scheduler
    if skip:
        pipe.scheduler = sliced_scheduler(original, skip)
    try:
        kwargs = pipeline_kwargs(prompt_embeds, steps=steps, guidance=guidance, frames=latents.shape[2],
                                 size=latents.shape[-1])
        with torch.inference_mode():
            clips = pipe(latents=latents, callback_on_step_end=on_step_end if capture else None,
                         **kwargs).frames
    finally:
        pipe.scheduler = original
    return clips, trajectory
