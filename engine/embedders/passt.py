"""PaSST (the AudioSet transformer the method used for style guidance) as a style embedder.

The user provides the weight file (e.g. `passt-s-f128-p16-s10-ap.476-swa.pt` from the PaSST
releases); nothing is downloaded. `hear21passt` cannot be imported here (it needs
torchaudio, which has no build for our torch), so both parts are re-written in torch with
the upstream module and parameter names, so the released state dict loads unchanged:

- frontend (`AugmentMelSTFT` in eval mode): 32 kHz mono, pre-emphasis [-0.97, 1],
  1024-point STFT of an 800-sample periodic=False Hann window, hop 320, 128 Kaldi mel bands
  from 0 Hz to 15.5 kHz, log(mel + 1e-5), then (x + 4.5) / 5;
- model (`PaSST`, a distilled ViT): 16x16 patches with stride 10, separate frequency and
  time position embeddings, class and distillation tokens; the embedding is the mean of
  the two tokens after the final norm (768-d), as upstream's `forward` returns it.

Audio arrives at 44.1 kHz stereo, is averaged to mid and resampled to 32 kHz. Inputs
longer than the model's 10 s are cut into 10 s chunks whose embeddings are averaged.
Not checked against the released weights here (none on this machine); the tests check
shapes, rates, gradients and loading on random weights.
"""
from __future__ import annotations

import math
import os
import re
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelNotFound
from .base import Resample, check_audio

PASST_RATE = 32000
HOW_TO = ("download passt-s-f128-p16-s10-ap.476-swa.pt from the PaSST releases yourself and pass its path "
          "('passt:/path/to/file.pt'); Segue never downloads weights")


def kaldi_mel_banks(n_mels: int, n_fft: int, sample_rate: int, f_min: float, f_max: float) -> torch.Tensor:
    """(n_mels, n_fft // 2 + 1) triangles on the Kaldi mel scale (1127 ln(1 + f/700)); last bin zero, as upstream."""
    def mel(f):
        return 1127.0 * torch.log1p(torch.as_tensor(f, dtype=torch.float64) / 700.0)

    n_bins = n_fft // 2
    if f_max <= 0:
        f_max += sample_rate / 2
    lo, hi = mel(f_min), mel(f_max)
    delta = (hi - lo) / (n_mels + 1)
    b = torch.arange(n_mels, dtype=torch.float64)[:, None]
    left, center, right = lo + b * delta, lo + (b + 1) * delta, lo + (b + 2) * delta
    m = mel(sample_rate / n_fft * torch.arange(n_bins, dtype=torch.float64))[None]
    banks = torch.clamp(torch.minimum((m - left) / (center - left), (right - m) / (right - center)), min=0.0)
    return F.pad(banks, (0, 1)).float()


