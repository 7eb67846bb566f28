"""Tiny random-weight diffusers video pipelines built in code (no downloads).

Used by the tests and by `flexcache demo` until the toy-world model replaces
them. They have no text encoder and no VAE: callers pass ``prompt_embeds``
(see `tiny_prompt_embeds`) and ``output_type="latent"``.
"""

from __future__ import annotations

import hashlib

import torch

TEXT_DIM = 32
TEXT_TOKENS = 8


def _wan_blocks(num_layers: int = 2) -> dict:
    """The tiny Wan-architecture transformer (Wan, Wan image-to-video, SkyReels-V2), less its input channels."""
    return dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, out_channels=16,
                text_dim=TEXT_DIM, freq_dim=256, ffn_dim=32, num_layers=num_layers, cross_attn_norm=True,
                qk_norm="rms_norm_across_heads", rope_max_seq_len=1024)


# The tiny LTX-Video transformer (text- and image-to-video).
_LTX_TRANSFORMER = dict(in_channels=8, out_channels=8, patch_size=1, patch_size_t=1, num_attention_heads=2,
                        attention_head_dim=8, cross_attention_dim=16, num_layers=2, caption_channels=TEXT_DIM)


def tiny_wan_pipeline(seed: int = 0, num_layers: int = 2, *, boundary_ratio: float | None = None,
                      expand_timesteps: bool = False):
    """A `WanPipeline` with a ~100k-parameter transformer and a flow-matching Euler scheduler.

    Latents are (16, T, H/8, W/8) for T = (frames - 1) / 4 + 1. With
    `boundary_ratio` it is shaped like Wan2.2 A14B: a second expert
    (`transformer_2`, other weights) takes the steps whose timestep is below
    ``boundary_ratio * 1000``. With `expand_timesteps` it is shaped like
    Wan2.2 TI2V-5B: one transformer given a timestep per token.
    """
    from diffusers import (
        FlowMatchEulerDiscreteScheduler,
        WanPipeline,
        WanTransformer3DModel,
    )

    torch.manual_seed(seed)
    transformer = WanTransformer3DModel(in_channels=16, **_wan_blocks(num_layers)).eval()
    scheduler = FlowMatchEulerDiscreteScheduler(shift=7.0)
    second = None
    if boundary_ratio is not None:
        second = WanTransformer3DModel(**transformer.config).eval()  # drawn after the first: other weights
    return WanPipeline(tokenizer=None, text_encoder=None, transformer=transformer, vae=None, scheduler=scheduler,
                       transformer_2=second, boundary_ratio=boundary_ratio, expand_timesteps=expand_timesteps)


def tiny_wan_i2v_pipeline(seed: int = 0, *, expand_timesteps: bool = False):
    """A `WanImageToVideoPipeline` shaped like Wan2.2 I2V (no image encoder), with a tiny Wan VAE.

    The transformer takes 36 channels: the 16-channel noise latent, the
    4-channel frame mask and the image's 16-channel latent condition. With
    `expand_timesteps` it is shaped like Wan2.2 TI2V-5B's image-to-video: the
    image's latent replaces the first frame, and the transformer takes 16.
    """
    from diffusers import (
        AutoencoderKLWan,
        FlowMatchEulerDiscreteScheduler,
        WanImageToVideoPipeline,
        WanTransformer3DModel,
    )

    torch.manual_seed(seed)
    vae = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True]).eval()
    transformer = WanTransformer3DModel(in_channels=16 if expand_timesteps else 36, **_wan_blocks()).eval()
    return WanImageToVideoPipeline(tokenizer=None, text_encoder=None, vae=vae, transformer=transformer,
                                   scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0), image_encoder=None,
                                   image_processor=None, expand_timesteps=expand_timesteps)


