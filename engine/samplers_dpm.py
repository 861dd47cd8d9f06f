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

from .samplers import Step, randn_like, sample

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


def dpmpp_2m_sde_step(s: Step, noise: str = "gaussian", noise_sampler: Optional[NoiseSampler] = None,
                      brownian_range: Optional[tuple[float, float]] = None) -> torch.Tensor:
    """One DPM-Solver++(2M) SDE step (midpoint form, eta = 1); `s.state` keeps the previous x0_hat and h."""
    st = s.state
    if "noise" not in st:
        if noise_sampler is None and noise == "brownian":
            lo, hi = brownian_range or (float(s.sigmas[s.sigmas > 0].min()), float(s.sigmas.max()))
            g = s.generator
            seed = g.initial_seed() if g is not None else int(torch.randint(0, 2 ** 62, ()).item())
            noise_sampler = BrownianTreeNoise(s.x0, lo, hi, seed)
        st["noise"] = noise_sampler
    sampler = st["noise"]
    z = sampler(s.sigma, s.sigma_next).to(s.x.device, s.x.dtype) if sampler is not None else None
    old_x0, h_last = st.get("old_x0"), st.get("h_last")
    st["old_x0"] = s.x0
    if s.sigma_next == 0.0:
        st["h_last"] = None
        return s.x0
    h = math.log(s.sigma / s.sigma_next)
    st["h_last"] = h
    decay = -math.expm1(-2.0 * h)  # 1 - e^{-2h}
    x_next = (s.sigma_next / s.sigma * math.exp(-h)) * s.x + decay * s.x0
    if old_x0 is not None and h_last is not None:
        r = h_last / h
        x_next = x_next + 0.5 * decay * (1.0 / r) * (s.x0 - old_x0)
    if z is None:
        z = randn_like(s.x, s.generator)
    return x_next + s.sigma_next * math.sqrt(decay) * z


def sample_dpmpp_2m_sde(denoiser: Callable, x: torch.Tensor, sigmas: torch.Tensor, *,
                        noise: str = "gaussian", noise_sampler: Optional[NoiseSampler] = None,
                        brownian_range: Optional[tuple[float, float]] = None, **hooks: Any) -> torch.Tensor:
    """DPM-Solver++(2M) SDE (Lu et al. 2022) on the shared loop; guidance moves the sample after each step.

    `noise`: "gaussian" (fresh draws from `generator`) or "brownian" (a Brownian tree on
    `brownian_range`, default the schedule's own range, seeded by `generator.initial_seed()`).
    `hooks` are `engine.samplers.sample`'s guide, consistency, cond, callback, cancel, generator.
    """
    if noise not in ("gaussian", "brownian"):
        raise ValueError(f"noise must be 'gaussian' or 'brownian', got {noise!r}")
    return sample(lambda s: dpmpp_2m_sde_step(s, noise, noise_sampler, brownian_range), denoiser, x, sigmas,
                  **hooks)
