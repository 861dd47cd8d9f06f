"""Quality metrics for edited audio: spectral distance, Fréchet distance, seam continuity.

Used by bench/quality.py. All inputs are (channels, samples) float32 numpy arrays at
one sample rate passed beside them; stereo is analysed as mid (L + R) / 2.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import numpy as np
import torch

from .embedders.dsp import mel_filterbank

MEL_RESOLUTIONS: tuple[tuple[int, int], ...] = ((512, 64), (1024, 128), (2048, 128))
LOG_EPS = 1e-5


@lru_cache(maxsize=16)
def _mel_fb(n_fft: int, sample_rate: int, n_mels: int) -> torch.Tensor:
    return mel_filterbank(n_fft, sample_rate, n_mels, 20.0, sample_rate / 2).float()


def _mid(audio: np.ndarray) -> torch.Tensor:
    if audio.ndim != 2:
        raise ValueError(f"audio must be (channels, samples), got shape {audio.shape}")
    return torch.from_numpy(np.ascontiguousarray(audio.mean(axis=0), dtype=np.float32))


def log_mel(audio: np.ndarray, sample_rate: int, n_fft: int = 2048, n_mels: int = 128) -> np.ndarray:
    """(n_mels, frames) natural-log mel magnitudes of the mid signal, hop n_fft / 4."""
    x = _mid(audio)
    if x.shape[0] < n_fft:
        x = torch.nn.functional.pad(x, (0, n_fft - x.shape[0]))
    spec = torch.stft(x, n_fft, n_fft // 4, window=torch.hann_window(n_fft), center=False,
                      return_complex=True).abs()
    return torch.log(_mel_fb(n_fft, sample_rate, n_mels) @ spec + LOG_EPS).numpy()


def multires_log_mel_l1(generated: np.ndarray, reference: np.ndarray, sample_rate: int,
                        resolutions: Sequence[tuple[int, int]] = MEL_RESOLUTIONS) -> float:
    """Mean over resolutions of the mean |log-mel difference| (nats); 0 for identical audio."""
    if generated.shape != reference.shape:
        raise ValueError(f"shapes differ: {generated.shape} vs {reference.shape}")
    return float(np.mean([np.abs(log_mel(generated, sample_rate, n, m) - log_mel(reference, sample_rate, n, m)).mean()
                          for n, m in resolutions]))


def frechet_distance(a: np.ndarray, b: np.ndarray, eps: float = 1e-6) -> float:
    """Fréchet distance between Gaussians fitted to two embedding sets (N, D) and (M, D).

    |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)); eps I is added to both covariances
    because with fewer items than dimensions they are singular.
    """
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"embeddings must be (N, D) and (M, D), got {a.shape} and {b.shape}")
    mu_a, mu_b = a.mean(0), b.mean(0)
    eye = eps * np.eye(a.shape[1])
    s_a = np.atleast_2d(np.cov(a, rowvar=False)) + eye
    s_b = np.atleast_2d(np.cov(b, rowvar=False)) + eye
    # tr (S_a S_b)^(1/2) = tr (S_a^(1/2) S_b S_a^(1/2))^(1/2): symmetric, so eigh suffices (no scipy).
    w, v = np.linalg.eigh(s_a)
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    inner = np.linalg.eigvalsh(root_a @ s_b @ root_a)
    tr_covmean = float(np.sqrt(np.clip(inner, 0, None)).sum())
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * tr_covmean)


@dataclass(frozen=True)
class SeamStats:
    """Change across a boundary: spectral flux (mean |delta log-mel|, nats) and level jump (|dB|)."""

    flux: float
    level_jump_db: float


def seam_stats(audio: np.ndarray, position: int, sample_rate: int, window_ms: float = 50.0,
               n_mels: int = 64) -> SeamStats:
    """Compare the `window_ms` just before `position` with the `window_ms` just after it."""
    n = int(round(window_ms / 1000.0 * sample_rate))
    if position - n < 0 or position + n > audio.shape[1]:
        raise ValueError(f"a seam at sample {position} needs {n} samples each side in {audio.shape[1]}")
    before, after = audio[:, position - n:position], audio[:, position:position + n]
    n_fft = 1 << (n - 1).bit_length()

    def spectrum(seg: np.ndarray) -> torch.Tensor:
        x = _mid(seg) * torch.hann_window(seg.shape[1])
        mag = torch.fft.rfft(x, n=n_fft).abs()
        return torch.log(_mel_fb(n_fft, sample_rate, n_mels) @ mag + LOG_EPS)

    flux = float((spectrum(after) - spectrum(before)).abs().mean())
    rms = lambda s: float(np.sqrt(np.mean(s.astype(np.float64) ** 2)) + 1e-9)  # noqa: E731
    return SeamStats(flux=flux, level_jump_db=abs(20 * np.log10(rms(after) / rms(before))))


def seam_continuity(edited: np.ndarray, original: np.ndarray, boundaries: Sequence[int],
                    sample_rate: int) -> dict[str, float]:
    """Seam statistics of the edit and of the original audio at the same positions (mean over seams)."""
    e = [seam_stats(edited, p, sample_rate) for p in boundaries]
    o = [seam_stats(original, p, sample_rate) for p in boundaries]
    return {
        "flux": float(np.mean([s.flux for s in e])),
        "flux_original": float(np.mean([s.flux for s in o])),
        "level_jump_db": float(np.mean([s.level_jump_db for s in e])),
        "level_jump_db_original": float(np.mean([s.level_jump_db for s in o])),
    }
