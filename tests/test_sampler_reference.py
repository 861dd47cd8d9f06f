"""The engine's DDIM + guidance equals a literal transcription of the method's algorithm."""
import math

import pytest
import torch

from engine.denoiser import VPredictionDenoiser
from engine.guidance import Guidance, LossTerm, masked_l1
from engine.samplers import sample_ddim
from engine.schedule import get_sigmas_cosine


class ToyVNet(torch.nn.Module):
    """A small random v-prediction network (conv + time embedding)."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv1 = torch.nn.Conv1d(2, 8, 5, padding=2)
        self.conv2 = torch.nn.Conv1d(8, 2, 5, padding=2)
        self.t_proj = torch.nn.Linear(1, 8)
        for p in self.parameters():
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)

    def forward(self, x_t, t):
        h = torch.tanh(self.conv1(x_t) + self.t_proj(t.reshape(-1, 1).to(x_t.dtype))[..., None])
        return self.conv2(h)


def reference_ddim_with_guidance(net, z, y, mask, xi, steps, t_max=0.999):
    """Line by line: the method's DDIM with reconstruction guidance, in VP form."""
    ts = torch.linspace(t_max, 0.0, steps + 1, dtype=torch.float64)
    x_t = z.clone()                                   # x_T = z at t_max (VP)
    for i in range(steps):
        t, s = ts[i], ts[i + 1]
        a_t, s_t = math.cos(math.pi * t / 2), math.sin(math.pi * t / 2)
        a_s, s_s = math.cos(math.pi * s / 2), math.sin(math.pi * s / 2)
        x_t = x_t.detach().requires_grad_(True)
        v = net(x_t, torch.full((1,), float(t), dtype=torch.float64))
        x0_hat = a_t * x_t - s_t * v                  # x0 from v
        e_hat = s_t * x_t + a_t * v                   # eps from v
        d = (mask * (x0_hat - y)).abs().sum()         # L1 reconstruction loss
        grad = torch.autograd.grad(d, x_t)[0]         # gradient w.r.t. x_t through the network
        e_hat = e_hat - xi * s_t * grad               # guided eps
        x_t = (a_s * x0_hat + s_s * e_hat).detach()   # DDIM update
    return x_t


def test_engine_ddim_matches_the_literal_algorithm_to_1e_5():
    net = ToyVNet().double()
    g = torch.Generator().manual_seed(1)
    n = 64
    z = torch.randn(1, 2, n, generator=g, dtype=torch.float64)
    y = torch.randn(1, 2, n, generator=g, dtype=torch.float64) * 0.5
    mask = torch.ones(1, 1, n, dtype=torch.float64)
    mask[..., 20:44] = 0
    xi, steps = 3e-2, 25

    expected = reference_ddim_with_guidance(net, z, y, mask, xi, steps)

    denoiser = VPredictionDenoiser(net, sample_rate=44100, channels=2, sigma_data=1.0)
    sigmas = get_sigmas_cosine(steps)
    a_T = math.cos(math.pi * 0.999 / 2)
    guide = Guidance([LossTerm("l1", masked_l1(y, mask))], scale=xi, step_mode="fixed")
    x = sample_ddim(denoiser, z / a_T, sigmas, guide=guide)   # VE start = VP start / a_T

    assert (x - expected).abs().max() < 1e-5
    # and guidance really acted: the unguided result differs by far more than the tolerance.
    unguided = sample_ddim(denoiser, z / a_T, sigmas)
    assert (unguided - expected).abs().max() > 1e-2


def test_guidance_gradient_matches_finite_differences():
    net = ToyVNet().double()
    denoiser = VPredictionDenoiser(net, sample_rate=44100, channels=2)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1, 2, 16, generator=g, dtype=torch.float64)
    y = torch.randn(1, 2, 16, generator=g, dtype=torch.float64)
    mask = torch.ones(1, 1, 16, dtype=torch.float64)
    guide = Guidance([LossTerm("l2", lambda x0, s: 0.5 * (mask * (x0 - y)).pow(2).sum())], scale=1.0)
    _, grad = guide.evaluate(denoiser, x, 0.7)
    eps = 1e-6
    for idx in [(0, 0, 3), (0, 1, 10), (0, 0, 15)]:
        xp, xm = x.clone(), x.clone()
        xp[idx] += eps
        xm[idx] -= eps
        with torch.no_grad():
            lp = guide.loss(denoiser(xp, torch.tensor([0.7], dtype=torch.float64)), 0.7)
            lm = guide.loss(denoiser(xm, torch.tensor([0.7], dtype=torch.float64)), 0.7)
        assert float(grad[idx]) == pytest.approx(float((lp - lm) / (2 * eps)), rel=1e-5, abs=1e-8)
