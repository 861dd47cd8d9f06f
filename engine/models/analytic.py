"""A closed-form model: stationary (circulant) Gaussian-process "music" with a known spectrum.

For data x0 ~ N(0, C) with C = F^H diag(P) F (a periodic stationary process),
the optimal denoiser is exact: D(x, sigma) = F^H diag(P / (P + sigma^2)) F x.
It lets tests compare guided sampling with the true posterior, and it renders
instantly, so bridge and DAW tests use it where the learned model is not the
point. It sounds like coloured noise: it is a test model, not a musical one.
"""
from __future__ import annotations

from typing import Any, Optional

import torch

from .base import Model, register_model


class GaussianProcessDenoiser(torch.nn.Module):
    """Exact denoiser for independent channels of a circulant GP with a Lorentzian spectrum.

    P(nu) is proportional to 1 / (1 + (nu / nu0)^2) over normalised frequency nu,
    scaled so every sample has variance sigma_data^2 for any length.
    """

    def __init__(self, *, sample_rate: int = 44100, channels: int = 2, sigma_data: float = 0.2,
                 corner_hz: float = 400.0) -> None:
        super().__init__()
        self.sample_rate = sample_rate
        self.channels = channels
        self.sigma_data = sigma_data
        self.corner = corner_hz / sample_rate

    def spectrum(self, n: int, dtype: torch.dtype = torch.float64, device: Any = None) -> torch.Tensor:
        """P_k for the n-point real FFT bins (length n // 2 + 1), normalised to variance sigma_data^2."""
        k = torch.arange(n // 2 + 1, dtype=dtype, device=device)
        nu = k / n
        p = 1.0 / (1.0 + (nu / self.corner) ** 2)
        full = torch.cat([p, p[1:(n + 1) // 2].flip(0)]) if n > 1 else p
        return p * (self.sigma_data ** 2 * n / full.sum())

    def covariance(self, n: int) -> torch.Tensor:
        """The dense n x n covariance of one channel (for tests; O(n^2))."""
        p = self.spectrum(n)
        eye = torch.eye(n, dtype=torch.float64)
        return torch.fft.irfft(p[:, None] * torch.fft.rfft(eye, dim=0), n=n, dim=0)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, cond: Optional[Any] = None) -> torch.Tensor:
        n = x.shape[-1]
        p = self.spectrum(n, dtype=x.dtype, device=x.device)
        s2 = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1, *([1] * (x.ndim - 1))) ** 2
        gain = p / (p + s2)
        return torch.fft.irfft(gain * torch.fft.rfft(x, dim=-1), n=n, dim=-1)

    def sample_prior(self, shape: tuple[int, ...], generator: Optional[torch.Generator] = None,
                     dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """Draw x0 ~ N(0, C) exactly (white noise shaped by sqrt(P))."""
        n = shape[-1]
        w = torch.randn(shape, generator=generator, dtype=dtype)
        return torch.fft.irfft(self.spectrum(n, dtype).sqrt() * torch.fft.rfft(w, dim=-1), n=n, dim=-1)


def load_analytic() -> Model:
    return Model(name="analytic", denoiser=GaussianProcessDenoiser(), autoencoder=None,
                 default_guidance_scale=0.2, default_steps=30, default_step_mode="normalized",
                 info={"kind": "closed-form Gaussian process (test model)", "weights": None})


register_model("analytic", load_analytic)