class PasstFrontend(nn.Module):
    """Mono 32 kHz waveform (B, N) -> normalised log-mel (B, 128, frames), differentiable."""

    def __init__(self, n_mels: int = 128, n_fft: int = 1024, win_length: int = 800, hop: int = 320,
                 f_min: float = 0.0, f_max: float = PASST_RATE // 2 - 1000 // 2) -> None:
        super().__init__()
        self.n_fft, self.win_length, self.hop = n_fft, win_length, hop
        self.register_buffer("window", torch.hann_window(win_length, periodic=False), persistent=False)
        self.register_buffer("preemphasis", torch.tensor([[[-0.97, 1.0]]]), persistent=False)
        self.register_buffer("mel_fb", kaldi_mel_banks(n_mels, n_fft, PASST_RATE, f_min, f_max), persistent=False)

    def forward(self, mono: torch.Tensor) -> torch.Tensor:
        x = F.conv1d(mono[:, None], self.preemphasis.to(mono.dtype))[:, 0]
        spec = torch.stft(x, self.n_fft, hop_length=self.hop, win_length=self.win_length,
                          window=self.window.to(mono.dtype), center=True, return_complex=True)
        power = spec.real ** 2 + spec.imag ** 2
        mel = torch.matmul(self.mel_fb.to(mono.dtype), power)
        return ((mel + 1e-5).log() + 4.5) / 5.0


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, c))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim, eps=1e-6), nn.LayerNorm(dim, eps=1e-6)
        self.attn, self.mlp = Attention(dim, heads), Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, dim: int, patch: int, stride: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(1, dim, kernel_size=patch, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class PaSST(nn.Module):
    """The PaSST network (distilled ViT with frequency/time position embeddings), inference only."""

    def __init__(self, *, embed_dim: int = 768, depth: int = 12, heads: int = 12, patch: int = 16, stride: int = 10,
                 freq_patches: int = 12, time_patches: int = 99, num_classes: int = 527) -> None:
        super().__init__()
        self.patch, self.stride = patch, stride
        self.patch_embed = PatchEmbed(embed_dim, patch, stride)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.dist_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.new_pos_embed = nn.Parameter(torch.zeros(1, 2, embed_dim))
        self.freq_new_pos_embed = nn.Parameter(torch.zeros(1, embed_dim, freq_patches, 1))
        self.time_new_pos_embed = nn.Parameter(torch.zeros(1, embed_dim, 1, time_patches))
        self.blocks = nn.Sequential(*[Block(embed_dim, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head = nn.Sequential(nn.LayerNorm(embed_dim), nn.Linear(embed_dim, num_classes))
        self.head_dist = nn.Linear(embed_dim, num_classes)

    @property
    def max_frames(self) -> int:
        """Mel frames that fill the time position embedding exactly (998 for the released model)."""
        return (self.time_new_pos_embed.shape[-1] - 1) * self.stride + self.patch

    def features(self, mel: torch.Tensor) -> torch.Tensor:
        """(B, 1, n_mels, frames) -> (B, embed_dim): mean of class and distillation tokens."""
        x = self.patch_embed(mel)
        b = x.shape[0]
        x = x + self.time_new_pos_embed[..., :x.shape[-1]] + self.freq_new_pos_embed
        x = x.flatten(2).transpose(1, 2)
        cls = self.cls_token.expand(b, -1, -1) + self.new_pos_embed[:, :1]
        dist = self.dist_token.expand(b, -1, -1) + self.new_pos_embed[:, 1:]
        x = self.norm(self.blocks(torch.cat([cls, dist, x], dim=1)))
        return (x[:, 0] + x[:, 1]) / 2

    def forward(self, mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits from the class head, features), as upstream."""
        f = self.features(mel)
        return self.head(f), f


class PasstEmbedder(nn.Module):
    """E(audio at `sample_rate`) -> PaSST embedding (B, 768)."""

    def __init__(self, model: PaSST, *, sample_rate: int = 44100, n_mels: int = 128) -> None:
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.sample_rate = sample_rate
        self.dim = int(model.cls_token.shape[-1])
        self.resample = Resample(sample_rate, PASST_RATE)
        self.frontend = PasstFrontend(n_mels=n_mels)
        self.chunk = (model.max_frames - 1) * self.frontend.hop  # samples at 32 kHz giving max_frames frames
        self.min_samples = math.ceil(model.patch * self.frontend.hop * sample_rate / PASST_RATE)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        mono = self.resample(check_audio(audio, min_samples=self.min_samples))
        starts = list(range(0, mono.shape[-1], self.chunk))
        if len(starts) > 1 and mono.shape[-1] - starts[-1] < self.chunk // 4:
            starts = starts[:-1]  # a short tail is folded into the previous chunk's average
        feats = [self.model.features(self.frontend(mono[:, s:s + self.chunk])[:, None]) for s in starts]
        return torch.stack(feats).mean(dim=0)


_PREFIXES = ("module.", "net.", "model.")


def _clean(sd: dict) -> dict:
    if "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    out = {}
    for k, v in sd.items():
        for p in _PREFIXES:
            if k.startswith(p):
                k = k[len(p):]
        out[k] = v
    return out


def passt_from_state_dict(sd: dict, *, n_mels: int = 128) -> PaSST:
    """Infer the architecture from the tensors' shapes and load them strictly."""
    sd = _clean(sd)
    try:
        dim = sd["cls_token"].shape[-1]
        depth = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k)))
        patch = sd["patch_embed.proj.weight"].shape[-1]
        freq, time = sd["freq_new_pos_embed"].shape[2], sd["time_new_pos_embed"].shape[3]
        stride = (n_mels - patch) // (freq - 1) if freq > 1 else patch
        model = PaSST(embed_dim=dim, depth=depth, heads=max(1, dim // 64), patch=patch, stride=stride,
                      freq_patches=freq, time_patches=time, num_classes=sd["head.1.weight"].shape[0])
    except (KeyError, ValueError) as exc:
        raise ModelNotFound(f"not a PaSST state dict (missing or odd {exc})") from exc
    result = model.load_state_dict(sd, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ModelNotFound(f"PaSST weights do not fit: missing {result.missing_keys[:5]}, "
                            f"unexpected {result.unexpected_keys[:5]}")
    return model


def load_passt(path: str, *, sample_rate: int = 44100, heads: Optional[int] = None) -> PasstEmbedder:
    """Build the embedder from a local weight file (.pt/.pth state dict or .safetensors).

    The head count is not stored in the weights; PaSST models use 64-wide heads, so it is
    embed_dim // 64 unless `heads` says otherwise.
    """
    path = os.path.expanduser(path)
    if not os.path.isfile(path):
        raise ModelNotFound(f"PaSST weights not found: {path!r}; {HOW_TO}")
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            sd = load_file(path)
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a corrupt or foreign file: say which
        raise ModelNotFound(f"cannot read PaSST weights {path!r}: {exc}") from exc
    model = passt_from_state_dict(sd)
    if heads is not None:
        for blk in model.blocks:
            blk.attn.heads = heads
    return PasstEmbedder(model, sample_rate=sample_rate)
