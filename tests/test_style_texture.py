"""The texture match: a bounded EQ and per-band dynamics that move a clip toward a reference embedding and keep its music."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from engine import features as F
from engine.effects import integrated_lufs, match_loudness
from engine.embedders import load_embedder
from engine.errors import Cancelled
from engine.presets import apply_preset, embed
from engine.progress import CancelToken
from engine.render import render_audio
from engine.request import PCMAudio, request_from_mapping
from engine.style_texture import TextureSettings, texture_match, windows
from test_style_render import chord_loop

RATE = 44100
WEIGHTS = {"mel_mean": 1.0, "mel_std": 1.0, "contrast": 1.0, "texture": 1.0, "chroma": 0.0}


def tilted(audio: np.ndarray) -> np.ndarray:
    """A reference an EQ can reach: a tilt from -9 dB (150 Hz) to +12 dB (4 kHz), same LUFS."""
    spec = np.fft.rfft(audio, axis=1)
    f = np.fft.rfftfreq(audio.shape[1], 1.0 / RATE)
    tilt_db = np.interp(np.log2(np.maximum(f, 20.0)), np.log2([150.0, 4000.0]), [-9.0, 12.0])
    out = np.fft.irfft(spec * 10 ** (tilt_db / 20.0), audio.shape[1], axis=1).astype(np.float32)
    return match_loudness(out, RATE, integrated_lufs(audio, RATE))   # the stage keeps the level: so does the target


def pulsed(audio: np.ndarray) -> np.ndarray:
    """A deep 3 Hz tremolo the music does not have: only a gain that moves on its own could imitate it."""
    t = np.arange(audio.shape[1]) / RATE
    out = (audio * (1.0 + 0.8 * np.sin(2 * np.pi * 3.0 * t))).astype(np.float32)
    return match_loudness(out, RATE, integrated_lufs(audio, RATE))


@pytest.fixture(scope="module")
def embedder():
    return load_embedder("dsp")


@pytest.fixture(scope="module")
def loop():
    return chord_loop(seconds=4.0)


@pytest.fixture(scope="module")
def reference(embedder, loop):
    return torch.tensor(embed(embedder, tilted(chord_loop(seconds=4.0, seed=9))))


@pytest.fixture(scope="module")
def matched(embedder, loop, reference):
    return texture_match(loop, loop, RATE, embedder, reference, WEIGHTS, 1.0)


def test_it_moves_a_clip_a_quarter_of_the_way_to_a_reference_at_its_own_loudness(matched):
    # measured 0.45 -> 0.29 (35 %): the centroid (the chain's colour), onset and headroom terms hold it back
    assert matched.distance_before > 0.4
    assert matched.distance_after < 0.8 * matched.distance_before, (matched.distance_before, matched.distance_after)
    assert matched.fraction_applied == 1.0


def test_the_gain_moves_only_where_the_music_does(embedder):
    # A steady drone (no accents; partials an octave and more apart, so none beat): whatever the reference
    # asks, the gain is one EQ curve, constant in time.
    tt = np.arange(4 * RATE) / RATE
    drone = (0.1 * sum(np.sin(2 * np.pi * f * tt) for f in (110.0, 330.0, 990.0, 2970.0))).astype(np.float32)
    drone = np.stack([drone, drone])
    ref = torch.tensor(embed(embedder, pulsed(tilted(drone))))
    out = texture_match(drone, drone, RATE, embedder, ref, WEIGHTS, 1.0)
    assert out.fraction_applied > 0.0 and np.abs(out.eq_db).max() > 1.0     # it did move (its EQ)
    assert out.drift_db < 0.5, out.drift_db                                     # but made no sweep or tremolo
    env = lambda a: np.array([np.sqrt(np.mean(a[:, i:i + 2048] ** 2)) for i in range(RATE // 2, a.shape[1] - RATE // 2, 2048)])
    level = 20 * np.log10(env(out.audio))
    assert level.max() - level.min() < 0.5, level.max() - level.min()


def test_the_reported_distances_are_the_real_ones(embedder, loop, reference, matched):
    w = np.sqrt(np.array([WEIGHTS[g] for g, sl in embedder.slices.items() for _ in range(sl.stop - sl.start)]))
    real = float(np.linalg.norm(w * (embed(embedder, matched.audio) - reference.numpy())))
    assert real == pytest.approx(matched.distance_after, rel=1e-4)


def test_a_chord_loop_keeps_its_harmony_and_rhythm(loop, matched):
    assert F.chroma_correlation(matched.audio, loop, RATE) >= 0.9
    assert F.onset_correlation(matched.audio, loop, RATE) >= 0.8


def test_it_is_deterministic(embedder, loop, reference, matched):
    again = texture_match(loop, loop, RATE, embedder, reference, WEIGHTS, 1.0)
    assert np.array_equal(again.audio, matched.audio)


def test_one_eq_serves_every_window_of_a_long_clip(embedder):
    # Fitted window by window, the EQ changed from one window to the next: a sweep over tens of seconds
    # (measured 18-20 dB of drift on 60 s of a track). Two different drones back to back, cut into 2 s
    # windows, the accents' part off: whatever each window would want, the clip gets one curve.
    tt = np.arange(4 * RATE) / RATE
    low = 0.1 * sum(np.sin(2 * np.pi * f * tt) for f in (110.0, 220.0, 330.0))
    high = 0.05 * sum(np.sin(2 * np.pi * f * tt) for f in (1760.0, 3520.0, 7040.0))
    clip = np.concatenate([low, high]).astype(np.float32)
    clip = np.stack([clip, clip])
    ref = torch.tensor(embed(embedder, tilted(chord_loop(seconds=4.0, seed=9))))
    settings = TextureSettings(window_s=2.0, overlap_s=0.5, expansion_max=0.0)
    out = texture_match(clip, clip, RATE, embedder, ref, WEIGHTS, 1.0, settings)
    assert out.windows >= 3 and np.abs(out.eq_db).max() > 1.0
    assert out.drift_db < 0.5, out.drift_db


def test_the_gain_stays_inside_its_bound(loop, matched):
    s = TextureSettings()
    assert np.abs(matched.eq_db).max() <= s.bound_db + 1e-4
    assert np.abs(matched.expansion).max() <= s.expansion_max + 1e-6
    bound = s.bound_db + s.expansion_max * s.envelope_clip_db
    # and in the audio: no STFT bin of the output rises above the input's by more than the bound (+1 dB slack for
    # the overlap-add and the loudness match), measured where the input has energy
    spec = lambda a: np.abs(np.stack([np.fft.rfft(a.mean(0)[i:i + 2048] * np.hanning(2048))
                                      for i in range(0, a.shape[1] - 2048, 512)]))
    x, y = spec(loop), spec(matched.audio)
    loud = x > x.max() * 1e-3
    rise_db = 20 * np.log10(y[loud] / x[loud])
    assert np.percentile(rise_db, 99.9) <= bound + 1.0, np.percentile(rise_db, 99.9)
    assert np.abs(matched.eq_db).max() > 1.0   # it did move


def test_strength_scales_the_gain_and_zero_is_the_identity(embedder, loop, reference, matched):
    zero = texture_match(loop, loop, RATE, embedder, reference, WEIGHTS, 0.0)
    assert np.array_equal(zero.audio, loop)
    half = texture_match(loop, loop, RATE, embedder, reference, WEIGHTS, 0.5)
    assert matched.distance_after < half.distance_after < half.distance_before


def test_long_audio_is_matched_in_overlapping_windows_that_cover_it():
    settings = TextureSettings(window_s=2.0, overlap_s=0.5)
    spans = windows(int(7.3 * RATE), RATE, settings)
    assert spans[0][0] == 0 and spans[-1][1] == int(7.3 * RATE)
    assert all(b > a2 for (_, b), (a2, _) in zip(spans, spans[1:]))          # each overlaps the next
    assert all(a % 512 == 0 for a, _ in spans)                                 # on the STFT grid


def _stft_db(a: np.ndarray) -> np.ndarray:
    frames = np.stack([a.mean(0)[i:i + 2048] * np.hanning(2048) for i in range(0, a.shape[1] - 2048, 512)])
    return 20 * np.log10(np.abs(np.fft.rfft(frames, axis=1)) + 1e-9)


def test_windows_join_without_a_gain_jump(embedder, reference):
    audio = chord_loop(seconds=8.0)
    settings = TextureSettings(iterations=20, window_s=3.0, overlap_s=1.0)
    out = texture_match(audio, audio, RATE, embedder, reference, WEIGHTS, 1.0, settings)
    assert out.windows >= 3
    assert out.distance_after < out.distance_before
    x, y = _stft_db(audio), _stft_db(out.audio)
    loud = (x > x.max() - 50)[1:] & (x > x.max() - 50)[:-1]
    gain = y - x
    # the gain applied, frame to frame (11.6 ms), median over the loud bins: linear over 100 ms gain frames, it
    # can change by at most 2 x 18 dB / 8.6 frames; a hard switch between windows would show as one big step
    step = np.array([np.median(np.abs(np.diff(gain, axis=0))[i][loud[i]]) for i in range(len(loud)) if loud[i].any()])
    print(step.max())
    assert step.max() < 4.2


def test_each_iteration_reports_progress_and_can_cancel(embedder, loop, reference):
    token, calls = CancelToken(), []

    def step() -> None:
        calls.append(1)
        if len(calls) == 3:
            token.cancel()
        token.raise_if_cancelled()

    with pytest.raises(Cancelled):
        texture_match(loop, loop, RATE, embedder, reference, WEIGHTS, 1.0, on_iteration=step)
    assert len(calls) == 3


def test_a_style_render_records_the_stage_and_gets_closer_to_the_preset(loop):
    fields = apply_preset({"task": "style", "audio": [PCMAudio(loop, RATE)], "texture_iterations": 60}, "dark-ambient")
    on = render_audio(request_from_mapping(fields))
    off = render_audio(request_from_mapping({**fields, "texture_iterations": 0}))
    rec = on.info["texture_match"]
    assert rec["distance_after"] < 0.97 * rec["distance_before"]   # measured 1.81 -> 1.71 (6 %) on this loop
    assert rec["settings"]["iterations"] == 60
    assert "texture_match" not in off.info
    assert F.chroma_correlation(on.audio, loop, RATE) >= 0.7
    assert not np.array_equal(on.audio, off.audio)


def test_a_bright_preset_keeps_its_air_even_when_the_reference_has_none(embedder, loop):
    # A reference with the top octave gone (-24 dB at 8 kHz): without a tone the stage follows it,
    # but a bright preset's stage may not take the share above 8 kHz down (the centroid alone hides it).
    src = chord_loop(seconds=4.0, seed=9)
    spec = np.fft.rfft(src, axis=1)
    f = np.fft.rfftfreq(src.shape[1], 1.0 / RATE)
    cut_db = np.interp(np.log2(np.maximum(f, 20.0)), np.log2([2000.0, 8000.0]), [0.0, -24.0])
    dull = np.fft.irfft(spec * 10 ** (cut_db / 20.0), src.shape[1], axis=1).astype(np.float32)
    ref = torch.tensor(embed(embedder, match_loudness(dull, RATE, integrated_lufs(src, RATE))))
    follows = texture_match(loop, loop, RATE, embedder, ref, WEIGHTS, 1.0, tone="neutral")
    bright = texture_match(loop, loop, RATE, embedder, ref, WEIGHTS, 1.0, tone="bright")
    top = F.hf_share_db(loop, RATE)
    assert F.hf_share_db(follows.audio, RATE) < top - 10.0          # measured -30.2 -> -51.1 dB
    assert F.hf_share_db(bright.audio, RATE) >= top - 1.0           # measured -30.2 -> -23.4 dB
