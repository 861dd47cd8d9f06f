"""engine.metrics gives the numbers a reader expects on signals whose answer is known."""
from __future__ import annotations

import numpy as np
import pytest

from engine.metrics import (
    beat_offset_ms,
    beat_period_s,
    detectability,
    dsp_features,
    frechet_distance,
    hf_share_error_db,
    level_dip_db,
    level_error_db,
    multires_log_mel_l1,
    onset_correlation,
    seam_continuity,
    seam_stats,
    waveform_correlation,
)
from engine.regions import equal_power_curves

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


def _clicks(seconds: float, bpm: float, offset_s: float = 0.0, seed: int = 0) -> np.ndarray:
    """A click track: 5 ms noise bursts on every beat starting at `offset_s`."""
    n = int(seconds * RATE)
    x = np.zeros(n, np.float32)
    burst = 0.5 * np.random.default_rng(seed).standard_normal(int(0.005 * RATE)).astype(np.float32)
    for t in np.arange(offset_s, seconds, 60.0 / bpm):
        i = int(round(t * RATE))
        x[i:i + len(burst)] = burst[:n - i]
    return np.stack([x, x])


def _tones(seconds: float, *parts: tuple[float, float]) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    x = sum(a * np.sin(2 * np.pi * f * t) for f, a in parts)
    return np.stack([x, x]).astype(np.float32)


def test_level_error_of_a_copy_at_twice_the_amplitude_is_plus_6_db():
    x = _noise(1.0, 4)
    assert level_error_db(2 * x, x) == pytest.approx(6.02, abs=0.01)
    assert level_error_db(0.5 * x, x) == pytest.approx(-6.02, abs=0.01)
    assert level_error_db(x, x) == 0.0


def test_hf_share_error_is_the_db_ratio_of_the_energy_shares_above_6_khz():
    # Equal powers at 1 kHz and 10 kHz: half the energy above 6 kHz. A fifth of it: 10 log10(0.2 / 0.5) dB.
    half = _tones(1.0, (1000.0, 0.1), (10000.0, 0.1))
    fifth = _tones(1.0, (1000.0, 0.2), (10000.0, 0.1))
    assert hf_share_error_db(fifth, half, RATE) == pytest.approx(10 * np.log10(0.2 / 0.5), abs=0.1)
    assert hf_share_error_db(half, half, RATE) == 0.0


def test_onset_correlation_is_high_for_the_same_hits_and_low_for_hits_half_a_beat_late():
    same = onset_correlation(_clicks(4.0, 120, seed=1), _clicks(4.0, 120, seed=2), RATE)
    late = onset_correlation(_clicks(4.0, 120, offset_s=0.25), _clicks(4.0, 120), RATE)
    assert same > 0.9
    assert late < 0.2


def test_waveform_correlation_tells_the_original_from_a_variation():
    x = _noise(1.0, 5)
    assert waveform_correlation(x, x) == pytest.approx(1.0)
    assert abs(waveform_correlation(_noise(1.0, 6), x)) < 0.05
    assert waveform_correlation(-x, x) == pytest.approx(-1.0)


