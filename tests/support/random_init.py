"""Random-weight Stable Audio components of a chosen size, built offline.

Two uses, neither needs a download: the equivalence tests build tiny pipelines, save
them as local folders and load them through our backends; the GPU speed benchmark
builds real-size networks (same layer shapes as the released checkpoints) because
speed does not depend on the weights' values.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class StableAudioSize:
    """Layer sizes of a Stable Audio Open DiT + Oobleck VAE (+ a T5 text encoder)."""

    dit_layers: int = 2
    dit_heads: int = 2
    dit_kv_heads: int = 1
    dit_head_dim: int = 8
    latent_channels: int = 4
    cross_attention_dim: int = 16
    text_dim: int = 16
    vae_hidden: int = 8
    vae_channel_multiples: tuple[int, ...] = (1, 1, 1, 1, 1)
    vae_decoder_channels: int = 8
    t5_layers: int = 1
    t5_ff: int = 32
    t5_heads: int = 2
    sample_size: int = 32
    max_tokens: int = 8


TINY = StableAudioSize()
# The released Stable Audio Open 1.0 shapes (1.06 B-parameter DiT, 64-channel Oobleck VAE, T5-base).
FULL = StableAudioSize(dit_layers=24, dit_heads=24, dit_kv_heads=12, dit_head_dim=64, latent_channels=64,
                       cross_attention_dim=768, text_dim=768, vae_hidden=128, vae_channel_multiples=(1, 2, 4, 8, 16),
                       vae_decoder_channels=128, t5_layers=12, t5_ff=3072, t5_heads=12, sample_size=1024,
                       max_tokens=128)


def build_stable_audio_components(size: StableAudioSize = TINY, *, seed: int = 0,
                                  text_encoder: bool = True) -> dict[str, Any]:
    """transformer, vae, projection_model, scheduler (and text_encoder, tokenizer) with random weights."""
    import torch
    from diffusers import AutoencoderOobleck, CosineDPMSolverMultistepScheduler, StableAudioDiTModel
    from diffusers.pipelines.stable_audio.modeling_stable_audio import StableAudioProjectionModel

    torch.manual_seed(seed)
    s = size
    comps: dict[str, Any] = {}
    comps["transformer"] = StableAudioDiTModel(
        sample_size=s.sample_size, in_channels=s.latent_channels, num_layers=s.dit_layers,
        attention_head_dim=s.dit_head_dim, num_attention_heads=s.dit_heads,
        num_key_value_attention_heads=s.dit_kv_heads, out_channels=s.latent_channels,
        cross_attention_dim=s.cross_attention_dim, time_proj_dim=256,
        global_states_input_dim=2 * s.cross_attention_dim, cross_attention_input_dim=s.cross_attention_dim)
    comps["vae"] = AutoencoderOobleck(
        encoder_hidden_size=s.vae_hidden, downsampling_ratios=[2, 4, 4, 8, 8],
        channel_multiples=list(s.vae_channel_multiples), decoder_channels=s.vae_decoder_channels,
        decoder_input_channels=s.latent_channels, audio_channels=2, sampling_rate=44100)
    if s.vae_hidden != 2 * s.latent_channels:
        # diffusers' Oobleck encoder emits mean and scale: its width is twice the latent channels
        comps["vae"] = AutoencoderOobleck(
            encoder_hidden_size=2 * s.latent_channels, downsampling_ratios=[2, 4, 4, 8, 8],
            channel_multiples=list(s.vae_channel_multiples), decoder_channels=s.vae_decoder_channels,
            decoder_input_channels=s.latent_channels, audio_channels=2, sampling_rate=44100)
    comps["projection_model"] = StableAudioProjectionModel(
        text_encoder_dim=s.text_dim, conditioning_dim=s.cross_attention_dim, min_value=0, max_value=512)
    comps["scheduler"] = CosineDPMSolverMultistepScheduler(
        sigma_min=0.3, sigma_max=500, solver_order=2, prediction_type="v_prediction", sigma_data=1.0,
        sigma_schedule="exponential")
    if text_encoder:
        from transformers import T5Config, T5EncoderModel
        comps["text_encoder"] = T5EncoderModel(T5Config(
            vocab_size=64, d_model=s.text_dim, d_kv=max(4, s.text_dim // s.t5_heads), d_ff=s.t5_ff,
            num_layers=s.t5_layers, num_heads=s.t5_heads, decoder_start_token_id=0, pad_token_id=0,
            eos_token_id=1))
        comps["tokenizer"] = word_tokenizer(s.max_tokens)
    for m in comps.values():
        if isinstance(m, torch.nn.Module):
            m.eval()
    return comps


def word_tokenizer(max_tokens: int):
    """A T5-style (pad 0, eos 1, unk 2) word-level fast tokenizer built offline."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = ["<pad>", "</s>", "<unk>"] + "ambient drums piano bass techno calm bright dark synth guitar".split()
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                   model_max_length=max_tokens)


