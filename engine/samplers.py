"""Samplers as plain functions over a VE denoiser D(x, sigma) -> x0_hat.

Each takes the start sample x at sigmas[0] and a decreasing schedule ending in
0, and supports the same hooks: `guide` (a `Guidance`, see guidance.py),
`consistency` (RePaint-style replacement of known positions), `callback(step,
total)`, `cancel` (a CancelToken polled between steps) and `generator` (the
only source of randomness, so a seed reproduces a render).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch

from .guidance import Guidance
from .progress import CancelToken

StepCallback = Callable[[int, int], None]


@dataclass
class DataConsistency:
    """Overwrite known positions with the context at the current noise level, clean at the end.

    `mask` is 1 where `known` holds the truth (broadcastable to x). Fresh noise
    comes from the sampler's generator, as in RePaint.
    """

    known: torch.Tensor
    mask: torch.Tensor

    def __call__(self, x: torch.Tensor, sigma_next: float, generator: Optional[torch.Generator]) -> torch.Tensor:
        if sigma_next == 0.0:
            noisy = self.known
        else:
            noisy = self.known + sigma_next * randn_like(x, generator)
        return torch.where(self.mask.bool().expand_as(x), noisy.expand_as(x), x)


def randn_like(x: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
    """Gaussian noise drawn on the generator's device (CPU by default) so seeds agree across devices."""
    dev = generator.device if generator is not None else torch.device("cpu")
    return torch.randn(x.shape, generator=generator, device=dev, dtype=torch.float32).to(x.device, x.dtype)


def _denoise(denoiser: Callable, x: torch.Tensor, sigma: float, guide: Optional[Guidance],
             cond: Optional[Any]) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    if guide is not None:
        return guide.evaluate(denoiser, x, sigma, cond)
    with torch.no_grad():
        s = torch.full((x.shape[0],), sigma, dtype=x.dtype, device=x.device)
        return denoiser(x, s, cond), None


def _finish_step(x_next: torch.Tensor, i: int, n: int, sigma_next: float, *, consistency, generator,
                 callback) -> torch.Tensor:
    if consistency is not None:
        x_next = consistency(x_next, sigma_next, generator)
    if callback is not None:
        callback(i + 1, n)
    return x_next


def sample_ddim(denoiser: Callable, x: torch.Tensor, sigmas: torch.Tensor, *, guide: Optional[Guidance] = None,
                consistency: Optional[DataConsistency] = None, cond: Optional[Any] = None,
                callback: Optional[StepCallback] = None, cancel: Optional[CancelToken] = None,
                generator: Optional[torch.Generator] = None, eta: float = 0.0) -> torch.Tensor:
    """DDIM (Song et al. 2021) in the VE view; eta = 1 is the ancestral DDPM posterior step."""
    n = len(sigmas) - 1
    for i in range(n):
        if cancel is not None:
            cancel.raise_if_cancelled()
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        x0, grad = _denoise(denoiser, x, sigma, guide, cond)
        eps = (x - x0) / sigma
        if eta > 0 and sigma_next > 0:
            sigma_up = min(sigma_next, eta * (sigma_next ** 2 * (sigma ** 2 - sigma_next ** 2) / sigma ** 2) ** 0.5)
            sigma_down = (sigma_next ** 2 - sigma_up ** 2) ** 0.5
            x_next = x0 + sigma_down * eps + sigma_up * randn_like(x, generator)
        else:
            x_next = x0 + sigma_next * eps
        if guide is not None:
            x_next = guide.apply(x_next, grad, sigma, sigma_next)
        x = _finish_step(x_next, i, n, sigma_next, consistency=consistency, generator=generator,
                         callback=callback)
    return x


def sample_ddpm(denoiser: Callable, x: torch.Tensor, sigmas: torch.Tensor, **kwargs: Any) -> torch.Tensor:
    """Ancestral DDPM (Ho et al. 2020): the posterior step, then the guidance step on x_s."""
    kwargs.pop("eta", None)
    return sample_ddim(denoiser, x, sigmas, eta=1.0, **kwargs)


def sample_heun(denoiser: Callable, x: torch.Tensor, sigmas: torch.Tensor, *, guide: Optional[Guidance] = None,
                consistency: Optional[DataConsistency] = None, cond: Optional[Any] = None,
                callback: Optional[StepCallback] = None, cancel: Optional[CancelToken] = None,
                generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Heun's 2nd-order method (Karras et al. 2022, Algorithm 1); guidance moves the sample after each step."""
    n = len(sigmas) - 1
    for i in range(n):
        if cancel is not None:
            cancel.raise_if_cancelled()
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        x0, grad = _denoise(denoiser, x, sigma, guide, cond)
        d = (x - x0) / sigma
        x_next = x + (sigma_next - sigma) * d
        if sigma_next > 0:
            # The corrector is guided only where guidance lives in the denoiser (posterior mode).
            posterior = guide is not None and guide.step_mode == "posterior"
            x0_2, _ = _denoise(denoiser, x_next, sigma_next, guide if posterior else None, cond)
            d2 = (x_next - x0_2) / sigma_next
            x_next = x + (sigma_next - sigma) * (d + d2) / 2
        if guide is not None:
            x_next = guide.apply(x_next, grad, sigma, sigma_next)
        x = _finish_step(x_next, i, n, sigma_next, consistency=consistency, generator=generator,
                         callback=callback)
    return x


SAMPLERS: dict[str, Callable[..., torch.Tensor]] = {
    "ddim": sample_ddim,
    "ddpm": sample_ddpm,
    "heun": sample_heun,
}


# Samplers that live with the backends that need them, imported on first use.
LAZY_SAMPLERS: dict[str, str] = {
    "dpmpp_2m_sde": "engine.samplers_dpm:sample_dpmpp_2m_sde",
    "pingpong": "engine.models.stable_audio3:sample_pingpong",
}


def get_sampler(name: str) -> Callable[..., torch.Tensor]:
    if name in SAMPLERS:
        return SAMPLERS[name]
    if name in LAZY_SAMPLERS:
        import importlib

        module, _, func = LAZY_SAMPLERS[name].partition(":")
        return getattr(importlib.import_module(module), func)
    raise ValueError(f"unknown sampler {name!r}; choose one of {', '.join([*SAMPLERS, *LAZY_SAMPLERS])}")
