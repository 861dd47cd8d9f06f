"""Synthetic music-like audio: harmonic notes with envelopes, stereo pan and noise hits.

Why: the `tiny` training config and the tests must run without the corpus. This
signal has the structure a denoiser can learn quickly (sparse harmonic spectra,
partials that persist over frames, transients), unlike white noise.
"""
from __future__ import annotations

import numpy as np

SCALE = np.array([0, 2, 4, 5, 7, 9, 11])  # major scale, semitones


def synth_music(samples: int, rng: np.random.Generator, *, sample_rate: int = 44100,
                notes_per_s: float = 4.0, with_noise_hits: bool = True) -> np.ndarray:
    """(2, samples) float32 in about [-0.5, 0.5]: a random melody/chord texture."""
    t = np.arange(samples) / sample_rate
    out = np.zeros((2, samples), np.float32)
    duration_s = samples / sample_rate
    n_notes = max(1, rng.poisson(notes_per_s * duration_s))
    root = 48 + rng.integers(0, 12)
    for _ in range(n_notes):
        start = rng.uniform(-0.3, duration_s)
        length = rng.uniform(0.15, 1.0)
        midi = root + SCALE[rng.integers(0, len(SCALE))] + 12 * rng.integers(0, 3)
        f0 = 440.0 * 2 ** ((midi - 69) / 12)
        lo = max(0, int(start * sample_rate))
        hi = min(samples, int((start + length + 0.3) * sample_rate))
        if hi <= lo:
            continue
        tt = t[lo:hi] - start
        env = np.clip(tt / 0.01, 0, 1) * np.exp(-np.clip(tt, 0, None) * rng.uniform(2.0, 8.0))
        brightness = rng.uniform(0.3, 0.8)
        tone = np.zeros_like(tt)
        for k in range(1, 9):
            if f0 * k < sample_rate / 2:
                tone += brightness ** (k - 1) * np.sin(2 * np.pi * f0 * k * tt + rng.uniform(0, 2 * np.pi))
        pan = rng.uniform(0.2, 0.8)
        amp = rng.uniform(0.05, 0.15)
        out[0, lo:hi] += (amp * np.sqrt(1 - pan) * env * tone).astype(np.float32)
        out[1, lo:hi] += (amp * np.sqrt(pan) * env * tone).astype(np.float32)
    if with_noise_hits:
        beat = 60.0 / rng.uniform(90, 150)
        phase = rng.uniform(0, beat)
        for onset in np.arange(phase, duration_s, beat):
            lo = int(onset * sample_rate)
            hi = min(samples, lo + int(0.12 * sample_rate))
            tt = t[lo:hi] - onset
            hit = rng.standard_normal(hi - lo) * np.exp(-tt * 40.0) * 0.08
            out[:, lo:hi] += hit.astype(np.float32)
    return out