def save_stable_audio_folder(path: str, size: StableAudioSize = TINY, *, seed: int = 0,
                             text_encoder: bool = True) -> dict[str, Any]:
    """Write a diffusers-layout folder (as `StableAudioPipeline.save_pretrained`); returns the components."""
    from diffusers import StableAudioPipeline

    comps = build_stable_audio_components(size, seed=seed, text_encoder=text_encoder)
    if text_encoder:
        StableAudioPipeline(**comps).save_pretrained(path, safe_serialization=True)
    else:
        os.makedirs(path, exist_ok=True)
        for name, module in comps.items():
            module.save_pretrained(os.path.join(path, name))
        with open(os.path.join(path, "model_index.json"), "w") as f:
            json.dump({"_class_name": "StableAudioPipeline"}, f)
    return comps


@dataclass(frozen=True)
class StableAudio3Size:
    """Layer sizes of a Stable Audio 3 DiT + SAME autoencoder (no text encoder: prompts are optional)."""

    embed_dim: int = 32
    depth: int = 2
    heads: int = 2
    latent_dim: int = 8
    cond_token_dim: int = 16
    global_cond_dim: int = 16
    memory_tokens: int = 4
    vae_patch: int = 256
    vae_channels: int = 8
    vae_stride: int = 4
    vae_depth: int = 1
    vae_head_dim: int = 8


SA3_TINY = StableAudio3Size()

def build_stable_audio3_components(size: StableAudio3Size = SA3_TINY, *, seed: int = 0,
                                   text_encoder: bool = False, max_tokens: int = 6) -> dict[str, Any]:
    """transformer, vae, duration_embedder, scheduler with random weights (zero-initialised
    projections are re-drawn so the tiny networks' outputs actually depend on their inputs)."""
    import torch
    from diffusers import (AutoencoderSAME, FlowMatchEulerDiscreteScheduler, StableAudio3DiTModel,
                           StableAudio3DurationEmbedder)

    torch.manual_seed(seed)
    s = size
    dit = StableAudio3DiTModel(io_channels=s.latent_dim, embed_dim=s.embed_dim, depth=s.depth, num_heads=s.heads,
                               cond_token_dim=s.cond_token_dim, global_cond_dim=s.global_cond_dim,
                               local_add_cond_dim=1 + s.latent_dim,
                               timestep_features_dim=16, num_memory_tokens=s.memory_tokens)
    vae = AutoencoderSAME(patch_size=s.vae_patch, encoder_channels=s.vae_channels, encoder_c_mults=[2],
                          encoder_strides=[s.vae_stride], encoder_transformer_depths=[s.vae_depth],
                          latent_dim=s.latent_dim, dim_heads=s.vae_head_dim, ff_mult=2)
    with torch.no_grad():
        for module in (dit, vae):
            for p in module.parameters():
                if p.abs().max() == 0 and p.ndim >= 1:
                    p.normal_(0.0, 0.02)
    comps = {"transformer": dit.eval(), "vae": vae.eval(),
             "duration_embedder": StableAudio3DurationEmbedder(output_dim=s.global_cond_dim, fourier_dim=16).eval(),
             "scheduler": FlowMatchEulerDiscreteScheduler(num_train_timesteps=1, shift=1.0)}
    if text_encoder:
        from transformers import T5GemmaConfig, T5GemmaEncoderModel
        from transformers.models.t5gemma.configuration_t5gemma import T5GemmaModuleConfig

        enc = T5GemmaModuleConfig(vocab_size=64, hidden_size=s.cond_token_dim, intermediate_size=2 * s.cond_token_dim,
                                  num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                                  head_dim=s.cond_token_dim // 2).to_dict()
        comps["text_encoder"] = T5GemmaEncoderModel(T5GemmaConfig(encoder=enc, decoder=enc, vocab_size=64,
                                                                  is_encoder_decoder=False)).eval()
        comps["tokenizer"] = word_tokenizer(max_tokens)
    return comps


def save_stable_audio3_folder(path: str, size: StableAudio3Size = SA3_TINY, *, seed: int = 0,
                              inpaint: bool = False, text_encoder: bool = False) -> dict[str, Any]:
    """Write a diffusers pipeline folder (as `save_pretrained` does), with a tiny T5Gemma text encoder
    and word tokenizer when `text_encoder`; returns the parts.

    `inpaint` saves it as a `StableAudio3InpaintPipeline` (the trained-inpainting checkpoint's layout).
    """
    from diffusers import StableAudio3InpaintPipeline, StableAudio3Pipeline

    comps = build_stable_audio3_components(size, seed=seed, text_encoder=text_encoder)
    cls = StableAudio3InpaintPipeline if inpaint else StableAudio3Pipeline
    parts = dict(comps) if text_encoder else dict(comps, text_encoder=None, tokenizer=None)
    cls(**parts).save_pretrained(path, safe_serialization=True)
    return comps
