"""Specification of the style embedders: the built-in DSP embedder and the name registry."""
from __future__ import annotations

import math

import pytest
import torch

from engine.embedders import Embedder, Resample, load_embedder
from engine.embedders.dsp import GROUPS, DSPEmbedder
from engine.errors import ModelNotFound

SR = 44100


@pytest.fixture(scope="module")
def emb() -> DSPEmbedder:
    return DSPEmbedder()


def _stereo(mono: torch.Tensor) -> torch.Tensor:
    return torch.stack([mono, mono])[None].float()


def _sine(hz: float, seconds: float, amp: float = 0.3) -> torch.Tensor:
    t = torch.arange(int(SR * seconds), dtype=torch.float64) / SR
    return amp * torch.sin(2 * math.pi * hz * t)


def _saw(hz: float, seconds: float, amp: float = 0.2) -> torch.Tensor:
    t = torch.arange(int(SR * seconds), dtype=torch.float64) / SR
    return amp * (2 * torch.remainder(hz * t, 1.0) - 1)


def _one_pole_lowpass(x: torch.Tensor, cutoff_hz: float) -> torch.Tensor:
    a = math.exp(-2 * math.pi * cutoff_hz / SR)
    # y[n] = (1 - a) x[n] + a y[n-1], solved in closed form by an FFT convolution with a^k.
    n = x.shape[-1]
    h = (1 - a) * a ** torch.arange(n, dtype=torch.float64)
    return torch.fft.irfft(torch.fft.rfft(x, 2 * n) * torch.fft.rfft(h, 2 * n), 2 * n)[:n]


def test_shape_dtype_and_protocol(emb: DSPEmbedder) -> None:
    x = torch.randn(3, 2, SR // 2, generator=torch.Generator().manual_seed(0)) * 0.1
    y = emb(x)
    assert isinstance(emb, Embedder)
    assert emb.sample_rate == 44100
    assert y.shape == (3, emb.dim) and emb.dim == 64 + 64 + 14 + 120 + 12
    assert y.dtype == torch.float32 and torch.isfinite(y).all()
    # the group slices tile the vector in order
    assert [emb.slices[g].start for g in GROUPS] == [0, 64, 128, 142, 262]


def test_rejects_bad_input(emb: DSPEmbedder) -> None:
    with pytest.raises(ValueError, match="at least"):
        emb(torch.zeros(1, 2, 1000))
    with pytest.raises(ValueError, match="batch, channels, samples"):
        emb(torch.zeros(2, SR))


def test_deterministic_batch_independent_and_mid(emb: DSPEmbedder) -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 2, SR, generator=g) * 0.1
    a = emb(x)
    b = DSPEmbedder()(x)
    assert torch.equal(a, b)  # a fresh instance has the same constants
    import engine.embedders.dsp as dsp
    dsp._CALIBRATION.clear()
    assert torch.equal(DSPEmbedder()(x), a)  # and so does a recalibration from scratch
    alone = emb(x[1:2])
    assert torch.allclose(alone, a[1:2], atol=1e-5, rtol=1e-5)
    # stereo is averaged to mid: swapping channels or moving everything into the mid changes nothing
    swapped = emb(x.flip(1))
    assert torch.allclose(swapped, a, atol=1e-5, rtol=1e-5)
    mid = x.mean(dim=1, keepdim=True).expand(-1, 2, -1)
    assert torch.allclose(emb(mid), a, atol=1e-4, rtol=1e-4)


def test_gradient_matches_finite_differences() -> None:
    emb = DSPEmbedder()
    g = torch.Generator().manual_seed(2)
    n = emb.min_samples + 2000
    tone = _saw(220.0, 1.0)[:n][None, None].expand(1, 2, n)
    x = (tone + 0.05 * torch.randn(1, 2, n, generator=g, dtype=torch.float64)).clone().requires_grad_(True)
    w = torch.randn(emb.dim, generator=g, dtype=torch.float64)
    # fast_mode checks random projections u^T J v numerically against autograd
    assert torch.autograd.gradcheck(lambda a: emb(a) @ w, (x,), fast_mode=True, eps=1e-6, atol=1e-4, rtol=1e-3)
    # and the gradient is not trivially zero
    (emb(x) @ w).sum().backward()
    assert x.grad is not None and x.grad.abs().max() > 1e-3


