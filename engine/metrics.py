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


# ---- level, brightness and rhythm of a generated region against the original ---------------

def rms_db(audio: np.ndarray) -> float:
    """RMS level of the mid signal in dBFS (-180 for digital silence, so differences stay finite)."""
    x = _mid(audio).double()
    return float(20 * np.log10(float(torch.sqrt((x ** 2).mean())) + 1e-9))


def level_error_db(generated: np.ndarray, reference: np.ndarray) -> float:
    """Signed level difference, generated minus reference (dB): +6 for a copy at twice the amplitude."""
    return rms_db(generated) - rms_db(reference)


def hf_share_db(audio: np.ndarray, sample_rate: int, cutoff_hz: float = 6000.0, n_fft: int = 2048) -> float:
    """Share of the mid signal's energy above `cutoff_hz`, in dB (0 = all of it; -10 = a tenth)."""
    x = _mid(audio).double()
    if x.shape[0] < n_fft:
        x = torch.nn.functional.pad(x, (0, n_fft - x.shape[0]))
    power = torch.stft(x, n_fft, n_fft // 4, window=torch.hann_window(n_fft, dtype=torch.float64), center=False,
                       return_complex=True).abs() ** 2
    freqs = torch.arange(power.shape[0], dtype=torch.float64) * sample_rate / n_fft
    total = float(power.sum()) + 1e-20
    return float(10 * np.log10(float(power[freqs >= cutoff_hz].sum()) / total + 1e-12))


def hf_share_error_db(generated: np.ndarray, reference: np.ndarray, sample_rate: int,
                      cutoff_hz: float = 6000.0) -> float:
    """Signed error of the energy share above `cutoff_hz` (dB): negative = duller than the reference."""
    return hf_share_db(generated, sample_rate, cutoff_hz) - hf_share_db(reference, sample_rate, cutoff_hz)


ONSET_HOP = 128  # 2.9 ms at 44.1 kHz: fine enough to measure beat offsets of a few ms


def onset_envelope(audio: np.ndarray, sample_rate: int, hop: int = ONSET_HOP, n_fft: int = 1024,
                   n_mels: int = 64) -> np.ndarray:
    """(frames,) onset strength: half-wave rectified log-mel flux summed over bands; frame f ends near f * hop."""
    x = _mid(audio)
    if x.shape[0] < n_fft + hop:
        x = torch.nn.functional.pad(x, (0, n_fft + hop - x.shape[0]))
    spec = torch.stft(x, n_fft, hop, window=torch.hann_window(n_fft), center=False, return_complex=True).abs()
    mel = torch.log(_mel_fb(n_fft, sample_rate, n_mels) @ spec + LOG_EPS).numpy()
    flux = np.maximum(np.diff(mel, axis=1), 0.0).sum(axis=0)
    return np.concatenate([[0.0], flux]).astype(np.float64)


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    den = float(np.sqrt((a ** 2).sum() * (b ** 2).sum()))
    return float((a * b).sum() / den) if den > 0 else 0.0


def onset_correlation(generated: np.ndarray, reference: np.ndarray, sample_rate: int) -> float:
    """Pearson correlation of the two onset envelopes: 1 = hits at the same times, about 0 = unrelated."""
    if generated.shape != reference.shape:
        raise ValueError(f"shapes differ: {generated.shape} vs {reference.shape}")
    return _pearson(onset_envelope(generated, sample_rate), onset_envelope(reference, sample_rate))


def waveform_correlation(generated: np.ndarray, reference: np.ndarray) -> float:
    """Pearson correlation of the mid waveforms: 1 = the original back, not a variation."""
    if generated.shape != reference.shape:
        raise ValueError(f"shapes differ: {generated.shape} vs {reference.shape}")
    return _pearson(_mid(generated).double().numpy(), _mid(reference).double().numpy())


def level_dip_db(audio: np.ndarray, start: int, stop: int, side: int) -> float:
    """How far [start, stop) sits below the material it joins (the level of `side` samples either side, together).

    Positive = a dip. The sides' powers are averaged, which is what an equal-power
    crossfade of unrelated material keeps, so it gives about 0 even between a quiet
    and a loud clip; a linear one gives about 1.76 dB (its power averages 2/3).
    """
    if start - side < 0 or stop + side > audio.shape[1] or stop <= start:
        raise ValueError(f"a region [{start}, {stop}) needs {side} samples each side in {audio.shape[1]}")
    sides = np.concatenate([audio[:, start - side:start], audio[:, stop:stop + side]], axis=1)
    return rms_db(sides) - rms_db(audio[:, start:stop])


