"""Sampling-time guidance: losses on x0_hat, their gradient w.r.t. the noisy sample, and the step.

A `Guidance` is handed to every sampler. At each step it evaluates the denoiser
with gradients on, sums the active loss terms on x0_hat, and returns x0_hat with
grad_x d. How that gradient moves the sample (`step_mode`):

- "fixed": the method, literally (DDIM form): e_hat <- e_hat - xi s_t grad_{x_t} d and
  x_s = a_s x0_hat + s_s e_hat. In the VE view that is a move of
  -xi * sigma_next * sigma * grad_x d after the unguided update; the ancestral
  (DDPM) and Heun samplers apply the same move after their own update.
- "normalized": the same direction, with length xi * sigma_next * sqrt(numel)
  (a fixed fraction of the next noise level's norm), so one xi works across
  window lengths and loss scales.
- "posterior": Bayes' rule on the denoiser, D' = D - xi sigma^2 grad_x d. With d the
  exact negative log-likelihood and xi = 1 the ODE samplers then sample the exact
  posterior (checked against a Gaussian process in the tests).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import torch

from .schedule import sigma_to_t

LossFn = Callable[..., torch.Tensor]  # fn(x0_hat, sigma) -> scalar; sigma lets a loss be a likelihood


@dataclass(frozen=True)
class LossTerm:
    """One weighted loss on x0_hat, active for diffusion times t in [t_min, t_max]."""

    name: str
    fn: LossFn
    weight: float = 1.0
    t_min: float = 0.0
    t_max: float = 1.0

    def active(self, t: float) -> bool:
        return self.weight != 0.0 and self.t_min <= t <= self.t_max


@dataclass
class Guidance:
    """The weighted sum of loss terms and how its gradient steers the sampler."""

    terms: Sequence[LossTerm]
    scale: float
    step_mode: str = "fixed"
    last_losses: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.step_mode not in ("fixed", "normalized", "posterior"):
            raise ValueError(f"step_mode must be fixed, normalized or posterior, got {self.step_mode!r}")

    def active(self, sigma: float) -> bool:
        t = float(sigma_to_t(sigma))
        return self.scale != 0.0 and any(term.active(t) for term in self.terms)

    def loss(self, x0: torch.Tensor, sigma: float) -> torch.Tensor:
        t = float(sigma_to_t(sigma))
        total = x0.new_zeros(())
        for term in self.terms:
            if term.active(t):
                value = term.fn(x0, sigma)
                self.last_losses[term.name] = float(value.detach())
                total = total + term.weight * value
        return total

    def evaluate(self, denoiser: Callable, x: torch.Tensor, sigma: float,
                 cond: Optional[Any] = None) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """(x0_hat, grad_x d): one forward and one backward pass through the denoiser."""
        if not self.active(sigma):
            with torch.no_grad():
                return denoiser(x, _sig(sigma, x), cond), None
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            x0 = denoiser(xg, _sig(sigma, x), cond)
            d = self.loss(x0, sigma)
            (grad,) = torch.autograd.grad(d, xg)
        x0 = x0.detach()
        if self.step_mode == "posterior":
            return x0 - self.scale * sigma ** 2 * grad, None
        return x0, grad

    def apply(self, x_next: torch.Tensor, grad: Optional[torch.Tensor], sigma: float,
              sigma_next: float) -> torch.Tensor:
        """Move the updated sample against the gradient (no-op in posterior mode)."""
        if grad is None or sigma_next == 0.0:
            return x_next
        if self.step_mode == "fixed":
            return x_next - self.scale * sigma_next * sigma * grad
        norm = grad.norm()
        if not torch.isfinite(norm) or norm == 0:
            return x_next
        return x_next - self.scale * sigma_next * math.sqrt(grad.numel()) * grad / norm


def _sig(sigma: float, x: torch.Tensor) -> torch.Tensor:
    return torch.full((x.shape[0],), float(sigma), dtype=x.dtype, device=x.device)


# ---- losses -----------------------------------------------------------------------------

def masked_l1(target: torch.Tensor, mask: torch.Tensor, op: Optional[Callable] = None) -> LossFn:
    """||M (A(x0) - y)||_1, the method's reconstruction loss (a norm: steps do not shrink with length)."""
    def fn(x0: torch.Tensor, sigma: Optional[float] = None) -> torch.Tensor:
        pred = op(x0) if op is not None else x0
        return (mask * (pred - target)).abs().sum()
    return fn


def masked_l2(target: torch.Tensor, mask: torch.Tensor, op: Optional[Callable] = None) -> LossFn:
    """0.5 ||M (A(x0) - y)||^2."""
    def fn(x0: torch.Tensor, sigma: Optional[float] = None) -> torch.Tensor:
        pred = op(x0) if op is not None else x0
        return 0.5 * (mask * (pred - target)).pow(2).sum()
    return fn


def masked_mrstft(target: torch.Tensor, mask: torch.Tensor, op: Optional[Callable] = None,
                  fft_sizes: Sequence[int] = (512, 1024, 2048)) -> LossFn:
    """Multi-resolution STFT loss (spectral convergence + log magnitude) on the masked waveforms."""
    def fn(x0: torch.Tensor, sigma: Optional[float] = None) -> torch.Tensor:
        pred = op(x0) if op is not None else x0
        return multi_resolution_stft_loss(mask * pred, mask * target, fft_sizes)
    return fn


def multi_resolution_stft_loss(pred: torch.Tensor, target: torch.Tensor,
                               fft_sizes: Sequence[int] = (512, 1024, 2048)) -> torch.Tensor:
    p = pred.reshape(-1, pred.shape[-1])
    y = target.reshape(-1, target.shape[-1])
    total = pred.new_zeros(())
    for n in fft_sizes:
        if p.shape[-1] < n:
            continue
        win = torch.hann_window(n, device=p.device, dtype=p.dtype)
        sp = torch.stft(p, n, n // 4, window=win, return_complex=True).abs() + 1e-7
        sy = torch.stft(y, n, n // 4, window=win, return_complex=True).abs() + 1e-7
        sc = torch.linalg.norm(sy - sp) / (torch.linalg.norm(sy) + 1e-7)
        mag = (sy.log() - sp.log()).abs().mean()
        total = total + sc + mag
    return total * p.shape[-1] / 1000.0  # per-second-ish scale, comparable to the L1 norm's growth


def embedding_l2(embed: Callable[[torch.Tensor], torch.Tensor], reference: torch.Tensor,
                 op: Optional[Callable] = None) -> LossFn:
    """||E(A(x0)) - E(reference)||^2, the method's style loss."""
    def fn(x0: torch.Tensor, sigma: Optional[float] = None) -> torch.Tensor:
        e = embed(op(x0) if op is not None else x0)
        return (e - reference.to(e)).pow(2).sum()
    return fn


def embedding_cosine(embed: Callable[[torch.Tensor], torch.Tensor], reference: torch.Tensor,
                     op: Optional[Callable] = None) -> LossFn:
    """1 - cos(E(A(x0)), E(reference)), summed over the batch."""
    def fn(x0: torch.Tensor, sigma: Optional[float] = None) -> torch.Tensor:
        e = embed(op(x0) if op is not None else x0)
        ref = reference.to(e).expand_as(e)
        return (1 - torch.nn.functional.cosine_similarity(e, ref, dim=-1)).sum()
    return fn


RECON_LOSSES: dict[str, Callable[..., LossFn]] = {"l1": masked_l1, "l2": masked_l2, "mrstft": masked_mrstft}
EMBED_LOSSES: dict[str, Callable[..., LossFn]] = {"l2": embedding_l2, "cosine": embedding_cosine}
