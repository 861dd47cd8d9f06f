"""Texture match: embedding guidance on a smooth time-frequency gain, so it cannot destroy the music.

Why. The effect chain sets a clip's colour but moves its distance to the preset's
reference embedding by -7..+15 %, and the diffusion model's guidance re-noised the
clip (onsets lost) without getting closer. Here guidance optimises something that
can only re-weigh what is already there: a log-gain per (mel-spaced band x ~100 ms
frame), bounded to +-`bound_db` by a tanh, interpolated smoothly onto the STFT grid
and applied to the STFT magnitude with the original phase (then iSTFT). No new notes,
no new onsets, no phase damage; the harmony and rhythm can only be re-balanced.

The gain is found by Adam (a fixed number of iterations from zero, so the result is
deterministic) on

    ||w * (E(y) - ref)||^2                        (the preset's weighted embedding distance)
  + chroma_weight * (1 - corr(chroma(y), chroma(x0)))   (harmony kept, per frame)
  + onset_weight * (1 - corr(onset(y), onset(x0)))      (rhythm kept)
  + centroid_weight * (log centroid(y) - log centroid(x))^2       (the chain's colour kept; 10x against its tone)
  + headroom_weight * relu(growth of unweighted / K-weighted power)^2   (no bass that only eats headroom)
  + smooth_time * mean(d/dt g)^2 + smooth_freq * mean(d/df g)^2   (g in units of bound)

  + loudness_weight * (log K-weighted power(y) - that of x)^2       (the loudness match after would undo it)

with E the DSP embedder and x0 the content anchor (the clip before the chain, which
is what the benchmark's chroma and onset correlations compare with). `strength`
is the fraction of the optimised log-gain applied (0 returns the input untouched).
Long audio is optimised in windows whose gains are cross-faded in the log domain.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Callable, Optional

import numpy as np
import torch

from .effects import integrated_lufs, match_loudness

N_FFT = 2048     # the synthesis STFT: the DSP embedder's own main STFT, so its statistics see the gain exactly
HOP = 512
SUBSONIC_HZ = 40.0
LEVEL_TOLERANCE_DB = 0.5                       # the loudness the stage may lose to the peak ceiling
BACK_OFF_FRACTIONS = (1.0, 0.75, 0.5, 0.25, 0.0)


@dataclass(frozen=True)
class TextureSettings:
    """The stage's knobs; the defaults were chosen on held-out clips (BENCHMARKS.md, "Style presets")."""

    iterations: int = 60
    learning_rate: float = 0.3
    bound_db: float = 18.0
    bands: int = 48
    frame_s: float = 0.1
    frame_stride: int = 4
    smooth_time: float = 0.03
    smooth_freq: float = 0.03
    chroma_weight: float = 4.0
    onset_weight: float = 4.0
    centroid_weight: float = 20.0
    headroom_weight: float = 20.0
    loudness_weight: float = 20.0
    window_s: float = 12.0
    overlap_s: float = 1.0

    def describe(self) -> dict:
        return asdict(self)


@dataclass
class TextureResult:
    """The matched audio, the log-gain applied (dB, bands x frames per window) and the distances."""

    audio: np.ndarray
    gain_db: list[np.ndarray]
    distance_before: float
    distance_after: float
    seconds: float
    fraction_applied: float = 1.0   # under 1 where the full gain cost level (peak ceiling) or distance


# --- the gain field ------------------------------------------------------------------------

def band_interpolation(n_bins: int, sample_rate: int, bands: int) -> torch.Tensor:
    """(n_bins, bands) weights: linear interpolation in mel between band centres (each row sums to 1)."""
    freqs = np.linspace(0.0, sample_rate / 2, n_bins)
    mel = 2595.0 * np.log10(1.0 + freqs / 700.0)
    centres = np.linspace(mel[1], mel[-1], bands)
    w = np.zeros((n_bins, bands))
    pos = np.interp(mel, centres, np.arange(bands, dtype=np.float64))
    lo = np.floor(pos).astype(int).clip(0, bands - 1)
    hi = (lo + 1).clip(0, bands - 1)
    frac = pos - lo
    w[np.arange(n_bins), lo] += 1.0 - frac
    w[np.arange(n_bins), hi] += frac
    return torch.from_numpy(w)


def frame_interpolation(n_frames: int, frames: int) -> torch.Tensor:
    """(frames, n_frames) weights: linear interpolation in time from gain frames to STFT frames."""
    pos = np.linspace(0.0, frames - 1, n_frames) if frames > 1 else np.zeros(n_frames)
    lo = np.floor(pos).astype(int).clip(0, frames - 1)
    hi = (lo + 1).clip(0, frames - 1)
    frac = pos - lo
    w = np.zeros((frames, n_frames))
    w[lo, np.arange(n_frames)] += 1.0 - frac
    w[hi, np.arange(n_frames)] += frac
    return torch.from_numpy(w)


