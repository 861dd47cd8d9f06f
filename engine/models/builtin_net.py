"""The built-in model's network: a 1-D U-Net over STFT frames predicting v.

Why this shape: the whole spectrum of a frame is one channel vector (4 x bins), so a
1x1 projection mixes frequency once and the rest of the network only convolves over
time, which is cheap enough to train and sample on a laptop CPU. Five resolutions
(x1 .. x16 in time) give a receptive field of several seconds, which infill and
continuation need. The network is fully convolutional; inputs of any length are
padded to a multiple of the total stride inside `forward` and cropped back.
Time conditioning: a sinusoidal embedding of t feeding FiLM in every block.

Output head: v = A + (M + G) * x_t, with A and M predicted per channel. The hidden
width (a few hundred) is far below the 4 x bins latent channels, so a purely
additive head could not express per-bin denoising at low noise (it would have to
reproduce every noise value through the bottleneck); the mask M applies a
context-dependent, per-element Wiener-like gain to the input instead.

Power features (`power_features`): a linear projection of complex coefficients with
random phases cannot see how loud each bin is, and loudness per bin is what decides
whether an element is signal or noise. So the log power of every bin (per stereo
channel) enters the network beside the coefficients, and G is a small function of an
element's own log power and t (shared by all bins): the classic SNR-driven gain.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class NetConfig:
    """Architecture hyper-parameters; stored as JSON beside the weights."""

    in_channels: int = 2052
    widths: tuple[int, ...] = (256, 256, 384, 384, 384)
    blocks: tuple[int, ...] = (1, 1, 2, 2, 2)
    emb_dim: int = 256
    groups: int = 16
    # Feed log |c|^2 per bin and channel beside the raw coefficients, and add a per-element
    # gain from each element's own noisy power (see SpectralUNet). False = the first weights.
    power_features: bool = False
    gain_hidden: int = 8

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "NetConfig":
        d = dict(d)
        d["widths"] = tuple(d["widths"])
        d["blocks"] = tuple(d["blocks"])
        return cls(**d)

    @property
    def stride(self) -> int:
        return 2 ** (len(self.widths) - 1)


def bin_log_power(x: torch.Tensor, bins: int) -> torch.Tensor:
    """log of each bin's power per stereo channel, (B, 2, bins, T), from (B, 4 * bins, T) latents."""
    b, _, n = x.shape
    return torch.log(x.reshape(b, 2, 2, bins, n).pow(2).mean(dim=2) + 1e-3)


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of t in [0, 1] (scaled by 1000 as in DDPM)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = 1000.0 * t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv, FiLM from the time embedding, GroupNorm-SiLU-conv, residual."""

    def __init__(self, ch: int, emb_dim: int, groups: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, ch)
        self.conv1 = nn.Conv1d(ch, ch, 3, padding=1)
        self.film = nn.Linear(emb_dim, 2 * ch)
        self.norm2 = nn.GroupNorm(groups, ch)
        self.conv2 = nn.Conv1d(ch, ch, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.film(emb)[:, :, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        return x + self.conv2(F.silu(h))


class SpectralUNet(nn.Module):
    """v(x_t, t): (B, in_channels, frames), (B,) -> (B, in_channels, frames)."""

    def __init__(self, cfg: NetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        w, g, e = cfg.widths, cfg.groups, cfg.emb_dim
        self.time_mlp = nn.Sequential(nn.Linear(e, e), nn.SiLU(), nn.Linear(e, e), nn.SiLU())
        self.bins = cfg.in_channels // 4
        extra = 2 * self.bins if cfg.power_features else 0
        self.inp = nn.Conv1d(cfg.in_channels + extra, w[0], 1)
        if cfg.power_features:
            self.gain_in = nn.Linear(e, 2 * cfg.gain_hidden)
            self.gain_out = nn.Linear(e, cfg.gain_hidden)
            nn.init.zeros_(self.gain_out.weight)
            nn.init.zeros_(self.gain_out.bias)
        self.down_blocks = nn.ModuleList(
            nn.ModuleList(ResBlock(w[i], e, g) for _ in range(cfg.blocks[i])) for i in range(len(w)))
        self.downs = nn.ModuleList(nn.Conv1d(w[i], w[i + 1], 3, stride=2, padding=1) for i in range(len(w) - 1))
        self.ups = nn.ModuleList(nn.Conv1d(w[i + 1], w[i], 3, padding=1) for i in range(len(w) - 1))
        self.up_blocks = nn.ModuleList(ResBlock(w[i], e, g) for i in range(len(w) - 1))
        self.out_norm = nn.GroupNorm(g, w[0])
        self.out = nn.Conv1d(w[0], 2 * cfg.in_channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if x.ndim != 3 or x.shape[1] != self.cfg.in_channels:
            raise ValueError(f"x must be (batch, {self.cfg.in_channels}, frames), got {tuple(x.shape)}")
        frames = x.shape[-1]
        x_in = x
        pad = (-frames) % self.cfg.stride
        if pad:
            x = F.pad(x, (0, pad))
        t = t.reshape(-1).expand(x.shape[0]) if t.numel() == 1 else t.reshape(-1)
        emb = self.time_mlp(timestep_embedding(t, self.cfg.emb_dim).to(x.dtype))
        if self.cfg.power_features:
            b, _, n = x.shape
            logp = bin_log_power(x, self.bins)
            h = self.inp(torch.cat([x, 0.5 * logp.reshape(b, 2 * self.bins, n)], dim=1))
        else:
            h = self.inp(x)
        skips = []
        for i, blocks in enumerate(self.down_blocks):
            for block in blocks:
                h = block(h, emb)
            if i < len(self.downs):
                skips.append(h)
                h = self.downs[i](h)
        for i in reversed(range(len(self.ups))):
            h = F.interpolate(h, scale_factor=2.0, mode="nearest")
            h = self.ups[i](h) + skips[i]
            h = self.up_blocks[i](h, emb)
        add, mask = self.out(F.silu(self.out_norm(h)))[..., :frames].chunk(2, dim=1)
        if self.cfg.power_features:
            mask = mask + self._element_gain(logp[..., :frames], emb)
        return add + mask * x_in

    def _element_gain(self, logp: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """G(log power of the element's bin, t), broadcast over re/im: (B, 4 * bins, T)."""
        b, _, bins, n = logp.shape
        k = self.cfg.gain_hidden
        scale, shift = self.gain_in(emb).reshape(b, 2, k, 1, 1, 1).unbind(1)
        hidden = F.silu(scale * logp[:, None] + shift)  # (B, k, 2, bins, T)
        coef = self.gain_out(emb).reshape(b, k, 1, 1, 1)
        g = (coef * hidden).sum(dim=1)  # (B, 2, bins, T)
        return g[:, :, None].expand(b, 2, 2, bins, n).reshape(b, 4 * bins, n)
