"""GPU speed settings: the eager fallback and bf16 on the tiny random Stable Audio DiT (CPU)."""
from __future__ import annotations

import pytest
import torch

from engine.models.speed import EagerFallback, SpeedSetup, optimise


def test_eager_fallback_switches_once_and_keeps_results() -> None:
    calls = {"compiled": 0, "eager": 0}

    def broken(x):
        calls["compiled"] += 1
        raise RuntimeError("no CUDA graphs here")

    def eager(x):
        calls["eager"] += 1
        return x * 2

    setup = SpeedSetup(device="cpu", dtype="float32", compiled=True)
    f = EagerFallback(broken, eager, setup)
    assert f(torch.tensor(3.0)).item() == 6.0
    assert f(torch.tensor(4.0)).item() == 8.0
    assert calls == {"compiled": 1, "eager": 2}
    assert setup.compiled is False and "RuntimeError: no CUDA graphs here" in setup.fallback_reason


def test_optimise_bf16_keeps_the_denoiser_close_to_fp32() -> None:
    pytest.importorskip("diffusers")
    from support.random_init import TINY, build_stable_audio_components
    from engine.models.stable_audio import model_from_components

    def build():
        comps = build_stable_audio_components(TINY, seed=0, text_encoder=False)
        return model_from_components(comps, dict(comps.pop("scheduler").config), name="tiny")

    ref, fast = build(), build()
    setup = optimise(fast, device="cpu", dtype=torch.bfloat16, cuda_graphs=False)
    assert setup.dtype == "bfloat16" and setup.attention == ["StableAudioAttnProcessor2_0"]
    assert next(fast.denoiser.transformer.parameters()).dtype == torch.bfloat16
    x = torch.randn(1, TINY.latent_channels, 16, generator=torch.Generator().manual_seed(0)) * 3
    with torch.no_grad():
        a, b = ref.denoiser(x, torch.tensor([2.0])), fast.denoiser(x, torch.tensor([2.0]))
    assert b.dtype == torch.float32
    rel = float((a - b).norm() / a.norm())
    assert 0 < rel < 0.05


def test_a_failing_compiled_backward_falls_back_at_probe_time(monkeypatch) -> None:
    pytest.importorskip("diffusers")
    import engine.models.speed as speed
    from support.random_init import TINY, build_stable_audio_components
    from engine.models.stable_audio import model_from_components

    comps = build_stable_audio_components(TINY, seed=0, text_encoder=False)
    model = model_from_components(comps, dict(comps.pop("scheduler").config), name="tiny")
    original = model.denoiser.transformer.forward

    def fake_compile(fn, **kw):
        def compiled(*a, **k):
            out = fn(*a, **k)
            # fine forward, broken backward: like a graph that cannot replay its backward
            return (out[0] + _Boom.apply(out[0]),) + tuple(out[1:])
        return compiled

    monkeypatch.setattr(speed.torch, "compile", fake_compile)
    setup = speed.optimise(model, device="cpu", dtype=torch.float32, probe_frames=8)
    assert setup.compiled is False and "backward replay failed" in setup.fallback_reason
    assert model.denoiser.transformer.forward == original      # eager again
    assert setup.frame_multiple == 1                            # no shape bucketing without compilation


def test_compiled_models_pad_windows_to_a_few_shapes(monkeypatch) -> None:
    pytest.importorskip("diffusers")
    import engine.models.speed as speed
    from support.random_init import TINY, build_stable_audio_components
    from engine.models.stable_audio import model_from_components

    comps = build_stable_audio_components(TINY, seed=0, text_encoder=False)
    model = model_from_components(comps, dict(comps.pop("scheduler").config), name="tiny")
    monkeypatch.setattr(speed.torch, "compile", lambda fn, **kw: fn)   # "compiles" to itself
    setup = speed.optimise(model, device="cpu", dtype=torch.float32, probe_frames=8, frame_bucket=16)
    assert setup.compiled and setup.frame_multiple == 16 and model.frame_multiple == 16


class _Boom(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return torch.zeros_like(x)

    @staticmethod
    def backward(ctx, g):
        raise RuntimeError("backward replay failed")
