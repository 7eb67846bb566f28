"""The toy-world text-to-video model: a tiny `WanTransformer3DModel` in a real `WanPipeline`.

It denoises pixels directly (the "latent" is the 3 x 8 x 16 x 16 clip in
[-1, 1]; the pipeline's VAE scale factors are set to 1), conditioned on the
packaged MiniLM model's token embeddings. Trained with flow matching, so the
stock `FlowMatchEulerDiscreteScheduler` samples it and FlexCache's Wan
adapter caches it like any Wan model.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from flexcache.toyworld.world import DEFAULT_FRAMES, DEFAULT_SIZE

TEXT_TOKENS = 24
TEXT_DIM = 384
WEIGHTS = Path(__file__).with_name("weights") / "toyworld-wan.safetensors"
MODEL_ID = "flexcache/toyworld-wan-v1"

TRANSFORMER_CONFIG = dict(
    patch_size=(1, 2, 2), num_attention_heads=4, attention_head_dim=16, in_channels=3, out_channels=3,
    text_dim=TEXT_DIM, freq_dim=64, ffn_dim=256, num_layers=4, cross_attn_norm=True,
    qk_norm="rms_norm_across_heads", rope_max_seq_len=64,
)


def build_transformer():
    from diffusers import WanTransformer3DModel

    return WanTransformer3DModel(**TRANSFORMER_CONFIG)


class PromptEncoder:
    """MiniLM token embeddings, padded or cut to `TEXT_TOKENS` (zeros past the prompt)."""

    def __init__(self) -> None:
        from flexcache.config import EmbedderConfig
        from flexcache.engine.embedder import SentenceTransformerEmbedder

        self._embedder = SentenceTransformerEmbedder(EmbedderConfig(device="cpu"))

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


def toyworld_pipeline(weights: Path | str | None = WEIGHTS):
    """A `WanPipeline` over the toy-world transformer (trained weights when `weights` exists)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, WanPipeline

    transformer = build_transformer()
    if weights is not None:
        from safetensors.torch import load_file

        transformer.load_state_dict(load_file(str(weights)))
    transformer.eval()
    pipe = WanPipeline(tokenizer=None, text_encoder=None, transformer=transformer, vae=None,
                       scheduler=FlowMatchEulerDiscreteScheduler(shift=1.0))
    # Pixels are the latents: no spatial or temporal compression.
    pipe.vae_scale_factor_spatial = 1
    pipe.vae_scale_factor_temporal = 1
    # With a temporal factor of 1 the pipeline "rounds" every frame count up by
    # one and warns each call; callers pass frames - 1 (see `generate`).
    logging.getLogger("diffusers.pipelines.wan.pipeline_wan").setLevel(logging.ERROR)
    return pipe


def generate(pipe, prompt_embeds: torch.Tensor, *, steps: int = 20, seed: int = 0,
             frames: int = DEFAULT_FRAMES, size: int = DEFAULT_SIZE) -> torch.Tensor:
    """Clips (B, 3, frames, size, size) in [-1, 1] for a batch of prompt embeddings."""
    generator = torch.Generator().manual_seed(seed)
    with torch.inference_mode():
        out = pipe(prompt_embeds=prompt_embeds, num_frames=frames - 1, height=size, width=size,
                   num_inference_steps=steps, guidance_scale=1.0, output_type="latent",
                   generator=generator).frames
    return out.clamp(-1, 1)
