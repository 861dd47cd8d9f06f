"""Music analysis of a whole input: frame features, onset strength, tempo and a beat grid.

Why our own numpy tracker and not librosa: librosa's numba JIT costs about 20 s on the
first beat-tracking call on a laptop CPU, longer than the whole edit should take. The
method is the textbook one (spectral-flux onset strength, autocorrelation tempo with a
log-normal prior, Ellis' dynamic-programming beat tracker); tests check it against
signals of known tempo.

All features come from one STFT pass (n_fft 2048, hop 512 at 44.1 kHz, about 11.6 ms a
frame), computed in chunks so a ten-minute track never holds its whole spectrogram.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Optional

import numpy as np
import torch

N_FFT = 2048
HOP = 512
N_MELS = 40
TEMPO_RANGE_BPM = (60.0, 200.0)
TEMPO_PRIOR_BPM = 120.0
# Below this normalised autocorrelation at the beat period the input counts as beatless
# (ambient pads, speech, noise), and candidates are searched frame by frame.
MIN_PERIODICITY = 0.2
# Chroma's 12 dimensions weigh about as much as the 40 timbre bands together: harmony matters.
CHROMA_WEIGHT = 1.3


@dataclass
class Analysis:
    """What the prior knows about one input (mono mix, at `sample_rate`).

    `features` (frames, D) are z-scored per dimension over the track: log-mel timbre
    then chroma. `beats` are sample positions (empty when `has_beat` is False).
    """

    sample_rate: int
    length: int
    hop: int
    features: np.ndarray
    onset: np.ndarray
    rms_db: np.ndarray
    tempo_bpm: Optional[float]
    beats: np.ndarray
    periodicity: float

    @property
    def has_beat(self) -> bool:
        return self.tempo_bpm is not None and len(self.beats) >= 4

    @property
    def frames(self) -> int:
        return self.features.shape[0]

    @property
    def beat_period_s(self) -> Optional[float]:
        return None if self.tempo_bpm is None else 60.0 / self.tempo_bpm

    def beat_phases(self, samples: np.ndarray) -> np.ndarray:
        """Vectorised `beat_phase`."""
        b = self.beats.astype(np.float64)
        x = np.asarray(samples, dtype=np.float64)
        if len(b) < 2:
            return np.zeros_like(x)
        ph = np.interp(x, b, np.arange(len(b), dtype=np.float64))
        ph = np.where(x < b[0], (x - b[0]) / (b[1] - b[0]), ph)
        return np.where(x > b[-1], len(b) - 1 + (x - b[-1]) / (b[-1] - b[-2]), ph)

    def beat_phase(self, sample: float) -> float:
        """Fractional beat index of a sample position (linear between tracked beats, extrapolated outside)."""
        b = self.beats.astype(np.float64)
        if len(b) < 2:
            return 0.0
        if sample <= b[0]:
            return (sample - b[0]) / (b[1] - b[0])
        if sample >= b[-1]:
            return len(b) - 1 + (sample - b[-1]) / (b[-1] - b[-2])
        i = int(np.searchsorted(b, sample, side="right")) - 1
        return i + (sample - b[i]) / (b[i + 1] - b[i])


@lru_cache(maxsize=16)
def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float = 30.0,
                   fmax: Optional[float] = None) -> np.ndarray:
    """Triangular filters on the mel scale, (n_mels, n_fft // 2 + 1)."""
    fmax = fmax or sample_rate / 2
    mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)  # noqa: E731
    hz = lambda m: 700.0 * (10 ** (m / 2595.0) - 1.0)  # noqa: E731
    edges = hz(np.linspace(mel(fmin), mel(fmax), n_mels + 2))
    freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    fb = np.zeros((n_mels, len(freqs)), np.float32)
    for i in range(n_mels):
        lo, mid, hi = edges[i], edges[i + 1], edges[i + 2]
        up = (freqs - lo) / max(mid - lo, 1e-9)
        down = (hi - freqs) / max(hi - mid, 1e-9)
        fb[i] = np.clip(np.minimum(up, down), 0, None)
    return fb


