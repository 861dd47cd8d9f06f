"""Samplers as plain functions over a VE denoiser D(x, sigma) -> x0_hat.

Each is one step function run by the one loop, `sample` (in the spirit of
k-diffusion): it takes the start sample x at sigmas[0] and a decreasing schedule
ending in 0, and supports the same hooks: `guide` (a `Guidance`, see guidance.py),
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


# ---- the sampler loop, once ------------------------------------------------------------------

@dataclass
class Step:
    """What a step function sees: the sample at `sigma`, its denoised estimate, and the way to ask for more.

    `denoise(x, sigma)` evaluates the denoiser again (a corrector); it is guided only
    where guidance lives inside the denoiser ("posterior" mode), since the loop moves
    the sample by the first evaluation's gradient itself. `state` is carried from
    step to step (multistep history, a noise source).
    """

    i: int
    n: int
    x: torch.Tensor
    x0: torch.Tensor
    sigma: float
    sigma_next: float
    sigmas: torch.Tensor
    generator: Optional[torch.Generator]
    denoise: Callable[[torch.Tensor, float], torch.Tensor]
    state: dict


StepFn = Callable[[Step], torch.Tensor]


def sample(step_fn: StepFn, denoiser: Callable, x: torch.Tensor, sigmas: torch.Tensor, *,
           guide: Optional[Guidance] = None, consistency: Optional[DataConsistency] = None,
           cond: Optional[Any] = None, callback: Optional[StepCallback] = None,
           cancel: Optional[CancelToken] = None, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Run `step_fn` down the schedule `sigmas`: the one loop every sampler shares.

    Each step: poll `cancel`, denoise (with the guidance gradient), let `step_fn`
    make x at sigma_next, move it against the gradient (`guide.apply`), put the
    known context back at that noise level (`consistency`), report (`callback`).
    """
    n = len(sigmas) - 1
    state: dict = {}
    posterior = guide is not None and guide.step_mode == "posterior"

    def again(x_: torch.Tensor, sigma_: float) -> torch.Tensor:
        return _denoise(denoiser, x_, sigma_, guide if posterior else None, cond)[0]

    for i in range(n):
        if cancel is not None:
            cancel.raise_if_cancelled()
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        x0, grad = _denoise(denoiser, x, sigma, guide, cond)
        x_next = step_fn(Step(i, n, x, x0, sigma, sigma_next, sigmas, generator, again, state))
        if guide is not None:
            x_next = guide.apply(x_next, grad, sigma, sigma_next)
        if consistency is not None:
            x_next = consistency(x_next, sigma_next, generator)
        if callback is not None:
            callback(i + 1, n)
        x = x_next
    return x


# ---- step functions ---------------------------------------------------------------------------

def ddim_step(s: Step, eta: float = 0.0) -> torch.Tensor:
    """DDIM (Song et al. 2021) in the VE view; eta = 1 is the ancestral DDPM posterior step."""
    eps = (s.x - s.x0) / s.sigma
    if eta > 0 and s.sigma_next > 0:
        sigma, sigma_next = s.sigma, s.sigma_next
        sigma_up = min(sigma_next, eta * (sigma_next ** 2 * (sigma ** 2 - sigma_next ** 2) / sigma ** 2) ** 0.5)
        sigma_down = (sigma_next ** 2 - sigma_up ** 2) ** 0.5
        return s.x0 + sigma_down * eps + sigma_up * randn_like(s.x, s.generator)
    return s.x0 + s.sigma_next * eps


def heun_step(s: Step) -> torch.Tensor:
    """Heun's 2nd-order method, taken on the probability-flow ODE written in 1/sigma.

    With u = x / sigma and lambda = 1 / sigma the ODE reads du/dlambda = x0_hat, so
    the trapezoid rule gives x_next = (sigma_next / sigma) x + (1 - sigma_next / sigma)
    (x0_hat + x0_hat') / 2, where x0_hat' is the denoiser at the Euler (DDIM) estimate.
    The textbook form in sigma (Karras et al. 2022, Algorithm 1) adds
    (sigma / sigma_next - 1) / 2 times the change of x0_hat instead: 15x on the cosine
    schedule's first step (sigma 637 -> 20 at 32 steps), which turned the built-in
    model's output into clipped full-scale noise. This form weighs it by at most 1/2.
    """
    if s.sigma_next == 0.0:
        return s.x0
    ratio = s.sigma_next / s.sigma
    euler = ratio * s.x + (1 - ratio) * s.x0
    x0_2 = s.denoise(euler, s.sigma_next)
    return ratio * s.x + (1 - ratio) * (s.x0 + x0_2) / 2


def pingpong_step(s: Step) -> torch.Tensor:
    """The distilled Stable Audio 3 models' stochastic step: x_next = x0_hat + sigma_next * fresh noise (VE view)."""
    if s.sigma_next == 0.0:
        return s.x0
    return s.x0 + s.sigma_next * randn_like(s.x, s.generator)


# ---- the samplers (the loop with a step function) ------------------------------------------------

def sample_ddim(denoiser: Callable, x: torch.Tensor, sigmas: torch.Tensor, *, eta: float = 0.0,
                **hooks: Any) -> torch.Tensor:
    """DDIM; `hooks` are `sample`'s guide, consistency, cond, callback, cancel and generator."""
    return sample(lambda s: ddim_step(s, eta), denoiser, x, sigmas, **hooks)


def sample_ddpm(denoiser: Callable, x: torch.Tensor, sigmas: torch.Tensor, **hooks: Any) -> torch.Tensor:
    """Ancestral DDPM (Ho et al. 2020): the posterior step, then the guidance step on x_s."""
    hooks.pop("eta", None)
    return sample(lambda s: ddim_step(s, 1.0), denoiser, x, sigmas, **hooks)


def sample_heun(denoiser: Callable, x: torch.Tensor, sigmas: torch.Tensor, **hooks: Any) -> torch.Tensor:
    """Heun's 2nd-order method (see `heun_step`); guidance moves the sample after each step."""
    return sample(heun_step, denoiser, x, sigmas, **hooks)


def sample_pingpong(denoiser: Callable, x: torch.Tensor, sigmas: torch.Tensor, **hooks: Any) -> torch.Tensor:
    """Stable Audio 3's sampler (see `pingpong_step`)."""
    return sample(pingpong_step, denoiser, x, sigmas, **hooks)


SAMPLERS: dict[str, Callable[..., torch.Tensor]] = {
    "ddim": sample_ddim,
    "ddpm": sample_ddpm,
    "heun": sample_heun,
    "pingpong": sample_pingpong,
}


# Samplers with an optional dependency (torchsde, for Brownian noise), imported on first use.
LAZY_SAMPLERS: dict[str, str] = {
    "dpmpp_2m_sde": "engine.samplers_dpm:sample_dpmpp_2m_sde",
}


def get_sampler(name: str) -> Callable[..., torch.Tensor]:
    if name in SAMPLERS:
        return SAMPLERS[name]
    if name in LAZY_SAMPLERS:
        import importlib

        module, _, func = LAZY_SAMPLERS[name].partition(":")
        return getattr(importlib.import_module(module), func)
    raise ValueError(f"unknown sampler {name!r}; choose one of {', '.join([*SAMPLERS, *LAZY_SAMPLERS])}")
