"""The built-in model as the retrieval prior's refiner, on its shipped weights and generated music.

A refiner must first do no harm: its estimate x0_hat may not carry more energy than
the signal (Jensen), refining an already right region must leave it nearly alone, and
no sampler may clip or move the level.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from engine.metrics import multires_log_mel_l1
from engine.models.energy_cap import band_edges, band_energy
from engine.prior.edits import PriorInfo
from engine.progress import ProgressTracker
from engine.render import get_model
from engine.request import PCMAudio, RenderRequest
from engine.tasks import _refine
from engine.training.synth import synth_music
from engine.training.train import band_limit
from tests.test_prior import RATE, periodic_song

LIGHT = 0.1   # the lightest refinement a request asks for (`--refine-strength 0.1`); the default is 0


@pytest.fixture(scope="module")
def builtin():
    return get_model("builtin")


@pytest.mark.parametrize("cutoff_hz", [None, 8000.0])
def test_the_refiners_estimate_never_carries_more_energy_than_the_signal(builtin, cutoff_hz):
    """E|x0_hat|^2 <= 1.1 E|x0|^2 in every band used, at every noise level (band-limited input too)."""
    clip = periodic_song(repeats=1)[:, :6 * RATE]
    if cutoff_hz is not None:
        clip = band_limit(clip, cutoff_hz)
    refiner = builtin.refiner(builtin.denoiser)
    bins = builtin.autoencoder.bins
    edges = band_edges(bins)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        y = builtin.encode(torch.from_numpy(clip)[None])
        y = torch.nn.functional.pad(y, (0, (-y.shape[-1]) % builtin.frame_multiple))
        e_clean, _ = band_energy(y, bins, edges)
        used = e_clean[0] > 1e-4 * e_clean[0].sum()
        for sigma in (0.05, 0.2, 0.5, 1.0, 2.0, 10.0):
            x = y + sigma * torch.randn(y.shape, generator=g)
            e_hat, _ = band_energy(refiner(x, torch.full((1,), sigma)), bins, edges)
            ratio = (e_hat[0] / e_clean[0].clamp_min(1e-12))[used]
            assert float(ratio.max()) <= 1.1, f"sigma {sigma}: {ratio.max():.2f}"
            if cutoff_hz is not None:   # bands the input does not have stay (almost) empty
                empty = ~used
                assert float(e_hat[0][empty].sum()) <= 1e-3 * float(e_clean[0].sum()) + 1e-9


def _refine_original(model, audio, *, strength, span="seams", sampler="ddim", steps=16):
    g0, g1 = 3 * RATE, 5 * RATE
    req = RenderRequest(task="infill", audio=(PCMAudio(audio, RATE),), start_s=3.0, end_s=5.0, steps=steps,
                        refine_strength=strength, refine_span=span, sampler=sampler)
    out = _refine(model, audio, audio, g0, g1, [g0, g1], req, torch.Generator().manual_seed(0),
                  ProgressTracker(100), PriorInfo("similarity"))
    return out.region, audio[:, g0:g1]


def test_refining_the_original_lightly_leaves_it_nearly_alone(builtin):
    """Generated music (notes, chords, noise hits): the gap moves by at most 0.1 log-mel L1 on average."""
    changes = []
    for seed in range(3):
        music = synth_music(8 * RATE, np.random.default_rng(seed)).astype(np.float32)
        region, truth = _refine_original(builtin, music, strength=LIGHT,
                                         span=builtin.default_refine_span, steps=builtin.default_steps)
        changes.append(multires_log_mel_l1(region, truth, RATE))
    assert np.mean(changes) <= 0.1, changes


def test_the_jensen_cap_is_what_keeps_the_refiner_near_the_identity(builtin):
    """Without the cap the same network moves the same gap much further (it passes noise through)."""
    music = synth_music(8 * RATE, np.random.default_rng(0)).astype(np.float32)
    kw = dict(strength=LIGHT, span=builtin.default_refine_span, steps=builtin.default_steps)
    capped = multires_log_mel_l1(*_refine_original(builtin, music, **kw), RATE)
    bare = dataclasses.replace(builtin, refiner=lambda d: d)
    uncapped = multires_log_mel_l1(*_refine_original(bare, music, **kw), RATE)
    assert capped < 0.8 * uncapped


@pytest.mark.parametrize("sampler", ["ddim", "ddpm", "heun"])
def test_no_sampler_clips_or_moves_the_level_when_refining(builtin, sampler):
    song = periodic_song(repeats=1)
    region, truth = _refine_original(builtin, song, strength=LIGHT,
                                     span=builtin.default_refine_span, sampler=sampler)
    level = 10 * np.log10(np.mean(region ** 2) / np.mean(truth ** 2))
    assert abs(level) <= 1.5
    assert np.mean(np.abs(region) >= 0.999) < 1e-4