def _chroma_map(sample_rate: int, n_fft: int, fmin: float = 55.0, fmax: float = 5000.0) -> np.ndarray:
    """Each STFT bin between fmin and fmax to its pitch class, (12, n_fft // 2 + 1)."""
    freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    m = np.zeros((12, len(freqs)), np.float32)
    ok = (freqs >= fmin) & (freqs <= fmax)
    pc = np.mod(np.round(12 * np.log2(np.maximum(freqs[ok], 1e-9) / 440.0)) + 9, 12).astype(int)  # 0 = C
    m[pc, np.nonzero(ok)[0]] = 1.0
    return m


def spectral_frames(mono: np.ndarray, sample_rate: int, chunk_frames: int = 2048) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(log-mel (T, N_MELS), chroma (T, 12), rms dB (T,)) of a mono signal, frame k centred on sample k * HOP."""
    x = torch.from_numpy(np.ascontiguousarray(mono, dtype=np.float32))
    n_frames = len(mono) // HOP + 1
    fb = torch.from_numpy(mel_filterbank(sample_rate, N_FFT, N_MELS))
    cm = torch.from_numpy(_chroma_map(sample_rate, N_FFT))
    window = torch.hann_window(N_FFT)
    padded = torch.nn.functional.pad(x[None, None], (N_FFT // 2, N_FFT // 2), mode="reflect" if len(mono) > N_FFT
                                     else "constant")[0, 0]
    mels, chromas, rms = [], [], []
    for k0 in range(0, n_frames, chunk_frames):
        k1 = min(n_frames, k0 + chunk_frames)
        seg = padded[k0 * HOP:(k1 - 1) * HOP + N_FFT]
        frames = seg.unfold(0, N_FFT, HOP)[: k1 - k0]
        spec = torch.fft.rfft(frames * window, dim=-1)
        power = spec.real ** 2 + spec.imag ** 2
        mels.append(torch.log(power @ fb.T + 1e-6))
        chroma = power @ cm.T
        chromas.append(chroma / (chroma.norm(dim=-1, keepdim=True) + 1e-6))
        rms.append(10 * torch.log10(frames.pow(2).mean(dim=-1) + 1e-10))
    return torch.cat(mels).numpy(), torch.cat(chromas).numpy(), torch.cat(rms).numpy()


def onset_strength(log_mel: np.ndarray) -> np.ndarray:
    """Spectral flux: summed positive log-mel rises, minus a 0.5 s local mean, half-wave rectified."""
    flux = np.zeros(len(log_mel), np.float32)
    if len(log_mel) > 1:
        flux[1:] = np.maximum(np.diff(log_mel, axis=0), 0.0).mean(axis=1)
    k = 21
    local = np.convolve(np.pad(flux, (k // 2, k // 2), mode="edge"), np.ones(k) / k, mode="valid")
    return np.maximum(flux - local, 0.0).astype(np.float32)


def onset_autocorrelation(onset: np.ndarray) -> np.ndarray:
    """The onset envelope's autocorrelation (mean removed), normalised to 1 at lag 0."""
    o = onset - onset.mean()
    n = len(o)
    size = 1 << int(np.ceil(np.log2(2 * n)))
    spec = np.fft.rfft(o, size)
    ac = np.fft.irfft(spec * np.conj(spec), size)[:n]
    return ac / max(ac[0], 1e-12)


