"""Context conditioning of the built-in network.

A context model reads the clean latent of a window's known frames beside the noisy
input. It must start out as exactly the unconditional model it is tuned from, see
nothing of the frames marked unknown, train on the three kinds of window the tasks
produce, and be handed those frames by every task.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from engine.models.base import Model
from engine.models.builtin import ContextDenoiser, load_builtin
from engine.models.builtin_net import NetConfig, SpectralContext, SpectralUNet
from engine.models.spectral import SpectralTransform
from engine.render import render_audio
from engine.request import PCMAudio, RenderRequest
from engine.training.synth import synth_music
from engine.training.train import CONFIGS, Trainer, context_masks, main

RATE = 44100
SMALL = dict(in_channels=4 * 9, widths=(16, 16, 24), blocks=(1, 1, 1), emb_dim=16, groups=8, power_features=True)


def _randomise(net: torch.nn.Module, seed: int) -> None:
    """Give every parameter (zero-initialised output layers included) a random value."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(0.1 * torch.randn(p.shape, generator=gen))


def _context_net(seed: int = 0) -> SpectralUNet:
    net = SpectralUNet(NetConfig(**SMALL, context=True))
    _randomise(net, seed)
    return net.eval()


def test_a_context_net_tuned_from_unconditional_weights_starts_as_that_model(tmp_path):
    base = SpectralUNet(CONFIGS["tiny"].net)
    _randomise(base, 1)
    ckpt = tmp_path / "ckpt.pt"
    torch.save({"ema": base.state_dict(), "bin_scale": torch.ones(513), "step": 7}, ckpt)
    trainer = Trainer(CONFIGS["tiny_ctx"], tmp_path / "run", tmp_path / "no-corpus")
    trainer.init_from(ckpt)
    x, t = torch.randn(2, 2052, 40), torch.tensor([0.3, 0.8])
    cond = SpectralContext(latent=torch.randn(1, 2052, 40), mask=torch.ones(1, 1, 40))
    with torch.no_grad():
        expected = base(x, t)
        assert torch.allclose(trainer.net(x, t), expected, atol=1e-6)
        assert torch.allclose(trainer.net(x, t, cond), expected, atol=1e-6)
        assert torch.allclose(trainer.ema(x, t, cond), expected, atol=1e-6)
    assert torch.equal(trainer.transform.bin_scale, torch.ones(513))


def test_init_from_refuses_a_checkpoint_of_another_network(tmp_path):
    other = SpectralUNet(NetConfig(**SMALL))
    ckpt = tmp_path / "ckpt.pt"
    torch.save({"ema": other.state_dict(), "bin_scale": torch.ones(513), "step": 0}, ckpt)
    trainer = Trainer(CONFIGS["tiny_ctx"], tmp_path / "run", tmp_path / "no-corpus")
    with pytest.raises((ValueError, RuntimeError)):
        trainer.init_from(ckpt)


def test_frames_marked_unknown_are_invisible_and_known_ones_matter():
    net = _context_net()
    gen = torch.Generator().manual_seed(2)
    x, t = torch.randn(1, 36, 32, generator=gen), torch.tensor([0.5])
    latent = torch.randn(1, 36, 32, generator=gen)
    mask = torch.ones(1, 1, 32)
    mask[..., 10:20] = 0
    changed_gap = latent.clone()
    changed_gap[..., 10:20] = 100 * torch.randn(1, 36, 10, generator=gen)
    changed_known = latent.clone()
    changed_known[..., 2] += 1.0
    with torch.no_grad():
        ref = net(x, t, SpectralContext(latent, mask))
        assert torch.equal(net(x, t, SpectralContext(changed_gap, mask)), ref)
        assert float((net(x, t, SpectralContext(changed_known, mask)) - ref).abs().max()) > 1e-4
        # No context at all is the same as every frame unknown.
        assert torch.allclose(net(x, t), net(x, t, SpectralContext(latent, torch.zeros_like(mask))), atol=1e-6)


def test_a_net_without_context_refuses_one():
    net = SpectralUNet(NetConfig(**SMALL))
    with pytest.raises(ValueError, match="no context"):
        net(torch.randn(1, 36, 16), torch.tensor([0.5]), SpectralContext(torch.randn(1, 36, 16), torch.ones(1, 1, 16)))


def test_a_context_of_the_wrong_shape_is_refused():
    net = _context_net()
    with pytest.raises(ValueError, match="do not match"):
        net(torch.randn(1, 36, 16), torch.tensor([0.5]), SpectralContext(torch.randn(1, 36, 15), torch.ones(1, 1, 15)))


