"""engine.metrics gives the numbers a reader expects on signals whose answer is known."""
from __future__ import annotations

import numpy as np
import pytest

from engine.metrics import frechet_distance, multires_log_mel_l1, seam_continuity, seam_stats

RATE = 44100


def _noise(seconds: float, seed: int) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal((2, int(seconds * RATE)))).astype(np.float32)


def test_log_mel_l1_is_zero_for_identical_audio_and_ln2_for_double_amplitude():
    x = _noise(1.0, 0)
    assert multires_log_mel_l1(x, x, RATE) == 0.0
    assert multires_log_mel_l1(2 * x, x, RATE) == pytest.approx(np.log(2), abs=1e-3)


def test_log_mel_l1_rejects_different_shapes():
    with pytest.raises(ValueError, match="shapes differ"):
        multires_log_mel_l1(_noise(1.0, 0), _noise(0.5, 0), RATE)


def test_frechet_distance_is_zero_for_one_set_and_the_squared_mean_shift_for_a_translated_one():
    a = np.random.default_rng(0).standard_normal((200, 5))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    shift = np.array([1.0, 2.0, 0.0, 0.0, 0.0])
    assert frechet_distance(a, a + shift) == pytest.approx(5.0, abs=1e-6)


def test_frechet_distance_of_scaled_gaussians():
    # N(0, I) vs N(0, 4 I) in 3 dims: tr(I + 4I - 2 * 2I) = 3.
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((20000, 3)), 2 * rng.standard_normal((20000, 3))
    assert frechet_distance(a, b) == pytest.approx(3.0, rel=0.05)


def test_seam_stats_measure_a_6_db_step_and_ignore_a_continuous_tone():
    t = np.arange(RATE) / RATE
    tone = np.stack([np.sin(2 * np.pi * 440 * t)] * 2).astype(np.float32) * 0.1
    smooth = seam_stats(tone, RATE // 2, RATE)
    assert smooth.level_jump_db < 0.1 and smooth.flux < 0.05
    step = tone.copy()
    step[:, RATE // 2:] *= 2
    assert seam_stats(step, RATE // 2, RATE).level_jump_db == pytest.approx(20 * np.log10(2), abs=0.1)


def test_seam_continuity_compares_the_edit_with_the_original_at_the_same_places():
    x = _noise(2.0, 3)
    edited = x.copy()
    edited[:, RATE // 2:RATE] = 0.0  # a silent gap: big jumps at both seams
    out = seam_continuity(edited, x, [RATE // 2, RATE], RATE)
    assert out["level_jump_db_original"] < 1.0
    assert out["level_jump_db"] > 40.0
    assert out["flux"] > 5 * out["flux_original"]


def test_seam_too_close_to_the_edge_is_an_error():
    with pytest.raises(ValueError, match="needs"):
        seam_stats(_noise(1.0, 0), 100, RATE)