def metre_alternative(an: Analysis) -> Optional[float]:
    """The 3:2 reading of a tracked beat (BPM) where the onsets repeat more strongly at it, else None.

    Compound and simple metre share their eighth notes: a 6/8 piece at 123 BPM is as
    well a 4/4 piece at 184. The tempo prior centred on 120 BPM picks one; when the
    autocorrelation is higher at 2/3 or 3/2 of the chosen lag, the other reading is
    the stronger pulse, and a clip joined to this one should follow that.
    """
    if not an.has_beat:
        return None
    ac = onset_autocorrelation(an.onset)
    frame_rate = an.sample_rate / an.hop
    lag = 60.0 / an.tempo_bpm * frame_rate

    def at(x: float) -> float:
        i = int(round(x))
        return float(ac[max(1, i - 1):i + 2].max()) if 1 <= i < len(ac) - 1 else -np.inf

    lo, hi = TEMPO_RANGE_BPM
    best, best_ac = None, at(lag)
    for ratio in (2.0 / 3.0, 1.5):
        bpm = an.tempo_bpm / ratio
        if lo <= bpm <= hi and (v := at(lag * ratio)) > best_ac:
            best, best_ac = bpm, v
    return best


LOCAL_TEMPO_SPAN_S = 30.0      # the music before a join whose tempo B must follow
LOCAL_TEMPO_HARMONICS = 4      # a comb over the beat frequency's first multiples: a pulse train, not a sine
LOCAL_TEMPO_WITHIN = 0.006     # refine the grid's tempo by at most this fraction, never re-read it