def test_different_timbres_are_farther_apart_than_excerpts_of_one_sound(emb: DSPEmbedder) -> None:
    g = torch.Generator().manual_seed(3)
    seconds = 3.0
    sounds = {
        "sine": _sine(440.0, seconds),
        "noise": 0.1 * torch.randn(int(SR * seconds), generator=g, dtype=torch.float64),
        "filtered_saw": _one_pole_lowpass(_saw(110.0, seconds), 800.0),
    }
    first = {k: emb(_stereo(v[: SR]))[0] for k, v in sounds.items()}
    second = {k: emb(_stereo(v[2 * SR:]))[0] for k, v in sounds.items()}
    same = max(float((first[k] - second[k]).norm()) for k in sounds)
    different = min(float((first[a] - first[b]).norm()) for a in sounds for b in sounds if a < b)
    assert same < 0.25
    assert different > 1.5
    assert different > 6 * same


def test_groups_are_comparable_in_scale(emb: DSPEmbedder) -> None:
    """No group dominates the distance between two unlike sounds just because of its units or size."""
    g = torch.Generator().manual_seed(4)
    xa = _stereo(_one_pole_lowpass(_saw(98.0, 1.0), 2000.0))
    xb = _stereo(0.05 * torch.randn(SR, generator=g, dtype=torch.float64))
    a, b = emb(xa)[0], emb(xb)[0]
    share = {k: float((a[sl] - b[sl]).pow(2).sum()) for k, sl in emb.slices.items()}
    total = sum(share.values())
    assert max(share.values()) / total < 0.65
    assert min(share.values()) / total > 0.01
    # without the normalisation, log-mel means would swamp chroma by orders of magnitude
    fa, fb = emb.features(xa), emb.features(xb)
    raw = {k: float((fa[k] - fb[k]).pow(2).sum()) for k in GROUPS}
    raw_total = sum(raw.values())
    assert raw["mel_mean"] / raw_total > 0.8 and raw["chroma"] / raw_total < 1e-3


def test_chroma_follows_transposition(emb: DSPEmbedder) -> None:
    a3 = emb.features(_stereo(_saw(220.0, 1.0)))["chroma"][0]
    c4 = emb.features(_stereo(_saw(220.0 * 2 ** (3 / 12), 1.0)))["chroma"][0]
    assert int(a3.argmax()) == 9 and int(c4.argmax()) == 0  # A and C, with C = 0
    rolled = torch.roll(a3, 3)
    cos = torch.nn.functional.cosine_similarity
    assert float(cos(c4, rolled, dim=0)) > 0.95
    assert float(cos(c4, a3, dim=0)) < 0.6
    assert abs(float(a3.sum()) - 1.0) < 1e-5


def test_registry() -> None:
    assert isinstance(load_embedder("dsp"), DSPEmbedder)
    with pytest.raises(ModelNotFound) as err:
        load_embedder("nope")
    assert err.value.code == "model_not_found" and "dsp" in str(err.value)
    with pytest.raises(ModelNotFound, match="local weight file"):
        load_embedder("passt")


def test_resample_keeps_a_tone_and_length() -> None:
    x = _sine(1000.0, 0.5)[None]
    y = Resample(44100, 32000)(x)
    assert y.shape == (1, math.ceil(x.shape[-1] * 32000 / 44100))
    t = torch.arange(y.shape[-1], dtype=torch.float64) / 32000
    ref = 0.3 * torch.sin(2 * math.pi * 1000.0 * t)
    inner = slice(200, -200)
    assert float((y[0, inner] - ref[inner]).abs().max()) < 2e-3
    # upsampling (44.1 -> 48 kHz, the CLAP rate) keeps the tone too
    up = Resample(44100, 48000)(x)
    t48 = torch.arange(up.shape[-1], dtype=torch.float64) / 48000
    assert up.shape[-1] == 24000
    assert float((up[0, inner] - 0.3 * torch.sin(2 * math.pi * 1000.0 * t48)[inner]).abs().max()) < 2e-3
    # a tone above the new Nyquist is removed, not aliased
    hi = Resample(44100, 32000)(_sine(18000.0, 0.5)[None])
    assert float(hi[0, inner].abs().max()) < 0.01