def gain_frames(n_samples: int, sample_rate: int, frame_s: float) -> int:
    return max(2, int(math.ceil(n_samples / sample_rate / frame_s)) + 1)


def _stft(x: torch.Tensor) -> torch.Tensor:
    return torch.stft(x, N_FFT, hop_length=HOP, window=torch.hann_window(N_FFT, dtype=x.dtype), center=True,
                      pad_mode="reflect", return_complex=True)


def _istft(spec: torch.Tensor, length: int) -> torch.Tensor:
    return torch.istft(spec, N_FFT, hop_length=HOP, window=torch.hann_window(N_FFT, dtype=spec.real.dtype),
                       center=True, length=length)


class GainField:
    """Maps a (bands, frames) log-gain in dB onto the STFT grids of one stretch of audio.

    `db` gives the gain on the synthesis STFT (N_FFT / HOP, which is also the DSP
    embedder's main STFT), `db_on(n_fft, hop)` on another grid (the embedder's
    chroma STFT). Bins under SUBSONIC_HZ are never boosted (no DC or rumble pumped up
    to meet a drone's mean spectrum).
    """

    def __init__(self, n_samples: int, sample_rate: int, settings: TextureSettings) -> None:
        self.n_samples, self.sample_rate, self.bands = n_samples, sample_rate, settings.bands
        self.frames = gain_frames(n_samples, sample_rate, settings.frame_s)
        self._grids: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def _grid(self, n_fft: int, hop: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        key = (n_fft, hop)
        if key not in self._grids:
            n_bins = n_fft // 2 + 1
            f = band_interpolation(n_bins, self.sample_rate, self.bands).float()
            t = frame_interpolation(self.n_samples // hop + 1, self.frames).float()
            sub = torch.from_numpy(np.linspace(0.0, self.sample_rate / 2, n_bins) < SUBSONIC_HZ)[:, None]
            self._grids[key] = (f, t, sub)
        return self._grids[key]

    def db_on(self, grid_db: torch.Tensor, n_fft: int, hop: int, stride: int = 1) -> torch.Tensor:
        """(bands, frames) dB -> (n_fft // 2 + 1, stft frames) dB (every `stride`-th frame)."""
        f, t, sub = self._grid(n_fft, hop)
        db = f @ grid_db @ t[:, ::stride]
        return torch.where(sub, -torch.relu(-db), db)

    def db(self, grid_db: torch.Tensor) -> torch.Tensor:
        return self.db_on(grid_db, N_FFT, HOP)


def apply_gain(audio: torch.Tensor, db: torch.Tensor) -> torch.Tensor:
    """Scale each channel's STFT magnitude by `db` (bins x frames), keep its phase, resynthesise."""
    return _istft(_stft(audio) * torch.pow(10.0, db / 20.0), audio.shape[-1])


# --- differentiable content measures (torch twins of engine.features, on power spectrograms) ----

def _pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a = a.reshape(-1) - a.mean()
    b = b.reshape(-1) - b.mean()
    return (a * b).sum() / torch.sqrt((a * a).sum() * (b * b).sum() + 1e-20)


class ContentMeasures:
    """Per-frame chroma, onset envelope and long-term centroid, as in `engine.features`, from power spectra."""

    def __init__(self, embedder, sample_rate: int) -> None:
        self.chroma_fb = embedder.chroma_fb.float()
        freqs = np.fft.rfftfreq(N_FFT, 1.0 / sample_rate)
        edges = np.geomspace(40.0, min(16000.0, sample_rate / 2), 41)
        bands = np.stack([(freqs >= lo) & (freqs < hi) for lo, hi in zip(edges[:-1], edges[1:])]).astype(np.float32)
        self.onset_bands = torch.from_numpy(bands)
        self.freqs = torch.from_numpy(freqs.astype(np.float32))
        self.k_weight = torch.from_numpy(k_weighting(freqs, sample_rate).astype(np.float32))

    def log_loudness(self, power: torch.Tensor) -> torch.Tensor:
        """log of the K-weighted mean power (BS.1770's weighting, no gating): what the loudness match reads."""
        return torch.log((self.k_weight * power.mean(dim=-1)).sum() + 1e-20)

    def log_headroom_cost(self, power: torch.Tensor) -> torch.Tensor:
        """log(loudest frame's unweighted power / K-weighted mean power): a crest factor that grows when bass
        the meter barely hears, or boosted transients, eat the peak headroom the loudness match needs."""
        return torch.log(power.sum(dim=0).max() + 1e-20) - self.log_loudness(power)

    def chroma(self, cpow: torch.Tensor) -> torch.Tensor:
        c = self.chroma_fb @ torch.sqrt(cpow + 1e-12)
        return c / (c.sum(dim=0, keepdim=True) + 1e-9)

    def onset(self, power: torch.Tensor) -> torch.Tensor:
        db = 10.0 * torch.log10(self.onset_bands @ power + 1e-12)
        db = torch.maximum(db, db.max().detach() - 80.0)
        return torch.relu(db[:, 1:] - db[:, :-1]).sum(dim=0)

    def log_centroid(self, power: torch.Tensor) -> torch.Tensor:
        p = power.mean(dim=-1)
        return torch.log((self.freqs * p).sum() / (p.sum() + 1e-20) + 1.0)


def k_weighting(freqs: np.ndarray, sample_rate: int) -> np.ndarray:
    """|H(f)|^2 of BS.1770's K-weighting (pyloudnorm's two biquads) at `freqs`."""
    import pyloudnorm
    from scipy.signal import freqz

    h = np.ones(len(freqs))
    for f in pyloudnorm.Meter(sample_rate)._filters.values():
        h = h * np.abs(freqz(f.b, f.a, worN=freqs, fs=sample_rate)[1]) ** 2
    return h


# --- the optimisation ---------------------------------------------------------------------

def weights_vector(embedder, weights: dict) -> torch.Tensor:
    """sqrt(group weight) per embedding dimension, so the squared distance weights the groups."""
    w = torch.ones(embedder.dim)
    for group, sl in embedder.slices.items():
        w[sl] = float(weights.get(group, 1.0)) ** 0.5
    return w


def weighted_distance(embedder, audio: np.ndarray, reference: torch.Tensor, w: torch.Tensor) -> float:
    """||w * (E(audio) - ref)|| for (C, N) audio, the benchmark's distance."""
    with torch.no_grad():
        e = embedder(torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))[None])[0].double()
    return float(torch.linalg.vector_norm(w.double() * (e - reference.reshape(-1).double())))


