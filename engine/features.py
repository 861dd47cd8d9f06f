"""Plain numpy audio features for style measurements: colour (centroid, HF share) and content kept.

A style render should move the colour of a clip and keep its music. These are
the measures the style tests and `bench/style.py` use for both:

- colour: the long-term spectral centroid (Hz) and the share of energy above
  8 kHz (dB);
- content: chroma correlation (harmony) and onset-envelope correlation (rhythm)
  between a render and its input, frame by frame on the same timeline.

All of them work on the mid signal (channel mean) so panning does not count.
"""
from __future__ import annotations

import math

import numpy as np

HF_EDGE_HZ = 8000.0


def _mid(audio: np.ndarray) -> np.ndarray:
    a = np.asarray(audio, dtype=np.float64)
    return a.mean(axis=0) if a.ndim == 2 else a


def _power(x: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """(frames, n_fft // 2 + 1) power spectrogram with a Hann window (zero-padded edges)."""
    pad = np.pad(x, (n_fft // 2, n_fft // 2 + hop))
    n_frames = 1 + (len(pad) - n_fft) // hop
    idx = np.arange(n_fft)[None] + hop * np.arange(n_frames)[:, None]
    frames = pad[idx] * np.hanning(n_fft)[None]
    spec = np.fft.rfft(frames, axis=1)
    return spec.real ** 2 + spec.imag ** 2


def long_term_spectrum(audio: np.ndarray, sample_rate: int, n_fft: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """(freqs, mean power per bin) over the whole clip."""
    p = _power(_mid(audio), n_fft, n_fft // 2)
    return np.fft.rfftfreq(n_fft, 1.0 / sample_rate), p.mean(axis=0)


def spectral_centroid(audio: np.ndarray, sample_rate: int) -> float:
    """Power-weighted mean frequency (Hz) of the clip's long-term spectrum."""
    f, p = long_term_spectrum(audio, sample_rate)
    return float((f * p).sum() / max(p.sum(), 1e-20))


def hf_share_db(audio: np.ndarray, sample_rate: int, edge_hz: float = HF_EDGE_HZ) -> float:
    """Share of the energy above `edge_hz`, in dB (-inf for none)."""
    f, p = long_term_spectrum(audio, sample_rate)
    total = p.sum()
    share = p[f >= edge_hz].sum() / total if total > 0 else 0.0
    return float(10.0 * math.log10(share)) if share > 0 else -math.inf


def chroma(audio: np.ndarray, sample_rate: int, n_fft: int = 8192, hop: int = 2048) -> np.ndarray:
    """(12, frames) pitch-class energy (C = 0), each frame scaled to unit sum (silent frames stay 0)."""
    p = _power(_mid(audio), n_fft, hop)
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    inside = (freqs >= 65.0) & (freqs <= 4200.0)
    midi = 69.0 + 12.0 * np.log2(np.maximum(freqs, 1.0) / 440.0)
    d = np.remainder(np.remainder(midi, 12.0)[None] - np.arange(12)[:, None] + 6.0, 12.0) - 6.0
    fb = np.exp(-0.5 * (d / 0.5) ** 2) * inside[None]
    c = fb @ np.sqrt(p).T
    s = c.sum(axis=0, keepdims=True)
    return np.where(s > 1e-9 * max(float(s.max()), 1e-30), c / np.maximum(s, 1e-30), 0.0)


def onset_envelope(audio: np.ndarray, sample_rate: int, n_fft: int = 2048, hop: int = 512,
                   n_bands: int = 40) -> np.ndarray:
    """Spectral flux of a log band spectrogram: the positive rise in dB summed over bands, per frame."""
    p = _power(_mid(audio), n_fft, hop)
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    edges = np.geomspace(40.0, min(16000.0, sample_rate / 2), n_bands + 1)
    band = np.stack([p[:, (freqs >= lo) & (freqs < hi)].sum(axis=1) for lo, hi in zip(edges[:-1], edges[1:])], axis=1)
    db = 10.0 * np.log10(band + 1e-12)
    db = np.maximum(db, db.max() - 80.0)
    return np.maximum(np.diff(db, axis=0), 0.0).sum(axis=1)


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    a, b = a - a.mean(), b - b.mean()
    den = math.sqrt(float((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / den) if den > 0 else 0.0


def chroma_correlation(output: np.ndarray, reference: np.ndarray, sample_rate: int) -> float:
    """Pearson correlation of the two clips' chroma matrices (same timeline): 1 = the harmony kept."""
    a, b = chroma(output, sample_rate), chroma(reference, sample_rate)
    n = min(a.shape[1], b.shape[1])
    return _pearson(a[:, :n], b[:, :n])


def onset_correlation(output: np.ndarray, reference: np.ndarray, sample_rate: int) -> float:
    """Pearson correlation of the two clips' onset envelopes: 1 = the rhythm kept."""
    a, b = onset_envelope(output, sample_rate), onset_envelope(reference, sample_rate)
    n = min(len(a), len(b))
    return _pearson(a[:n], b[:n])