def tiny_skyreels_v2_pipeline(seed: int = 0):
    """A `SkyReelsV2Pipeline` (text-to-video) with a tiny transformer and its published scheduler class, UniPC.

    Latents are (16, T, H/8, W/8) as Wan's.
    """
    from diffusers import (
        SkyReelsV2Pipeline,
        SkyReelsV2Transformer3DModel,
        UniPCMultistepScheduler,
    )

    torch.manual_seed(seed)
    transformer = SkyReelsV2Transformer3DModel(in_channels=16, **_wan_blocks()).eval()
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=8.0)
    return SkyReelsV2Pipeline(tokenizer=None, text_encoder=None, transformer=transformer, vae=None,
                              scheduler=scheduler)


def tiny_allegro_pipeline(seed: int = 0):
    """An `AllegroPipeline` with a one-layer transformer and a deterministic Euler scheduler.

    Its ``init_noise_sigma`` is far from 1 (the scheduler's sigma_max), which
    the pipeline multiplies into any ``latents=``. Latents are (4, T, H/8, W/8).
    """
    from diffusers import (
        AllegroPipeline,
        AllegroTransformer3DModel,
        EulerDiscreteScheduler,
    )

    torch.manual_seed(seed)
    transformer = AllegroTransformer3DModel(
        num_attention_heads=2, attention_head_dim=12, in_channels=4, out_channels=4, num_layers=1,
        cross_attention_dim=24, sample_width=8, sample_height=8, sample_frames=8, caption_channels=TEXT_DIM,
    ).eval()
    return AllegroPipeline(tokenizer=None, text_encoder=None, vae=None, transformer=transformer,
                           scheduler=EulerDiscreteScheduler())


def tiny_cogvideox_pipeline(seed: int = 0, num_frames: int = 9, height: int = 16, width: int = 16):
    """A `CogVideoXPipeline` with a one-layer transformer and the CogVideoX DDIM scheduler.

    CogVideoX's learned positional embedding fixes the size: call it with the
    same `num_frames`, `height` and `width`. Latents are (T, 4, H/8, W/8).
    """
    from diffusers import (
        CogVideoXDDIMScheduler,
        CogVideoXPipeline,
        CogVideoXTransformer3DModel,
    )

    torch.manual_seed(seed)
    transformer = CogVideoXTransformer3DModel(
        num_attention_heads=4, attention_head_dim=8, in_channels=4, out_channels=4, time_embed_dim=2,
        text_embed_dim=TEXT_DIM, num_layers=1, sample_width=width // 8, sample_height=height // 8,
        sample_frames=num_frames, patch_size=2, temporal_compression_ratio=4, max_text_seq_length=TEXT_TOKENS,
    ).eval()
    return CogVideoXPipeline(tokenizer=None, text_encoder=None, vae=None, transformer=transformer,
                             scheduler=CogVideoXDDIMScheduler())


def tiny_cogvideox_i2v_pipeline(seed: int = 0, num_frames: int = 9, height: int = 16, width: int = 16):
    """A `CogVideoXImageToVideoPipeline` with a one-layer transformer and a tiny CogVideoX VAE.

    The transformer takes 8 channels: the 4-channel noise latent and the
    image's 4-channel latent. Sizes are fixed as for `tiny_cogvideox_pipeline`.
    """
    from diffusers import (
        AutoencoderKLCogVideoX,
        CogVideoXDDIMScheduler,
        CogVideoXImageToVideoPipeline,
        CogVideoXTransformer3DModel,
    )

    torch.manual_seed(seed)
    vae = AutoencoderKLCogVideoX(
        in_channels=3, out_channels=3, down_block_types=("CogVideoXDownBlock3D",) * 4,
        up_block_types=("CogVideoXUpBlock3D",) * 4, block_out_channels=(8, 8, 8, 8), latent_channels=4,
        layers_per_block=1, norm_num_groups=2, temporal_compression_ratio=4,
    ).eval()
    transformer = CogVideoXTransformer3DModel(
        num_attention_heads=2, attention_head_dim=16, in_channels=8, out_channels=4, time_embed_dim=2,
        text_embed_dim=TEXT_DIM, num_layers=1, sample_width=width // 8, sample_height=height // 8,
        sample_frames=num_frames, patch_size=2, temporal_compression_ratio=4, max_text_seq_length=TEXT_TOKENS,
        use_rotary_positional_embeddings=True, use_learned_positional_embeddings=True,
    ).eval()
    return CogVideoXImageToVideoPipeline(tokenizer=None, text_encoder=None, vae=vae, transformer=transformer,
                                         scheduler=CogVideoXDDIMScheduler())


