"""A deterministic 6 s musical clip synthesised in numpy, so the demo needs no input file."""
from __future__ import annotations

import numpy as np

RATE = 44100


def _note_hz(midi: float) -> float:
    return 440.0 * 2 ** ((midi - 69) / 12)


def demo_clip(seconds: float = 6.0, bpm: float = 120.0) -> np.ndarray:
    """(2, n) float32: a I-vi-IV-V pad, a bass line, kick and hi-hat, panned apart."""
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    beat = 60.0 / bpm
    chords = [(60, 64, 67), (57, 60, 64), (53, 57, 60), (55, 59, 62)]
    left = np.zeros(n)
    right = np.zeros(n)
    bar = 4 * beat
    for i in range(int(np.ceil(seconds / bar))):
        chord = chords[i % len(chords)]
        s, e = int(i * bar * RATE), min(n, int((i + 1) * bar * RATE))
        tt = t[s:e] - i * bar
        env = np.minimum(1.0, tt / 0.05) * np.exp(-tt * 0.6)
        pad = sum(np.sin(2 * np.pi * _note_hz(m) * tt) + 0.3 * np.sin(4 * np.pi * _note_hz(m) * tt) for m in chord)
        bass = np.sign(np.sin(2 * np.pi * _note_hz(chord[0] - 24) * tt)) * 0.5
        left[s:e] += 0.08 * pad * env + 0.08 * bass * env
        right[s:e] += 0.06 * pad * env + 0.1 * bass * env
    rng = np.random.default_rng(0)
    for k in range(int(seconds / beat)):
        s = int(k * beat * RATE)
        m = min(n - s, int(0.25 * RATE))
        tt = np.arange(m) / RATE
        kick = np.sin(2 * np.pi * (50 + 80 * np.exp(-tt * 30)) * tt) * np.exp(-tt * 12) * 0.5
        left[s:s + m] += kick
        right[s:s + m] += kick
        h = int(k * beat * RATE + beat * RATE / 2)
        if h < n:
            hm = min(n - h, int(0.05 * RATE))
            hat = rng.standard_normal(hm) * np.exp(-np.arange(hm) / RATE * 80) * 0.15
            left[h:h + hm] += hat * 0.7
            right[h:h + hm] += hat
    out = np.stack([left, right]).astype(np.float32)
    return out / max(1.0, float(np.abs(out).max()) / 0.9)
