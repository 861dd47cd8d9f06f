"""DPM-Solver++(2M) SDE over a VE denoiser, with the guidance hooks of `samplers.py`.

This is the sampler Stable Audio Open ships with (`CosineDPMSolverMultistepScheduler`:
midpoint 2nd-order multistep, eta = 1, first-order first and last steps). With
`noise="brownian"` the per-step noise comes from a Brownian tree seeded from the
generator's initial seed, exactly as diffusers draws it, so with guidance off our loop
reproduces the pipeline's latents (see tests/test_stable_audio.py). The default
`noise="gaussian"` draws fresh noise from the generator and needs no extra package.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Optional

import torch

from .guidance import Guidance
from .progress import CancelToken
from .samplers import DataConsistency, StepCallback, _denoise, _finish_step, randn_like

NoiseSampler = Callable[[float, float], torch.Tensor]


class BrownianTreeNoise:
    """Noise from a torchsde Brownian interval on [sigma_min, sigma_max], as diffusers' `BrownianTreeNoiseSampler`.

    Querying the same (sigma, sigma_next) pairs gives the same noise whatever the step
    count, which is what makes SDE samples stable when the schedule is refined.
    """

    def __init__(self, x: torch.Tensor, sigma_min: float, sigma_max: float, seed: int) -> None:
        try:
            import torchsde
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ImportError("Brownian-tree noise needs the 'torchsde' package (pip install torchsde)") from exc
        lo, hi = sorted((float(sigma_min), float(sigma_max)))
        self._sign = 1.0 if float(sigma_min) < float(sigma_max) else -1.0
        self.tree = torchsde.BrownianInterval(t0=torch.as_tensor(lo), t1=torch.as_tensor(hi), size=x.shape,
                                              dtype=x.dtype, device=x.device, entropy=int(seed), tol=1e-6,
                                              pool_size=24, halfway_tree=True)

    def __call__(self, sigma: float, sigma_next: float) -> torch.Tensor:
        s0, s1 = torch.as_tensor(float(sigma)), torch.as_tensor(float(sigma_next))
        a, b, sign = (s0, s1, 1.0) if s0 < s1 else (s1, s0, -1.0)
        w = self.tree(a, b) * (self._sign * sign)
        return w / (s1 - s0).abs().sqrt()


def get_sigmas_exponential(n: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """n noise levels evenly spaced in log sigma from sigma_max to sigma_min, then 0 (as diffusers, in float32)."""
    if n < 1:
        raise ValueError(f"steps must be >= 1, got {n}")
    sigmas = torch.linspace(math.log(sigma_min), math.log(sigma_max), n).exp().flip(0)
    return torch.cat([sigmas, sigmas.new_zeros(1)]).to(torch.float32)


def sample_dpmpp_2m_sde(denoiser: Callable, x: torch.Tensor, sigmas: torch.Tensor, *,
                        guide: Optional[Guidance] = None, consistency: Optional[DataConsistency] = None,
                        cond: Optional[Any] = None, callback: Optional[StepCallback] = None,
                        cancel: Optional[CancelToken] = None, generator: Optional[torch.Generator] = None,
                        noise: str = "gaussian", noise_sampler: Optional[NoiseSampler] = None,
                        brownian_range: Optional[tuple[float, float]] = None) -> torch.Tensor:
    """DPM-Solver++(2M) SDE (Lu et al. 2022), midpoint form, eta = 1; guidance moves the sample after each step.

    `noise`: "gaussian" (fresh draws from `generator`) or "brownian" (a Brownian tree on
    `brownian_range`, default the schedule's own range, seeded by `generator.initial_seed()`).
    """
    if noise not in ("gaussian", "brownian"):
        raise ValueError(f"noise must be 'gaussian' or 'brownian', got {noise!r}")
    n = len(sigmas) - 1
    old_x0: Optional[torch.Tensor] = None
    h_last: Optional[float] = None
    for i in range(n):
        if cancel is not None:
            cancel.raise_if_cancelled()
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        x0, grad = _denoise(denoiser, x, sigma, guide, cond)
        if noise_sampler is None and noise == "brownian":
            lo, hi = brownian_range or (float(sigmas[sigmas > 0].min()), float(sigmas.max()))
            seed = generator.initial_seed() if generator is not None else int(torch.randint(0, 2 ** 62, ()).item())
            noise_sampler = BrownianTreeNoise(x0, lo, hi, seed)
        if noise_sampler is not None:
            z = noise_sampler(sigma, sigma_next).to(x.device, x.dtype)
        if sigma_next == 0.0:
            x_next = x0
            h = None
        else:
            h = math.log(sigma / sigma_next)
            decay = -math.expm1(-2.0 * h)  # 1 - e^{-2h}
            x_next = (sigma_next / sigma * math.exp(-h)) * x + decay * x0
            if old_x0 is not None and h_last is not None:
                r = h_last / h
                x_next = x_next + 0.5 * decay * (1.0 / r) * (x0 - old_x0)
            if noise_sampler is None:
                z = randn_like(x, generator)
            x_next = x_next + sigma_next * math.sqrt(decay) * z
        if guide is not None:
            x_next = guide.apply(x_next, grad, sigma, sigma_next)
        old_x0, h_last = x0, h
        x = _finish_step(x_next, i, n, sigma_next, consistency=consistency, generator=generator,
                         callback=callback)
    return x