def tiny_ltx_pipeline(seed: int = 0):
    """An `LTXPipeline` with a two-layer transformer and its flow-matching Euler scheduler.

    Without a VAE the pipeline compresses 32x in space and 8x in time: call it
    with height and width multiples of 32 (>= 64). Latents are packed tokens
    (frames' x rows' x cols', 8). Prompt embeddings are (1, L, `TEXT_DIM`) with
    a (1, L) attention mask.
    """
    from diffusers import (
        FlowMatchEulerDiscreteScheduler,
        LTXPipeline,
        LTXVideoTransformer3DModel,
    )

    torch.manual_seed(seed)
    transformer = LTXVideoTransformer3DModel(**_LTX_TRANSFORMER).eval()
    return LTXPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=None, text_encoder=None, tokenizer=None,
                       transformer=transformer)


def tiny_ltx_i2v_pipeline(seed: int = 0):
    """An `LTXImageToVideoPipeline` with the transformer of `tiny_ltx_pipeline` and a tiny LTX VAE.

    The VAE compresses 4x in space and 4x in time; the pipeline wants heights
    and widths that are multiples of 32 and 4k + 1 frames. Latents are packed
    tokens (frames' x rows' x cols', 8).
    """
    from diffusers import (
        AutoencoderKLLTXVideo,
        FlowMatchEulerDiscreteScheduler,
        LTXImageToVideoPipeline,
        LTXVideoTransformer3DModel,
    )

    torch.manual_seed(seed)
    vae = AutoencoderKLLTXVideo(
        in_channels=3, out_channels=3, latent_channels=8, block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8), layers_per_block=(1, 1, 1, 1, 1),
        decoder_layers_per_block=(1, 1, 1, 1, 1), spatio_temporal_scaling=(True, True, False, False),
        decoder_spatio_temporal_scaling=(True, True, False, False), decoder_inject_noise=(False,) * 5,
        upsample_residual=(False,) * 4, upsample_factor=(1,) * 4, timestep_conditioning=False, patch_size=1,
        patch_size_t=1, encoder_causal=True, decoder_causal=False,
    ).eval()
    transformer = LTXVideoTransformer3DModel(**_LTX_TRANSFORMER).eval()
    return LTXImageToVideoPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=None,
                                   tokenizer=None, transformer=transformer)