def test_level_dip_is_zero_for_an_equal_power_crossfade_and_1_76_db_for_a_linear_one():
    a, b = _noise(3.0, 7), 4 * _noise(3.0, 8)  # a quiet clip into one 12 dB louder
    g0, g1 = RATE, 2 * RATE
    fo, fi = equal_power_curves(g1 - g0)
    lin = np.linspace(0, 1, g1 - g0, dtype=np.float32)
    for fade_out, fade_in, dip in ((fo, fi, 0.0), (1 - lin, lin, 10 * np.log10(1.5))):
        mix = np.concatenate([a[:, :g0], a[:, g0:g1] * fade_out + b[:, g0:g1] * fade_in, b[:, g1:]], axis=1)
        assert level_dip_db(mix, g0, g1, RATE // 2) == pytest.approx(dip, abs=0.25)


def test_beat_period_of_click_tracks_at_known_tempos_is_within_2_percent():
    for bpm in (90.0, 128.0, 174.0):
        assert beat_period_s(_clicks(8.0, bpm), RATE) == pytest.approx(60.0 / bpm, rel=0.02)


def _groove(seconds: float, offset_s: float = 0.0) -> np.ndarray:
    """Hits on the beat at 120 BPM and quieter off-beat hits 0.15 s after each."""
    return _clicks(seconds, 120, offset_s) + 0.5 * _clicks(seconds, 120, offset_s + 0.15, seed=3)


def test_beat_offset_is_zero_on_a_continuous_grid_and_the_shift_after_a_late_join():
    period, before, after = 0.5, (0, 4 * RATE), (4 * RATE, 8 * RATE)
    steady = _groove(8.0)
    assert abs(beat_offset_ms(steady, before, after, period, RATE)) < 3.0
    late = np.concatenate([steady[:, :4 * RATE], _groove(8.0, offset_s=0.1)[:, 4 * RATE:]], axis=1)
    assert beat_offset_ms(late, before, after, period, RATE) == pytest.approx(100.0, abs=5.0)
    early = np.concatenate([steady[:, :4 * RATE], _groove(8.0, offset_s=0.45)[:, 4 * RATE:]], axis=1)
    assert beat_offset_ms(early, before, after, period, RATE) == pytest.approx(-50.0, abs=5.0)


def _segment_features(audio: np.ndarray, seg_s: float) -> np.ndarray:
    n = int(seg_s * RATE)
    return np.stack([dsp_features(audio[:, i:i + n], RATE) for i in range(0, audio.shape[1] - n + 1, n)])


def test_detector_is_near_chance_on_two_halves_of_one_noise():
    noise = _noise(24.0, 9)
    first, second = _segment_features(noise[:, :12 * RATE], 0.2), _segment_features(noise[:, 12 * RATE:], 0.2)
    d = detectability(first, second)
    assert d.n == len(first) + len(second) == 120
    assert abs(d.accuracy - 0.5) < 3 * d.chance_stderr


def test_detector_tells_noise_from_a_sine_almost_always():
    noise = _segment_features(_noise(6.0, 10), 0.2)
    sine = _segment_features(_tones(6.0, (440.0, 0.1)) + 0.001 * _noise(6.0, 11), 0.2)
    assert detectability(noise, sine).accuracy > 0.95


def test_detector_keeps_a_group_in_one_fold_and_needs_two_groups():
    x = np.random.default_rng(0).standard_normal((8, 3))
    assert detectability(x, x + 5.0, [0, 0, 1, 1, 2, 2, 3, 3], [0, 0, 1, 1, 2, 2, 3, 3]).accuracy == 1.0
    with pytest.raises(ValueError, match="two groups"):
        detectability(x, x, [0] * 8, [0] * 8)


def _quality_bench():
    """bench/quality.py as a module (it is a script, not a package)."""
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "bench" / "quality.py"
    spec = importlib.util.spec_from_file_location("bench_quality", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bench_quality", module)
    spec.loader.exec_module(module)
    return module


def test_the_benchmark_scores_a_transition_where_the_output_leaves_clip_a():
    q = _quality_bench()
    a = _noise(10.0, 12)
    expected = 5 * RATE
    seam = int(q.SEAM_MS / 1000 * RATE)
    # A crossfade that starts where asked, its first samples barely changed by the seam's fade: the asked place.
    asked = a.copy()
    asked[:, expected + 3:] *= 0.5
    assert q.first_change(asked, a, expected) == expected
    # A prior that joined 2 s earlier, or later than one seam: scored where it joined.
    for moved in (expected - 2 * RATE, expected + 2 * seam):
        out = a.copy()
        out[:, moved:] = _noise(10.0, 13)[:, moved:]
        assert q.first_change(out, a, expected) == moved
    assert q.first_change(a.copy(), a, expected) == expected


def test_the_benchmark_pairs_a_difference_window_by_window():
    q = _quality_bench()
    ours = {"per_window": {"seam_jump_db": [1.0, 2.0, 3.0, 4.0]}}
    copy = {"per_window": {"seam_jump_db": [2.0, 2.5, 3.0, 6.0]}}
    # differences -1, -0.5, 0, -2: mean -0.875, sample sd 0.854, standard error 0.427; lower on 3 of 4
    assert q.paired(ours, copy, "seam_jump_db") == "-0.875 +- 0.427 (one standard error), lower on 3 of 4 windows"
