"""The one contract between models and samplers (see DESIGN.md section 2).

A `Denoiser` maps a VE-noised signal x (batch, channels, frames) at noise level
sigma to x0_hat, differentiably in x. Latent models add an `Autoencoder`.
Foreign parameterisations (v-prediction on the cosine schedule, flow matching)
are adapted once here by thin wrappers.
"""
from __future__ import annotations

import math
from typing import Any, Optional, Protocol, runtime_checkable

import torch


@runtime_checkable
class Denoiser(Protocol):
    """D(x, sigma, cond) -> x0_hat in the VE view; x is (B, C, T), sigma is (B,)."""

    sample_rate: int
    channels: int
    sigma_data: float

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, cond: Optional[Any] = None) -> torch.Tensor: ...


@runtime_checkable
class Autoencoder(Protocol):
    """Maps audio (B, 2, samples) to latents (B, C, frames) and back; `hop` samples per frame."""

    sample_rate: int
    hop: int
    latent_channels: int

    def encode(self, audio: torch.Tensor) -> torch.Tensor: ...

    def decode(self, z: torch.Tensor) -> torch.Tensor: ...


class NetworkDenoiser(torch.nn.Module):
    """Common part of the wrappers: the network and the facts a sampler needs about it."""

    def __init__(self, net: torch.nn.Module, *, sample_rate: int, channels: int,
                 sigma_data: float = 1.0) -> None:
        super().__init__()
        self.net = net
        self.sample_rate = sample_rate
        self.channels = channels
        self.sigma_data = sigma_data
        self.frame_multiple = int(getattr(net, "frame_multiple", 1))

    def _predict(self, x_t: torch.Tensor, t: torch.Tensor, cond: Optional[Any]) -> torch.Tensor:
        return self.net(x_t, t) if cond is None else self.net(x_t, t, cond)


class VPredictionDenoiser(NetworkDenoiser):
    """Wraps a network v(x_t, t) trained on the cosine VP schedule as a VE denoiser.

    With x = x_t / a_t and sigma = tan(pi t / 2): x_t = x / sqrt(1 + sigma^2),
    t = 2 atan(sigma) / pi, and x0_hat = a_t x_t - s_t v_hat.
    """

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, cond: Optional[Any] = None) -> torch.Tensor:
        sigma = _batch_sigma(sigma, x)
        sd = self.sigma_data
        # Scale so the network sees data of unit variance (sigma_data) on the VP schedule.
        s = sigma / sd
        a_t = 1 / torch.sqrt(1 + s ** 2)
        s_t = s * a_t
        t = torch.atan(s) * 2 / math.pi
        x_t = (x / sd) * _bcast(a_t, x)
        v = self._predict(x_t, t.to(x.dtype), cond)
        x0 = _bcast(a_t, x) * x_t - _bcast(s_t, x) * v
        return x0 * sd


class FlowMatchingDenoiser(NetworkDenoiser):
    """Wraps a velocity network of a flow-matching model, x_t = (1 - t) x0 + t e, v = e - x0.

    VE view: x = x_t / (1 - t), sigma = t / (1 - t); then x0_hat = x_t - t v_hat.
    """

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, cond: Optional[Any] = None) -> torch.Tensor:
        sigma = _batch_sigma(sigma, x)
        t = sigma / (1 + sigma)
        x_t = x * _bcast(1 - t, x)
        v = self._predict(x_t, t.to(x.dtype), cond)
        return x_t - _bcast(t, x) * v


def _batch_sigma(sigma: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
    sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    if sigma.ndim == 0:
        sigma = sigma.expand(x.shape[0])
    return sigma


def _bcast(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return v.reshape(-1, *([1] * (x.ndim - 1)))