def beat_period_s(audio: np.ndarray, sample_rate: int, bpm_range: tuple[float, float] = (60.0, 200.0),
                  hop: int = ONSET_HOP) -> float:
    """Beat period (s) from the autocorrelation peak of the onset envelope within `bpm_range`."""
    env = onset_envelope(audio, sample_rate, hop)
    env = env - env.mean()
    n = len(env)
    spec = np.fft.rfft(env, 2 * n)
    ac = np.fft.irfft(spec * np.conj(spec))[:n]
    frame_s = hop / sample_rate
    lo = max(1, int(np.floor(60.0 / bpm_range[1] / frame_s)))
    hi = min(n - 2, int(np.ceil(60.0 / bpm_range[0] / frame_s)))
    if hi <= lo:
        raise ValueError(f"{n * frame_s:.2f} s of audio is too short to find a beat in {bpm_range} BPM")
    # Smooth the autocorrelation over +-2 frames so a beat that falls between frames keeps its full peak.
    ac = np.convolve(ac, np.hanning(7) / np.hanning(7).sum(), mode="same")
    lag = lo + int(np.argmax(ac[lo:hi + 1]))
    # A grid at half the lag that is nearly as strong is the beat; the longer lag is a bar or a half-bar.
    while lag // 2 >= lo:
        half = lag // 2 - 2 + int(np.argmax(ac[lag // 2 - 2:lag // 2 + 3]))
        if ac[half] < 0.6 * ac[lag]:
            break
        lag = half
    # Refine: the period at which the onsets add up most coherently (a phase error of 1 % per beat
    # would drift a grid by tens of ms over a few seconds, so the lag's frame resolution is not enough).
    times = (np.arange(n) * hop + 512) / sample_rate
    grid = lag * frame_s * np.linspace(0.97, 1.03, 241)
    power = np.abs(np.exp(-2j * np.pi * times[None, :] / grid[:, None]) @ env)
    return float(grid[int(np.argmax(power))])


def beat_pattern(audio: np.ndarray, start: int, stop: int, period_s: float, sample_rate: int,
                 hop: int = ONSET_HOP) -> np.ndarray:
    """The onset envelope of [start, stop) folded onto one beat period of the timeline's clock.

    (bins,) mean onset strength per phase bin of `hop` samples, mean removed and
    lightly smoothed: the beat's pattern (where the hits fall within a beat).
    """
    bins = max(4, int(round(period_s * sample_rate / hop)))
    env = onset_envelope(audio[:, start:stop], sample_rate, hop)
    times = start / sample_rate + (np.arange(len(env)) * hop + 512) / sample_rate  # the STFT frame's centre
    idx = np.floor((times % period_s) / period_s * bins).astype(int) % bins
    pattern = np.bincount(idx, env, bins) / np.maximum(np.bincount(idx, None, bins), 1)
    pattern = pattern - pattern.mean()
    kernel = np.exp(-0.5 * (np.arange(-6, 7) / 2.0) ** 2)
    return np.convolve(np.concatenate([pattern[-6:], pattern, pattern[:6]]), kernel / kernel.sum(), "valid")


def beat_offset_ms(audio: np.ndarray, before: tuple[int, int], after: tuple[int, int], period_s: float,
                   sample_rate: int) -> float:
    """Signed offset (ms, within +-period/2) of the beats in `after` against the grid of the beats in `before`.

    The circular shift that best aligns the two spans' beat patterns: positive = the
    hits after come late. Matching the whole pattern rather than its fundamental
    keeps off-beat hits from biasing it.
    """
    a = beat_pattern(audio, *before, period_s, sample_rate)
    b = beat_pattern(audio, *after, period_s, sample_rate)
    n = len(a)
    xc = np.fft.irfft(np.conj(np.fft.rfft(a)) * np.fft.rfft(b), n)
    k = int(np.argmax(xc))
    y0, y1, y2 = xc[(k - 1) % n], xc[k], xc[(k + 1) % n]
    den = y0 - 2 * y1 + y2
    frac = 0.5 * (y0 - y2) / den if den < 0 else 0.0
    d = (k + frac) / n * period_s
    return float(1000.0 * ((d + period_s / 2) % period_s - period_s / 2))