def tiny_ltx2_pipeline(seed: int = 0):
    """An `LTX2Pipeline` (video with audio): a two-layer transformer, tiny video and audio VAEs, no vocoder.

    The video VAE compresses 2x in space and 2x in time; latents are packed
    tokens (frames' x rows' x cols', 4), audio latents packed (length, 2 x 2).
    Both VAEs get random latent statistics, as trained checkpoints have: the
    pipeline normalizes the latents it is given with them. Call it with
    `prompt_embeds` (1, L, `TEXT_DIM`) and a (1, L) `prompt_attention_mask`,
    and ``output_type="latent"`` (no vocoder).
    """
    from diffusers import (
        AutoencoderKLLTX2Audio,
        AutoencoderKLLTX2Video,
        FlowMatchEulerDiscreteScheduler,
        LTX2Pipeline,
        LTX2VideoTransformer3DModel,
    )
    from diffusers.pipelines.ltx2 import LTX2TextConnectors

    torch.manual_seed(seed)
    transformer = LTX2VideoTransformer3DModel(
        in_channels=4, out_channels=4, patch_size=1, patch_size_t=1, num_attention_heads=2, attention_head_dim=8,
        cross_attention_dim=16, audio_in_channels=4, audio_out_channels=4, audio_num_attention_heads=2,
        audio_attention_head_dim=4, audio_cross_attention_dim=8, num_layers=2, qk_norm="rms_norm_across_heads",
        caption_channels=TEXT_DIM, rope_double_precision=False, rope_type="split").eval()
    connectors = LTX2TextConnectors(
        caption_channels=TEXT_DIM, text_proj_in_factor=1, video_connector_num_attention_heads=4,
        video_connector_attention_head_dim=8, video_connector_num_layers=1,
        video_connector_num_learnable_registers=None, audio_connector_num_attention_heads=4,
        audio_connector_attention_head_dim=8, audio_connector_num_layers=1,
        audio_connector_num_learnable_registers=None, connector_rope_base_seq_len=32, rope_theta=10000.0,
        rope_double_precision=False, causal_temporal_positioning=False, rope_type="split").eval()
    vae = AutoencoderKLLTX2Video(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8,), decoder_block_out_channels=(8,),
        layers_per_block=(1,), decoder_layers_per_block=(1, 1), spatio_temporal_scaling=(True,),
        decoder_spatio_temporal_scaling=(True,), decoder_inject_noise=(False, False), downsample_type=("spatial",),
        upsample_residual=(False,), upsample_factor=(1,), timestep_conditioning=False, patch_size=1,
        patch_size_t=1, encoder_causal=True, decoder_causal=False).eval()
    audio_vae = AutoencoderKLLTX2Audio(
        base_channels=4, output_channels=2, ch_mult=(1,), num_res_blocks=1, attn_resolutions=None, in_channels=2,
        resolution=32, latent_channels=2, norm_type="pixel", causality_axis="height", dropout=0.0,
        mid_block_add_attention=False, sample_rate=16000, mel_hop_length=160, is_causal=True, mel_bins=8).eval()
    with torch.no_grad():
        for model in (vae, audio_vae):
            model.latents_mean.copy_(torch.randn_like(model.latents_mean) * 0.5)
            model.latents_std.copy_(torch.rand_like(model.latents_std) + 0.5)
    return LTX2Pipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, audio_vae=audio_vae, text_encoder=None,
                        tokenizer=None, connectors=connectors, transformer=transformer, vocoder=None)


def tiny_hunyuan_video_pipeline(seed: int = 0):
    """A `HunyuanVideoPipeline` with a one-layer transformer, embedded guidance and its Euler flow scheduler.

    Without a VAE the pipeline compresses 8x in space and 4x in time. Call it
    with `prompt_embeds` (1, L, `TEXT_DIM`), `pooled_prompt_embeds` (1, 8) and a
    (1, L) `prompt_attention_mask`. Latents are (4, T, H/8, W/8).
    """
    from diffusers import (
        FlowMatchEulerDiscreteScheduler,
        HunyuanVideoPipeline,
        HunyuanVideoTransformer3DModel,
    )

    torch.manual_seed(seed)
    transformer = HunyuanVideoTransformer3DModel(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=10, num_layers=1,
        num_single_layers=1, num_refiner_layers=1, patch_size=1, patch_size_t=1, guidance_embeds=True,
        text_embed_dim=TEXT_DIM, pooled_projection_dim=8, rope_axes_dim=(2, 4, 4),
    ).eval()
    return HunyuanVideoPipeline(transformer=transformer, vae=None, text_encoder=None, tokenizer=None,
                                text_encoder_2=None, tokenizer_2=None, scheduler=FlowMatchEulerDiscreteScheduler())