def test_training_windows_are_unconditional_infill_or_continuation_in_the_configured_shares():
    masks = context_masks(np.random.default_rng(0), 3000, 256, (0.2, 0.5, 0.3))[:, 0].numpy()
    kinds = []
    for m in masks:
        edges = np.flatnonzero(np.diff(m))
        if not m.any():
            kinds.append("none")
        elif len(edges) == 2 and m[0] == 1 and m[-1] == 1:
            kinds.append("gap")           # known, one unknown run, known
            assert 256 // 16 <= edges[1] - edges[0] <= (256 * 5) // 8
        elif len(edges) == 1 and m[0] == 1 and m[-1] == 0:
            kinds.append("prefix")        # known, then unknown to the end
        else:
            raise AssertionError(f"unexpected mask with edges {edges}")
    share = {k: kinds.count(k) / len(kinds) for k in ("none", "gap", "prefix")}
    assert abs(share["none"] - 0.2) < 0.03 and abs(share["gap"] - 0.5) < 0.03 and abs(share["prefix"] - 0.3) < 0.03


def test_the_context_config_trains_and_exports_a_context_model(tmp_path):
    threads = torch.get_num_threads()
    try:
        main(["--config", "tiny_ctx", "--out", str(tmp_path), "--data", str(tmp_path / "no-corpus"),
              "--max-steps", "12"])
    finally:
        torch.set_num_threads(threads)
    model = load_builtin(tmp_path)
    assert isinstance(model.denoiser, ContextDenoiser)
    assert model.info["training"]["config"] == "tiny_ctx"


class _Recorder(torch.nn.Module):
    """A context net that records the cond it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.net = SpectralUNet(NetConfig(power_features=True, context=True, widths=(16, 16), blocks=(1, 1),
                                          emb_dim=16, groups=8))
        self.cfg = self.net.cfg
        self.seen: list[SpectralContext | None] = []

    def forward(self, x, t, cond=None):
        self.seen.append(cond)
        return self.net(x, t, cond)


def test_infill_hands_a_context_model_the_clean_known_frames_and_nothing_of_the_gap():
    transform = SpectralTransform()
    recorder = _Recorder()
    model = Model(name="ctx", denoiser=ContextDenoiser(recorder, sample_rate=RATE, channels=2052),
                  autoencoder=transform, default_steps=3)
    audio = synth_music(3 * RATE, np.random.default_rng(4))
    req = RenderRequest(task="infill", audio=(PCMAudio(audio, RATE),), start_s=1.0, end_s=2.0, steps=3,
                        context_s=1.0, model="ctx")
    render_audio(req, model=model)
    assert len(recorder.seen) >= 3 and all(c is not None for c in recorder.seen)
    cond = recorder.seen[0]
    mask = cond.mask[0, 0]
    frames = mask.shape[0]
    # Frame k is centred on sample k * 512: frames well inside the gap are unknown, those well outside known.
    gap = [k for k in range(frames) if 1.0 * RATE + 1024 < k * 512 < 2.0 * RATE - 1024]
    outside = [k for k in range(frames) if k * 512 < 1.0 * RATE - 1024 or 2.0 * RATE + 1024 < k * 512 < 3.0 * RATE - 1024]
    assert gap and outside
    assert float(mask[gap].abs().max()) == 0 and float(mask[outside].min()) == 1
    assert float(cond.latent[0][:, gap].abs().max()) == 0
    clean = transform.encode(torch.from_numpy(audio)[None])
    assert torch.allclose(cond.latent[0][:, outside], clean[0][:, outside], atol=1e-4)


def test_the_shipped_model_reads_the_context_to_fill_a_gap():
    """With the context, the shipped network's estimate of a gap is closer to the truth than without it."""
    model = load_builtin()
    if not isinstance(model.denoiser, ContextDenoiser):
        pytest.fail("the shipped built-in weights are not a context model")
    gen = torch.Generator().manual_seed(5)
    errs = {"context": [], "none": []}
    for seed in (20, 21, 22, 23):
        z = model.encode(torch.from_numpy(synth_music(4 * RATE, np.random.default_rng(seed)))[None])
        frames = z.shape[-1]
        mask = torch.ones(1, 1, frames)
        mask[..., frames // 3:2 * frames // 3] = 0
        x = z + 2.0 * torch.randn(z.shape, generator=gen)
        with torch.no_grad():
            with_ctx = model.denoiser(x, torch.tensor([2.0]), model.denoiser.context_conditioning(z, mask))
            without = model.denoiser(x, torch.tensor([2.0]))
        gap = (1 - mask).bool().expand_as(z)
        errs["context"].append(float(((with_ctx - z)[gap] ** 2).mean()))
        errs["none"].append(float(((without - z)[gap] ** 2).mean()))
    assert np.mean(errs["context"]) < 0.9 * np.mean(errs["none"]), errs