def local_tempo_bpm(an: Analysis, stop: int, span_s: float = LOCAL_TEMPO_SPAN_S,
                    harmonics: int = LOCAL_TEMPO_HARMONICS, within: float = LOCAL_TEMPO_WITHIN) -> Optional[float]:
    """The tempo of the `span_s` before sample `stop`: where the onsets there add up most coherently.

    The grid's own tempo is the slope of every tracked beat over the whole clip. Where the
    tracker free-runs through a breakdown at its autocorrelation period, or the band
    moves a little, that slope is a few tenths of a percent off the music at the join,
    and a clip stretched to it drifts tens of milliseconds off within a few beats. The
    onset envelope's power at the beat frequency and its first `harmonics` - 1 multiples
    peaks sharply at the local period; the search stays within `within` of the grid's
    tempo, so a grid read at the wrong octave or metre is never re-read here.
    None without a beat grid or with too little onset before `stop`.
    """
    if not an.has_beat:
        return None
    frame_s = an.hop / an.sample_rate
    k1 = min(len(an.onset), int(stop // an.hop))
    k0 = max(0, k1 - int(span_s / frame_s))
    period = 60.0 / an.tempo_bpm
    if (k1 - k0) * frame_s < 4 * period:
        return None
    o = an.onset[k0:k1].astype(np.float64)
    o = o - o.mean()
    if not o.any():
        return None
    t = np.arange(k0, k1) * frame_s                       # frame k is centred on sample k * hop
    grid = period * np.linspace(1.0 - within, 1.0 + within, 241)
    power = np.zeros(len(grid))
    for h in range(1, harmonics + 1):
        power += np.abs(np.exp(-2j * np.pi * h * t[None, :] / grid[:, None]) @ o) ** 2
    return 60.0 / float(grid[int(np.argmax(power))])


def estimate_tempo(onset: np.ndarray, frame_rate: float, hint_bpm: Optional[float] = None) -> tuple[float, float]:
    """(tempo in BPM, periodicity in [0, 1]) from the onset envelope's autocorrelation.

    A log-normal prior centred on 120 BPM (one octave wide) settles octave choices; a
    DAW's tempo hint narrows the search to within 4 % of it (or of its half / double).
    Periodicity is the autocorrelation at the chosen period over its value at lag 0.
    """
    n = len(onset)
    if n < 8 or not np.any(onset - onset.mean()):
        return TEMPO_PRIOR_BPM, 0.0
    ac = onset_autocorrelation(onset)
    lo_bpm, hi_bpm = TEMPO_RANGE_BPM
    lags = np.arange(1, n)
    bpm = 60.0 * frame_rate / lags
    ok = (bpm >= lo_bpm * 0.98) & (bpm <= hi_bpm * 1.02)
    if hint_bpm is not None:
        near = np.zeros_like(ok)
        for mult in (0.5, 1.0, 2.0):
            near |= np.abs(bpm / (hint_bpm * mult) - 1.0) <= 0.04
        ok &= near
        if not ok.any():
            ok = np.abs(bpm / hint_bpm - 1.0) <= 0.04
    if not ok.any():
        return TEMPO_PRIOR_BPM, 0.0
    weight = np.exp(-0.5 * (np.log2(bpm / TEMPO_PRIOR_BPM)) ** 2)
    if hint_bpm is not None:
        weight = np.exp(-0.5 * (np.log2(bpm / hint_bpm) / 0.05) ** 2)
    # A period's evidence: its own peak plus its multiples (a beat repeats every bar too).
    evidence = np.where(ok, ac[lags], -np.inf)
    score = np.where(ok, np.maximum(evidence, 0) * weight, -np.inf)
    i = int(np.argmax(score))
    lag = float(lags[i])
    # Parabolic interpolation of the peak for sub-frame precision.
    if 1 <= lags[i] < n - 1:
        y0, y1, y2 = ac[lags[i] - 1], ac[lags[i]], ac[lags[i] + 1]
        den = y0 - 2 * y1 + y2
        if den < 0:
            lag += float(np.clip(0.5 * (y0 - y2) / den, -0.5, 0.5))
    return 60.0 * frame_rate / lag, float(max(ac[lags[i]], 0.0))


def track_beats(onset: np.ndarray, period_frames: float, tightness: float = 100.0) -> np.ndarray:
    """Ellis (2007) dynamic-programming beats: onset strength rewarded, deviation from the period punished.

    Returns frame indices of beats.
    """
    n = len(onset)
    if n == 0 or period_frames < 2:
        return np.zeros(0, int)
    o = onset / (onset.std() + 1e-9)
    lo, hi = max(1, int(round(period_frames / 2))), int(round(period_frames * 2))
    taus = np.arange(lo, hi + 1)
    penalty = -tightness * np.log(taus / period_frames) ** 2
    score = o.astype(np.float64).copy()
    back = np.full(n, -1, int)
    # Every frame looks back at least `lo` frames, so `lo` frames at a time depend only on
    # frames already final: the recurrence runs as vector operations over such blocks.
    for t0 in range(lo, n, lo):
        t = np.arange(t0, min(n, t0 + lo))
        prev = t[:, None] - taus[None, :]
        valid = prev >= 0
        cand = np.where(valid, score[np.maximum(prev, 0)] + penalty[None, :], -np.inf)
        j = np.argmax(cand, axis=1)
        score[t] = o[t] + cand[np.arange(len(t)), j]
        back[t] = prev[np.arange(len(t)), j]
    # End on the best-scoring frame within the last period, then follow the pointers back.
    tail = max(0, n - int(np.ceil(period_frames)))
    t = tail + int(np.argmax(score[tail:]))
    beats = [t]
    while back[t] >= 0:
        t = back[t]
        beats.append(t)
    return np.array(beats[::-1], int)


FINE_HOP = 128        # 2.9 ms: beat phases are judged to a few milliseconds
FINE_N_FFT = 1024


def fine_onset(mono: np.ndarray, sample_rate: int, start: int, stop: int, hop: int = FINE_HOP) -> tuple[np.ndarray, np.ndarray]:
    """(onset strength, frame centre in samples) of mono[start:stop] at a 128-sample hop.

    The whole-track analysis runs at 11.6 ms frames, too coarse to place B's hits on A's
    grid within 10 ms; this finer log-mel flux is computed only where a join needs it.
    """
    start, stop = max(0, int(start)), min(len(mono), int(stop))
    if stop - start < FINE_N_FFT + 2 * hop:
        return np.zeros(0), np.zeros(0)
    x = torch.from_numpy(np.ascontiguousarray(mono[start:stop], dtype=np.float32))
    frames = x.unfold(0, FINE_N_FFT, hop)
    spec = torch.fft.rfft(frames * torch.hann_window(FINE_N_FFT), dim=-1)
    fb = torch.from_numpy(mel_filterbank(sample_rate, FINE_N_FFT, N_MELS))
    log_mel = torch.log((spec.real ** 2 + spec.imag ** 2) @ fb.T + 1e-6).numpy()
    flux = np.zeros(len(log_mel))
    flux[1:] = np.maximum(np.diff(log_mel, axis=0), 0.0).mean(axis=1)
    centres = start + FINE_N_FFT // 2 + hop * np.arange(len(flux))
    return flux, centres.astype(np.float64)


def _onset_bias(mono: np.ndarray, beats: np.ndarray, hop: int = 64, win: int = 256) -> int:
    """Samples to add to frame-level beats so they sit on the attacks (median over beats).

    Frame flux fires about a window's slope early; a fine energy envelope (256-sample
    windows, 64-sample hop) finds each attack within a frame of its beat, and the median
    shift corrects the whole grid without breaking its regularity.
    """
    n = len(mono) // hop
    if n < 4 or len(beats) == 0:
        return 0
    sq = np.concatenate([[0.0], np.cumsum(np.pad(mono.astype(np.float64), (0, win)) ** 2)])
    starts = np.arange(n) * hop
    env = np.log((sq[starts + win] - sq[starts]) / win + 1e-10)
    rise = np.zeros(n)
    rise[1:] = np.maximum(np.diff(env), 0)
    shifts = []
    reach = int(1.5 * HOP / hop)
    for b in beats:
        j = int(b // hop)
        lo, hi = max(1, j - reach), min(n, j + reach + 1)
        if hi - lo < 2:
            continue
        k = lo + int(np.argmax(rise[lo:hi]))
        shifts.append(k * hop + win - hop // 2 - b)
    return int(np.median(shifts)) if shifts else 0


def analyse(audio: np.ndarray, sample_rate: int, *, bpm_hint: Optional[float] = None,
            beat_offset_s: Optional[float] = None) -> Analysis:
    """Analyse a (channels, samples) input; mono is the channel mean."""
    mono = audio.mean(axis=0) if audio.ndim == 2 else audio
    log_mel, chroma, rms_db = spectral_frames(mono, sample_rate)
    onset = onset_strength(log_mel)
    frame_rate = sample_rate / HOP
    tempo, periodicity = estimate_tempo(onset, frame_rate, bpm_hint)
    timbre = (log_mel - log_mel.mean(axis=0)) / (log_mel.std(axis=0) + 1e-3)
    chroma_z = (chroma - chroma.mean(axis=0)) / (chroma.std(axis=0) + 1e-3)
    features = np.concatenate([timbre, CHROMA_WEIGHT * chroma_z], axis=1).astype(np.float32)
    beats = np.zeros(0, int)
    confident = periodicity >= MIN_PERIODICITY or bpm_hint is not None
    if confident and len(onset) > 4 * frame_rate * 60.0 / tempo:
        period = frame_rate * 60.0 / tempo
        frames = track_beats(onset, period)
        beats = frames * HOP
        if beat_offset_s is not None and len(beats):
            # The DAW's grid names the phase: move the tracked grid onto it when they disagree by < half a beat.
            offset = int(round(beat_offset_s * sample_rate))
            step = period * HOP
            shift = (offset - beats[0]) % step
            shift = shift - step if shift > step / 2 else shift
            beats = beats + int(round(shift))
        else:
            beats = beats + _onset_bias(mono, beats)
        beats = beats[(beats >= 0) & (beats < len(mono))]
        if len(beats) >= 4:
            # The tempo of the grid itself: the slope of beat times against beat index.
            idx = np.arange(len(beats))
            tempo = 60.0 * sample_rate / float(np.polyfit(idx, beats, 1)[0])
    has_grid = len(beats) >= 4
    return Analysis(sample_rate=sample_rate, length=len(mono), hop=HOP, features=features, onset=onset,
                    rms_db=rms_db, tempo_bpm=float(tempo) if has_grid else None, beats=beats,
                    periodicity=float(periodicity))
