"""The cosine VP schedule and its VE (sigma) view.

VP: x_t = a_t x0 + s_t e with a_t = cos(pi t / 2), s_t = sin(pi t / 2).
VE: x = x_t / a_t, sigma = tan(pi t / 2). Samplers work in the VE view over a
denoiser D(x, sigma) -> x0_hat and convert at the edges.
"""
from __future__ import annotations

import math

import torch


def t_to_sigma(t: torch.Tensor | float) -> torch.Tensor:
    return torch.tan(torch.as_tensor(t, dtype=torch.float64) * math.pi / 2)


def sigma_to_t(sigma: torch.Tensor | float) -> torch.Tensor:
    return torch.atan(torch.as_tensor(sigma, dtype=torch.float64)) * 2 / math.pi


def alpha_sigma(t: torch.Tensor | float) -> tuple[torch.Tensor, torch.Tensor]:
    """(a_t, s_t) of the cosine schedule."""
    t = torch.as_tensor(t, dtype=torch.float64)
    return torch.cos(t * math.pi / 2), torch.sin(t * math.pi / 2)


def get_sigmas_cosine(n: int, t_max: float = 0.999, t_min: float = 0.0) -> torch.Tensor:
    """n steps evenly spaced in t (the method's schedule); returns n + 1 sigmas ending in 0.

    t_max < 1 because sigma(1) is infinite; 0.999 gives sigma ~ 637.
    """
    if n < 1:
        raise ValueError(f"steps must be >= 1, got {n}")
    ts = torch.linspace(t_max, t_min, n + 1, dtype=torch.float64)
    sigmas = t_to_sigma(ts)
    sigmas[-1] = 0.0
    return sigmas


def get_sigmas_karras(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """EDM (Karras et al. 2022) noise levels; n + 1 values ending in 0."""
    if n < 1:
        raise ValueError(f"steps must be >= 1, got {n}")
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sigmas = (hi + ramp * (lo - hi)) ** rho
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def truncate_sigmas(sigmas: torch.Tensor, strength: float) -> torch.Tensor:
    """Keep the last `strength` fraction of a schedule (audio-to-audio start point)."""
    if not 0.0 < strength <= 1.0:
        raise ValueError(f"strength must be in (0, 1], got {strength}")
    n = len(sigmas) - 1
    keep = max(1, round(n * strength))
    return sigmas[n - keep:]
