"""Resampler accuracy: 44.1 <-> 48 kHz round trip and the phase of a 1 kHz tone (BENCHMARKS.md)."""
from __future__ import annotations

import numpy as np

from engine.audio_io import resample


def main() -> None:
    rng = np.random.default_rng(0)
    spec = np.fft.rfft(rng.standard_normal((2, 44100 * 3)))
    spec[:, np.fft.rfftfreq(44100 * 3, 1 / 44100) > 20000] = 0
    music = np.fft.irfft(spec, n=44100 * 3).astype(np.float32)
    back = resample(resample(music, 44100, 48000), 48000, 44100)
    err = np.sqrt(((back - music)[:, 5000:-5000] ** 2).mean() / (music ** 2).mean())
    t = np.arange(3 * 48000) / 48000
    y = resample(np.sin(2 * np.pi * 1000 * t).astype(np.float32)[None], 48000, 44100)[0, 2000:-2000]
    t2 = np.arange(2000, 2000 + y.size) / 44100
    phase = np.arctan2(np.sum(y * np.cos(2 * np.pi * 1000 * t2)), np.sum(y * np.sin(2 * np.pi * 1000 * t2)))
    print(f"round trip 44.1 -> 48 -> 44.1 kHz, band-limited noise: relative RMS error {err:.2e}")
    print(f"1 kHz tone 48 -> 44.1 kHz: delay {-phase / (2 * np.pi * 1000) * 44100:+.2e} samples")


if __name__ == "__main__":
    main()
