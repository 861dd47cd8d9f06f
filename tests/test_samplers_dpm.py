"""DPM-Solver++(2M) SDE and the native schedules: exact on Gaussian data, cancellable, hooks honoured."""
from __future__ import annotations

import math

import pytest
import torch

from engine.errors import Cancelled
from engine.models.base import Model
from engine.models.schedules import native_sigmas
from engine.progress import CancelToken
from engine.samplers_dpm import get_sigmas_exponential, sample_dpmpp_2m_sde

C = 0.5  # data standard deviation


class GaussianDenoiser:
    """The exact denoiser for x0 ~ N(0, C^2): D(x, s) = x C^2 / (C^2 + s^2)."""

    sample_rate, channels, sigma_data = 44100, 1, C

    def __call__(self, x, sigma, cond=None):
        s = sigma.reshape(-1, *([1] * (x.ndim - 1)))
        return x * C ** 2 / (C ** 2 + s ** 2)


@pytest.mark.parametrize("noise", ["gaussian", "brownian"])
def test_samples_gaussian_data_with_the_right_spread(noise) -> None:
    if noise == "brownian":
        pytest.importorskip("torchsde")
    sigmas = get_sigmas_exponential(30, 0.02, 80.0)
    g = torch.Generator().manual_seed(0)
    x = float(sigmas[0]) * torch.randn(2000, 1, 16, generator=g)
    out = sample_dpmpp_2m_sde(GaussianDenoiser(), x, sigmas, generator=torch.Generator().manual_seed(1), noise=noise)
    assert abs(float(out.std()) - C) < 0.03 * C
    assert abs(float(out.mean())) < 0.01


def test_a_deterministic_sampler_would_not_pass_the_spread_test() -> None:
    """Sanity of the test above: dropping the SDE noise shrinks the spread far below C."""
    sigmas = get_sigmas_exponential(30, 0.02, 80.0)
    x = float(sigmas[0]) * torch.randn(2000, 1, 16, generator=torch.Generator().manual_seed(0))
    zero = sample_dpmpp_2m_sde(GaussianDenoiser(), x, sigmas, noise_sampler=lambda s, t: torch.zeros_like(x))
    assert float(zero.std()) < 0.5 * C


def test_callback_cancel_and_bad_noise() -> None:
    sigmas = get_sigmas_exponential(5, 0.3, 500.0)
    x = torch.randn(1, 1, 8, generator=torch.Generator().manual_seed(0)) * 500
    steps = []
    sample_dpmpp_2m_sde(GaussianDenoiser(), x, sigmas, callback=lambda i, n: steps.append((i, n)),
                        generator=torch.Generator().manual_seed(0))
    assert steps == [(i, 5) for i in range(1, 6)]
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        sample_dpmpp_2m_sde(GaussianDenoiser(), x, sigmas, cancel=token)
    with pytest.raises(ValueError, match="noise"):
        sample_dpmpp_2m_sde(GaussianDenoiser(), x, sigmas, noise="pink")


def test_native_schedules() -> None:
    sao = Model(name="sao", denoiser=GaussianDenoiser(), info={"schedule": "exponential", "sigma_min": 0.3,
                                                                "sigma_max": 500.0})
    s = native_sigmas(sao, 10)
    assert len(s) == 11 and float(s[-1]) == 0.0
    assert math.isclose(float(s[0]), 500.0, rel_tol=1e-6) and math.isclose(float(s[-2]), 0.3, rel_tol=1e-6)
    ratios = s[:-1][:-1] / s[:-1][1:]
    assert float(ratios.std()) < 1e-4          # evenly spaced in log sigma
    sa3 = Model(name="sa3", denoiser=GaussianDenoiser(), info={"schedule": "logsnr"})
    f = native_sigmas(sa3, 8)
    t = f / (1 + f)                             # back to flow time
    assert float(t[0]) > 0.99999 and float(t[-1]) == 0.0 and bool((t[:-1] > t[1:]).all())
    assert math.isclose(float(t[1]), 1 / (1 + math.exp(2.0 - 0.875 * 8.2)), rel_tol=1e-5)  # sigmoid(-logsnr)
    plain = Model(name="x", denoiser=GaussianDenoiser())
    assert len(native_sigmas(plain, 4)) == 5