def tiny_hunyuan_video15_pipeline(seed: int = 0, guidance_scale: float = 1.0):
    """A `HunyuanVideo15Pipeline` (text-to-video) with a one-layer transformer and a tiny VAE config.

    The VAE is there for its config (latent channels, compression): the
    pipeline reads them at construction. Prompt embeddings are (1, L,
    `TEXT_DIM`) plus a second set (1, L2, 16), each with a mask. Latents are
    (4, T, H/16, W/16).
    """
    from diffusers import (
        AutoencoderKLHunyuanVideo15,
        FlowMatchEulerDiscreteScheduler,
        HunyuanVideo15Pipeline,
        HunyuanVideo15Transformer3DModel,
    )
    from diffusers.guiders import ClassifierFreeGuidance

    torch.manual_seed(seed)
    vae = AutoencoderKLHunyuanVideo15(latent_channels=4, block_out_channels=(8, 8, 8, 8, 8), layers_per_block=1).eval()
    transformer = HunyuanVideo15Transformer3DModel(
        in_channels=9, out_channels=4, num_attention_heads=2, attention_head_dim=8, num_layers=1,
        num_refiner_layers=1, text_embed_dim=TEXT_DIM, text_embed_2_dim=16, image_embed_dim=16,
        rope_axes_dim=(2, 2, 4), target_size=32, task_type="t2v",
    ).eval()
    return HunyuanVideo15Pipeline(text_encoder=None, tokenizer=None, transformer=transformer, vae=vae,
                                  scheduler=FlowMatchEulerDiscreteScheduler(shift=5.0), text_encoder_2=None,
                                  tokenizer_2=None, guider=ClassifierFreeGuidance(guidance_scale=guidance_scale))


def tiny_kandinsky5_pipeline(seed: int = 0):
    """A `Kandinsky5T2VPipeline` with one text and one visual block and visual-conditioning channels.

    Prompt embeddings are `prompt_embeds_qwen` (1, L, `TEXT_DIM`),
    `prompt_embeds_clip` (1, 16) and `prompt_cu_seqlens`. Latents are
    (T, H/8, W/8, 4 + 4 + 1): the denoised channels, the visual condition and its mask.
    """
    from diffusers import (
        FlowMatchEulerDiscreteScheduler,
        Kandinsky5T2VPipeline,
        Kandinsky5Transformer3DModel,
    )

    torch.manual_seed(seed)
    transformer = Kandinsky5Transformer3DModel(
        in_visual_dim=4, in_text_dim=TEXT_DIM, in_text_dim2=16, time_dim=16, out_visual_dim=4, patch_size=(1, 2, 2),
        model_dim=16, ff_dim=32, num_text_blocks=1, num_visual_blocks=1, axes_dims=(2, 2, 4), visual_cond=True,
    ).eval()
    return Kandinsky5T2VPipeline(transformer=transformer, vae=None, text_encoder=None, tokenizer=None,
                                 text_encoder_2=None, tokenizer_2=None,
                                 scheduler=FlowMatchEulerDiscreteScheduler(shift=5.0))


def tiny_mochi_pipeline(seed: int = 0):
    """A `MochiPipeline` with a two-layer transformer and the Euler flow scheduler.

    Mochi compresses 8x in space and 6x in time. Call it with `prompt_embeds`
    (1, L, `TEXT_DIM`) and a (1, L) `prompt_attention_mask`. Latents are
    (12, (frames - 1) / 6 + 1, H/8, W/8).
    """
    from diffusers import (
        FlowMatchEulerDiscreteScheduler,
        MochiPipeline,
        MochiTransformer3DModel,
    )

    torch.manual_seed(seed)
    transformer = MochiTransformer3DModel(
        patch_size=2, num_attention_heads=2, attention_head_dim=8, num_layers=2, pooled_projection_dim=16,
        in_channels=12, out_channels=None, qk_norm="rms_norm", text_embed_dim=TEXT_DIM, time_embed_dim=4,
        activation_fn="swiglu", max_sequence_length=16,
    ).eval()
    return MochiPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=None, text_encoder=None, tokenizer=None,
                         transformer=transformer)


def tiny_prompt_embeds(prompt: str) -> torch.Tensor:
    """Deterministic stand-in text embeddings for `prompt`, shape (1, TEXT_TOKENS, TEXT_DIM)."""
    seed = int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:8], "little") & (2**63 - 1)
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(1, TEXT_TOKENS, TEXT_DIM, generator=generator)
