"""A Jensen cap on a spectral denoiser: x0_hat never carries more energy per band than the clean signal can.

Why: a posterior mean cannot hold more energy than the signal (Jensen:
E|E[x0|x]|^2 <= E|x0|^2), yet a small network trained on a CPU passes noise through at
high sigma (on held-out music the shipped net's x0_hat had 5-19x the clean energy at
9 kHz for sigma 0.5-10). In the VE view x = x0 + sigma z with unit-variance z, so per
band the noisy energy minus sigma^2 is an unbiased estimate of the clean energy. The cap
scales each band of x0_hat down to a lower confidence bound of that estimate (two
standard errors), and leaves it alone where it is already below. It is differentiable,
so guidance gradients pass through it.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch

from ..denoiser import VPredictionDenoiser, _batch_sigma


def band_edges(bins: int, per_octave: int = 3, first: int = 4) -> list[int]:
    """Bin indices splitting [0, bins) into bands: one below `first`, then 1/`per_octave` octaves."""
    edges = [0, first]
    while edges[-1] < bins:
        nxt = int(np.ceil(edges[-1] * 2 ** (1.0 / per_octave)))
        edges.append(min(bins, max(nxt, edges[-1] + 1)))
    return edges


def band_energy(z: torch.Tensor, bins: int, edges: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean energy per element (B, n_bands), elements per band (n_bands,)) of (B, 4 * bins, T) latents."""
    b, _, t = z.shape
    per_bin = z.reshape(b, 4, bins, t).pow(2).mean(dim=(1, 3))            # (B, bins)
    sums = torch.stack([per_bin[:, lo:hi].sum(dim=1) for lo, hi in zip(edges[:-1], edges[1:])], dim=1)
    widths = torch.tensor([hi - lo for lo, hi in zip(edges[:-1], edges[1:])], dtype=z.dtype, device=z.device)
    return sums / widths, widths * 4 * t


class EnergyCappedDenoiser(VPredictionDenoiser):
    """`VPredictionDenoiser` over spectral latents, with x0_hat capped band by band (see module doc)."""

    def __init__(self, net: torch.nn.Module, *, bins: int, confidence: float = 2.0, **kw: Any) -> None:
        super().__init__(net, **kw)
        self.bins = bins
        self.edges = band_edges(bins)
        self.confidence = confidence

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, cond: Optional[Any] = None) -> torch.Tensor:
        x0 = super().forward(x, sigma, cond)
        return self.cap(x0, x, _batch_sigma(sigma, x))

    def cap(self, x0: torch.Tensor, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        e_x, n = band_energy(x, self.bins, self.edges)
        e_0, _ = band_energy(x0, self.bins, self.edges)
        s2 = (sigma.to(x.dtype) ** 2)[:, None]
        clean = (e_x - s2).clamp_min(0.0)
        stderr = torch.sqrt((2 * s2 ** 2 + 4 * s2 * clean) / n[None])
        bound = (clean - self.confidence * stderr).clamp_min(0.0)
        scale = torch.sqrt(bound / e_0.clamp_min(1e-12)).clamp(max=1.0)     # (B, n_bands)
        widths = [hi - lo for lo, hi in zip(self.edges[:-1], self.edges[1:])]
        per_bin = torch.repeat_interleave(scale, torch.tensor(widths, device=x.device), dim=1)  # (B, bins)
        b, _, t = x0.shape
        return (x0.reshape(b, 4, self.bins, t) * per_bin[:, None, :, None]).reshape(b, -1, t)