# ---- detectability: can a simple classifier tell generated regions from real ones? ----------

def dsp_features(audio: np.ndarray, sample_rate: int, n_mels: int = 24, n_fft: int = 1024) -> np.ndarray:
    """A small DSP description of a clip: mean and std of log-mel bands, flux, flatness, HF share, level."""
    x = _mid(audio)
    if x.shape[0] < n_fft * 2:
        x = torch.nn.functional.pad(x, (0, n_fft * 2 - x.shape[0]))
    spec = torch.stft(x, n_fft, n_fft // 4, window=torch.hann_window(n_fft), center=False,
                      return_complex=True).abs().double()
    mel = torch.log(_mel_fb(n_fft, sample_rate, n_mels).double() @ spec + LOG_EPS).numpy()
    power = spec.numpy() ** 2 + 1e-12
    flatness = np.exp(np.log(power).mean(0)) / power.mean(0)
    flux = np.abs(np.diff(mel, axis=1)).mean(0) if mel.shape[1] > 1 else np.zeros(1)
    return np.concatenate([mel.mean(1), mel.std(1), [flux.mean(), flux.std(), flatness.mean(),
                                                      hf_share_db(audio, sample_rate), rms_db(audio)]])


def _fit_logistic(x: np.ndarray, y: np.ndarray, l2: float, iters: int = 50) -> np.ndarray:
    """Weights (bias last) of an L2-penalised logistic regression by Newton's method."""
    xb = np.hstack([x, np.ones((len(x), 1))])
    w = np.zeros(xb.shape[1])
    pen = l2 * np.eye(xb.shape[1])
    pen[-1, -1] = 0.0  # the bias is not penalised
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-np.clip(xb @ w, -30, 30)))
        grad = xb.T @ (p - y) + pen @ w
        hess = (xb * (p * (1 - p))[:, None]).T @ xb + pen + 1e-9 * np.eye(len(w))
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w


@dataclass(frozen=True)
class Detectability:
    """Cross-validated accuracy of telling generated from real (0.5 = indistinguishable).

    `chance_stderr` is the spread of the accuracy of a coin on `n` clips: an accuracy
    within about two of it from 0.5 is not evidence that the two sets differ.
    """

    accuracy: float
    chance_stderr: float
    n: int


def detectability(generated: np.ndarray, real: np.ndarray, groups_generated: Sequence[int] | None = None,
                  groups_real: Sequence[int] | None = None, folds: int = 5, l2: float = 1.0,
                  seed: int = 0) -> Detectability:
    """k-fold accuracy of a logistic regression on feature rows (N, D) of generated vs real clips.

    Rows sharing a group (e.g. the same track) stay in one fold, so the classifier
    cannot win by recognising the track. Features are standardised on each training fold.
    """
    if generated.ndim != 2 or real.ndim != 2 or generated.shape[1] != real.shape[1]:
        raise ValueError(f"features must be (N, D) and (M, D), got {generated.shape} and {real.shape}")
    x = np.vstack([generated, real]).astype(np.float64)
    y = np.concatenate([np.ones(len(generated)), np.zeros(len(real))])
    if groups_generated is None or groups_real is None:
        groups = np.arange(len(x))
    else:
        groups = np.concatenate([np.asarray(groups_generated), np.asarray(groups_real)])
    unique = np.random.default_rng(seed).permutation(np.unique(groups))
    folds = min(folds, len(unique))
    if folds < 2:
        raise ValueError("detectability needs at least two groups for cross-validation")
    fold_of = {g: i % folds for i, g in enumerate(unique)}
    fold = np.array([fold_of[g] for g in groups])
    correct = 0
    for k in range(folds):
        train, test = fold != k, fold == k
        mu, sd = x[train].mean(0), x[train].std(0) + 1e-9
        w = _fit_logistic((x[train] - mu) / sd, y[train], l2)
        z = np.hstack([(x[test] - mu) / sd, np.ones((int(test.sum()), 1))]) @ w
        correct += int(((z > 0) == (y[test] > 0.5)).sum())
    acc = correct / len(x)
    return Detectability(float(acc), float(np.sqrt(0.25 / len(x))), len(x))