def windows(n: int, rate: int, settings: TextureSettings) -> list[tuple[int, int]]:
    """[start, stop) windows of at most window_s covering n samples, overlapping by overlap_s."""
    win = int(settings.window_s * rate) // HOP * HOP   # starts on the STFT grid, so the gains line up
    if n <= win + HOP:
        return [(0, n)]
    hop = win - int(settings.overlap_s * rate) // HOP * HOP
    starts = list(range(0, (n - win) // HOP * HOP, hop)) + [(n - win) // HOP * HOP]
    return [(s, min(s + win, n) if s != starts[-1] else n) for s in starts]


def optimise_window(embedder, content: ContentMeasures, mid: torch.Tensor, anchor: torch.Tensor,
                    reference: torch.Tensor, w: torch.Tensor, field: GainField, settings: TextureSettings,
                    on_iteration: Optional[Callable[[], None]] = None, tone: int = 0) -> torch.Tensor:
    """The (bands, frames) log-gain in dB that moves `mid` toward the reference, keeping `anchor`'s content.

    Works on power spectrograms: the gained audio's spectrogram is taken as the input's
    times the gain squared (exact up to STFT consistency for a gain this smooth), so an
    iteration costs no STFT; and every `frame_stride`-th frame stands for its neighbours
    (the statistics are means, spreads and correlations over time, and the gain moves
    only every ~100 ms). The caller measures the real result.
    """
    cfg = embedder.config
    with torch.no_grad():
        power, cpow = (p[0].float() for p in embedder.spectra(mid[None, None]))
        a_power, a_cpow = (p[0].float() for p in embedder.spectra(anchor[None, None]))
        k = settings.frame_stride
        power, a_power = power[:, ::k].contiguous(), a_power[:, ::k].contiguous()
        anchor_chroma = content.chroma(a_cpow)
        anchor_onset = content.onset(a_power)
        centroid0 = content.log_centroid(power)
        loudness0 = content.log_loudness(power)
        headroom0 = content.log_headroom_cost(power)
    raw = torch.zeros(settings.bands, field.frames, requires_grad=True)
    opt = torch.optim.Adam([raw], lr=settings.learning_rate)
    ref = (w * reference.reshape(-1).float()).detach()
    scale, offset = embedder.scale.float(), embedder.offset.float()
    for _ in range(settings.iterations):
        opt.zero_grad()
        unit = torch.tanh(raw)
        grid = settings.bound_db * unit
        p = power * torch.pow(10.0, field.db_on(grid, N_FFT, HOP, k) / 10.0)
        cp = cpow * torch.pow(10.0, field.db_on(grid, cfg.chroma_n_fft, cfg.chroma_hop) / 10.0)
        f = embedder.features_from_power(p[None], cp[None])
        e = (torch.cat([f[g] for g in embedder.slices], dim=1)[0] - offset) / scale * w
        loss = ((e - ref) ** 2).sum()
        if settings.chroma_weight:
            loss = loss + settings.chroma_weight * (1.0 - _pearson(content.chroma(cp), anchor_chroma))
        if settings.onset_weight:
            loss = loss + settings.onset_weight * (1.0 - _pearson(content.onset(p), anchor_onset))
        if settings.centroid_weight:
            moved = content.log_centroid(p) - centroid0
            against = moved ** 2 if tone == 0 else moved ** 2 + 10.0 * torch.relu(-tone * moved) ** 2
            loss = loss + settings.centroid_weight * against
        if settings.loudness_weight:   # the loudness match that follows would undo a level change: keep it
            loss = loss + settings.loudness_weight * (content.log_loudness(p) - loudness0) ** 2
        if settings.headroom_weight:
            loss = loss + settings.headroom_weight * torch.relu(content.log_headroom_cost(p) - headroom0) ** 2
        loss = loss + settings.smooth_time * (unit[:, 1:] - unit[:, :-1]).pow(2).mean() * field.frames \
            + settings.smooth_freq * (unit[1:] - unit[:-1]).pow(2).mean() * settings.bands
        loss.backward()
        opt.step()
        if on_iteration is not None:
            on_iteration()
    return (settings.bound_db * torch.tanh(raw)).detach()


def texture_match(audio: np.ndarray, anchor: np.ndarray, rate: int, embedder, reference: torch.Tensor,
                  weights: dict, strength: float, settings: TextureSettings = TextureSettings(),
                  on_iteration: Optional[Callable[[], None]] = None, tone: str = "neutral") -> TextureResult:
    """Move (C, N) `audio` toward `reference` with a smooth bounded gain; `anchor` is the content to keep.

    The result is loudness-matched back to `audio` (the optimiser saw it at that level).
    `tone` ("dark", "bright", "neutral") is the way the chain moved the centroid: the
    stage keeps the chain's centroid, and a move back against the tone costs ten times more.
    """
    t0 = time.perf_counter()
    audio = np.ascontiguousarray(audio, dtype=np.float32)
    w = weights_vector(embedder, weights)
    before = weighted_distance(embedder, audio, reference, w)
    if strength <= 0.0 or settings.iterations <= 0:
        return TextureResult(audio.copy(), [], before, before, time.perf_counter() - t0, 0.0)
    x = torch.from_numpy(audio)
    mid = x.mean(dim=0)
    anc = torch.from_numpy(np.ascontiguousarray(anchor, dtype=np.float32)).mean(dim=0)
    content = ContentMeasures(embedder, rate)
    n = audio.shape[1]
    spans = windows(n, rate, settings)
    n_stft = n // HOP + 1
    total_db = torch.zeros(N_FFT // 2 + 1, n_stft)
    total_w = torch.zeros(n_stft)
    grids = []
    for a, b in spans:
        field = GainField(b - a, rate, settings)
        grid = optimise_window(embedder, content, mid[a:b], anc[a:b], reference, w, field, settings, on_iteration,
                               tone={"dark": -1, "bright": 1}.get(tone, 0))
        grids.append(grid.numpy())
        db = field.db(grid * float(strength))
        fa = a // HOP
        m = min(db.shape[1], n_stft - fa)
        ramp = _ramp(m, int(settings.overlap_s * rate) // HOP, a > 0, b < n)
        total_db[:, fa:fa + m] += db[:, :m] * ramp
        total_w[fa:fa + m] += ramp
    total_db = total_db / total_w.clamp(min=1e-6)
    goal = integrated_lufs(audio, rate)
    for fraction in BACK_OFF_FRACTIONS:
        # Apply the gain and match the loudness back. Where the peak ceiling would cost level (a peakier
        # result), or the real distance did not fall (the optimiser's spectrogram model was wrong), apply a
        # smaller fraction of the gain instead: the stage never costs level or distance.
        with torch.no_grad():
            out = match_loudness(apply_gain(x, total_db * fraction).numpy().astype(np.float32), rate, goal)
        after = weighted_distance(embedder, out, reference, w)
        level_ok = not math.isfinite(goal) or integrated_lufs(out, rate) >= goal - LEVEL_TOLERANCE_DB
        if fraction == 0.0 or (level_ok and after < before):
            break
    if fraction == 0.0:
        out, after = audio.copy(), before
    return TextureResult(out, grids, before, after, time.perf_counter() - t0, fraction)


def _ramp(m: int, overlap: int, fade_in: bool, fade_out: bool) -> torch.Tensor:
    """Cross-fade weights over one window's STFT frames (linear over the overlap at inner edges)."""
    r = torch.ones(m)
    k = max(1, min(overlap, m // 2))
    if fade_in:
        r[:k] = torch.linspace(1.0 / (k + 1), 1.0, k)
    if fade_out:
        r[m - k:] = torch.minimum(r[m - k:], torch.linspace(1.0, 1.0 / (k + 1), k))
    return r
