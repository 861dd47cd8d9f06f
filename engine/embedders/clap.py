"""LAION-CLAP (HTSAT audio tower) as a style embedder, through transformers' `ClapAudioModelWithProjection`.

Weights come from a local path the user provides: a folder in Hugging Face layout (e.g. a
copy of `laion/clap-htsat-unfused`: `config.json` + `model.safetensors`, the full
`ClapModel` or just the audio tower), or an original LAION-CLAP checkpoint file
(`630k-audioset-best.pt` style), whose audio branch is renamed to transformers' modules
(the renaming of transformers' conversion script; the architecture is read from the
tensor shapes). Nothing is downloaded. The LAION-file path is tested on a synthetic
checkpoint only: no real LAION file was available here.

transformers' `ClapFeatureExtractor` is numpy, so it cannot pass a gradient; the log-mel
frontend is re-done here in torch with the same numbers (48 kHz, 1024-point Hann STFT,
hop 480, 64 mel bands 0-14 kHz, power in dB, repeat-padding to 10 s) and checked against
it in tests/test_clap_passt.py. Audio arrives at 44.1 kHz, is averaged to mid and resampled
to 48 kHz with the differentiable `Resample`. Clips longer than 10 s are cut into 10 s
chunks whose embeddings are averaged (the upstream extractor would crop at random).
The embedding is L2-normalised: CLAP's space is compared by cosine.
"""
from __future__ import annotations

import json
import math
import os
import re
from typing import Optional

import numpy as np
import torch

from ..errors import ModelNotFound
from .base import Resample, check_audio

CLAP_RATE = 48000
HOW_TO = "point at a local copy of a Hugging Face CLAP model folder (e.g. laion/clap-htsat-unfused)"


