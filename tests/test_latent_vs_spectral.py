"""The latent-route autoencoder of bench/experiments/latent_vs_spectral.py: the shapes it promises, and that it can learn.

The full measurement (25 CPU minutes on the corpus) is in BENCHMARKS.md; this checks
the same code at a size that fits the test suite, on synthetic music.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.models.spectral import SpectralTransform
from engine.training.synth import synth_music

BENCH = Path(__file__).resolve().parent.parent / "bench" / "experiments" / "latent_vs_spectral.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("latent_vs_spectral", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["latent_vs_spectral"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("frames", [40, 41])
def test_latents_have_half_the_frame_rate_and_decode_to_the_input_shape(bench, frames):
    ae = bench.SpectralAutoencoder(bins=9, latent=6, width=32)
    z = torch.randn(2, 36, frames)
    assert ae.encode(torch.nn.functional.pad(z, (0, frames % 2))).shape == (2, 6, (frames + 1) // 2)
    assert ae(z).shape == z.shape


def test_the_loss_is_zero_only_for_a_perfect_reconstruction(bench):
    z = torch.randn(2, 36, 16)
    assert float(bench.ae_loss(z, z, 9)) == 0.0
    assert float(bench.ae_loss(0.5 * z, z, 9)) > 0.1


def test_a_few_steps_on_synthetic_music_lower_the_loss(bench):
    torch.manual_seed(0)
    transform = SpectralTransform(n_fft=64, hop=32)
    audio = torch.from_numpy(np.stack([synth_music(32 * 64, np.random.default_rng(s)) for s in range(4)]))
    z = transform.encode(audio)
    ae = bench.SpectralAutoencoder(bins=transform.bins, latent=16, width=64)
    opt = torch.optim.Adam(ae.parameters(), lr=3e-3)
    first = float(bench.ae_loss(ae(z), z, transform.bins))
    for _ in range(60):
        loss = bench.ae_loss(ae(z), z, transform.bins)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(bench.ae_loss(ae(z), z, transform.bins)) < 0.5 * first


@pytest.mark.parametrize("argv", [["--windows", "1"], ["--minutes", "0"]])
def test_a_budget_or_window_count_that_cannot_give_a_result_is_refused(bench, argv, capsys):
    with pytest.raises(SystemExit):
        bench.main(argv)
    assert "--windows >= 2" in capsys.readouterr().err


def test_without_a_corpus_it_says_how_to_build_one_before_training(bench, tmp_path):
    out = tmp_path / "out.json"
    with pytest.raises(FileNotFoundError, match="engine.training.corpus"):
        bench.main(["--data", str(tmp_path), "--minutes", "60", "--json", str(out)])
    assert not out.exists()