class ClapFrontend(torch.nn.Module):
    """Mono 48 kHz waveform (B, N) -> CLAP input features (B, 1, frames, 64), differentiable."""

    def __init__(self, *, n_fft: int = 1024, hop: int = 480, n_mels: int = 64, f_min: float = 0.0,
                 f_max: float = 14000.0, max_samples: int = 10 * CLAP_RATE, mel_scale: str = "slaney") -> None:
        super().__init__()
        from transformers.audio_utils import mel_filter_bank

        fb = mel_filter_bank(num_frequency_bins=n_fft // 2 + 1, num_mel_filters=n_mels, min_frequency=f_min,
                             max_frequency=f_max, sampling_rate=CLAP_RATE,
                             norm="slaney" if mel_scale == "slaney" else None, mel_scale=mel_scale)
        self.register_buffer("mel_fb", torch.from_numpy(np.asarray(fb, dtype=np.float32)), persistent=False)
        self.register_buffer("window", torch.hann_window(n_fft, periodic=True), persistent=False)
        self.n_fft, self.hop, self.max_samples = n_fft, hop, max_samples

    def pad(self, mono: torch.Tensor) -> torch.Tensor:
        """Repeat-pad (whole repeats, then zeros) to exactly `max_samples`, as ClapFeatureExtractor does."""
        n = mono.shape[-1]
        if n < self.max_samples:
            mono = mono.repeat(1, self.max_samples // n)
            mono = torch.nn.functional.pad(mono, (0, self.max_samples - mono.shape[-1]))
        return mono

    def forward(self, mono: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(self.pad(mono), self.n_fft, self.hop, window=self.window.to(mono.dtype), center=True,
                          pad_mode="reflect", return_complex=True)
        power = spec.real ** 2 + spec.imag ** 2                           # (B, F, T)
        mel = torch.einsum("fm,bft->btm", self.mel_fb.to(mono.dtype), power).clamp(min=1e-10)
        return (10.0 * torch.log10(mel))[:, None]                          # (B, 1, T, 64)


class ClapEmbedder(torch.nn.Module):
    """E(audio at `sample_rate`) -> unit-norm CLAP audio embedding (B, projection_dim)."""

    def __init__(self, audio_model: torch.nn.Module, *, sample_rate: int = 44100, mel_scale: str = "slaney") -> None:
        super().__init__()
        self.model = audio_model.eval().requires_grad_(False)
        self.sample_rate = sample_rate
        self.dim = int(audio_model.config.projection_dim)
        self.resample = Resample(sample_rate, CLAP_RATE)
        self.frontend = ClapFrontend(n_mels=int(audio_model.config.num_mel_bins), mel_scale=mel_scale)
        self.min_samples = int(0.1 * sample_rate)
        # fused models take four mel views; for clips up to 10 s the extractor stacks four copies
        self.views = 4 if getattr(audio_model.config, "enable_fusion", False) else 1

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        mono = self.resample(check_audio(audio, min_samples=self.min_samples))
        chunk = self.frontend.max_samples
        pieces = [mono[:, i:i + chunk] for i in range(0, mono.shape[-1], chunk)]
        if len(pieces) > 1 and pieces[-1].shape[-1] < 0.25 * chunk:
            pieces = pieces[:-1]  # a short tail would be mostly repeats of itself
        embeds = []
        for piece in pieces:
            feats = self.frontend(piece).expand(-1, self.views, -1, -1)
            out = self.model(input_features=feats, is_longer=torch.zeros(feats.shape[0], 1, dtype=torch.bool,
                                                                           device=feats.device))
            embeds.append(out.audio_embeds)
        e = torch.stack(embeds).mean(dim=0)
        return torch.nn.functional.normalize(e, dim=-1)


def load_clap(path: str, *, sample_rate: int = 44100) -> ClapEmbedder:
    """Build the embedder from a local HF CLAP folder or LAION-CLAP file; anything unusable is ModelNotFound."""
    path = os.path.expanduser(path)
    if os.path.isfile(path):
        return ClapEmbedder(load_laion_checkpoint(path), sample_rate=sample_rate)
    if not os.path.isdir(path) or not os.path.isfile(os.path.join(path, "config.json")):
        raise ModelNotFound(f"CLAP weights not found: {path!r} has no config.json; {HOW_TO}")
    try:
        from transformers import ClapAudioModelWithProjection
    except ImportError as exc:
        raise ModelNotFound("the CLAP embedder needs transformers: pip install transformers") from exc
    try:
        model = ClapAudioModelWithProjection.from_pretrained(path)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelNotFound(f"cannot load CLAP weights from {path!r}: {exc}") from exc
    return ClapEmbedder(model, sample_rate=sample_rate, mel_scale=_mel_scale(path))


def _mel_scale(path: str) -> str:
    """Unfused models ("rand_trunc") use the Slaney filters; fused ones ("fusion") the HTK ones."""
    cfg: Optional[dict] = None
    try:
        with open(os.path.join(path, "preprocessor_config.json")) as f:
            cfg = json.load(f)
    except (OSError, ValueError):
        return "slaney"
    return "htk" if cfg.get("truncation") == "fusion" else "slaney"


# --- original LAION-CLAP checkpoints --------------------------------------------------------
_LAION_RENAMES = (("audio_branch", "audio_model.audio_encoder"), ("attn", "attention.self"),
                  ("self.proj", "output.dense"), ("attention.self_mask", "attn_mask"),
                  ("mlp.fc1", "intermediate.dense"), ("mlp.fc2", "output.dense"), ("norm1", "layernorm_before"),
                  ("norm2", "layernorm_after"), ("bn0", "batch_norm"))
# parts of the LAION audio branch that transformers' audio tower does not have (its own STFT/mel
# layers, which our torch frontend replaces, and the unused AudioSet classification head)
_LAION_UNUSED = ("spectrogram_extractor.", "logmel_extractor.", "tscam_conv.", "head.")


def convert_laion_audio(sd: dict) -> dict:
    """LAION-CLAP state dict -> `ClapAudioModelWithProjection` keys (audio branch and projection only)."""
    if isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    out = {}
    for key, value in sd.items():
        key = key[len("module."):] if key.startswith("module.") else key
        if not (key.startswith("audio_branch.") or key.startswith("audio_projection.")):
            continue
        if any(key.startswith("audio_branch." + u) for u in _LAION_UNUSED):
            continue
        for old, new in _LAION_RENAMES:
            key = key.replace(old, new)
        m = re.match(r"audio_projection\.(\d+)\.(.*)", key)
        if m:
            key = f"audio_projection.linear{1 if m.group(1) == '0' else 2}.{m.group(2)}"
        if ".qkv." in key:
            for name, part in zip(("query", "key", "value"), torch.chunk(value, 3, dim=0)):
                out[key.replace("qkv", name)] = part
        else:
            out[key] = value
    return out


def config_from_audio_state(sd: dict):
    """The `ClapAudioConfig` whose shapes fit these tensors (depths, heads, widths, window, fusion)."""
    from transformers import ClapAudioConfig

    enc = "audio_model.audio_encoder."
    depths, heads = [], []
    i = 0
    while any(k.startswith(f"{enc}layers.{i}.") for k in sd):
        blocks = {m.group(1) for k in sd if (m := re.match(rf"{re.escape(enc)}layers\.{i}\.blocks\.(\d+)\.", k))}
        depths.append(len(blocks))
        heads.append(int(sd[f"{enc}layers.{i}.blocks.0.attention.self.relative_position_bias_table"].shape[1]))
        i += 1
    table = sd[f"{enc}layers.0.blocks.0.attention.self.relative_position_bias_table"].shape[0]
    return ClapAudioConfig(
        depths=depths, num_attention_heads=heads, window_size=(int(round(math.sqrt(table))) + 1) // 2,
        patch_embeds_hidden_size=int(sd[f"{enc}patch_embed.proj.weight"].shape[0]),
        hidden_size=int(sd[f"{enc}norm.weight"].shape[0]), num_mel_bins=int(sd[f"{enc}batch_norm.weight"].shape[0]),
        projection_hidden_size=int(sd["audio_projection.linear1.weight"].shape[0]),
        projection_dim=int(sd["audio_projection.linear2.weight"].shape[0]),
        enable_fusion=any("fusion" in k for k in sd))


def load_laion_checkpoint(path: str) -> torch.nn.Module:
    try:
        from transformers import ClapAudioModelWithProjection
    except ImportError as exc:
        raise ModelNotFound("the CLAP embedder needs transformers: pip install transformers") from exc
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            raw = load_file(path)
        else:
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt, foreign, or a pickle with code in it
        raise ModelNotFound(f"cannot read CLAP checkpoint {path!r} (tensors only are accepted): {exc}") from exc
    sd = convert_laion_audio(raw)
    try:
        model = ClapAudioModelWithProjection(config_from_audio_state(sd))
    except (KeyError, IndexError, ValueError) as exc:
        raise ModelNotFound(f"{path!r} is not a LAION-CLAP audio checkpoint (missing {exc})") from exc
    result = model.load_state_dict(sd, strict=False)
    # index and mask buffers are recomputed by the model from its configuration
    missing = [k for k in result.missing_keys if not k.endswith("relative_position_index")]
    unexpected = [k for k in result.unexpected_keys if not k.endswith("attn_mask")]
    if missing or unexpected:
        raise ModelNotFound(f"{path!r} does not fit the CLAP audio tower: missing {missing[:5]}, "
                            f"unexpected {unexpected[:5]}")
    return model
