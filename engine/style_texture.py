"""Texture match: embedding guidance on an EQ curve and per-band dynamics, so it cannot destroy the music.

Why. The effect chain sets a clip's colour but moves its distance to the preset's
reference embedding by -7..+15 %, and the diffusion model's guidance re-noised the
clip (onsets lost) without getting closer. Here guidance optimises something that
can only re-weigh what is already there, per mel-spaced band (48, interpolated onto
the STFT bins):

  gain(bin, frame) dB = EQ(bin) + expansion(bin) * accent(bin, frame)

with EQ bounded to +-`bound_db` and expansion to +-`expansion_max` by tanh, and the
accent the band's own level (read over ~35 ms) against its mean over `envelope_s`,
clipped to +-`envelope_clip_db`: expansion above 0 deepens the music's accents, below
0 evens them out, like a multiband expander or compressor. The gain is applied to the
STFT magnitude with the original phase (then iSTFT). No new notes, no new onsets, no
phase damage, and nothing moves in time unless the music does: an earlier free
(band x 100 ms) gain manufactured a drum reference's dynamics with slow broadband
sweeps the music did not have (measured here as `drift_db`).

The parameters are found by Adam (a fixed number of iterations from zero, so the
result is deterministic) on the gained power spectrogram, brought back to the
input's K-weighted loudness (the loudness match that follows, modelled), with

    ||w * (E(y) - ref)||^2                        (the preset's weighted embedding distance)
  + chroma_weight * (1 - corr(chroma(y), chroma(x0)))   (harmony kept, per frame)
  + onset_weight * (1 - corr(onset(y), onset(x0)))      (rhythm kept)
  + centroid_weight * (log centroid(y) - log centroid(x))^2       (the chain's colour kept; 10x against its tone)
  + top_weight * relu(against the tone: log share above 8 kHz(y) - that of x)^2   (the air a centroid hides)
  + headroom_weight * relu(growth of unweighted / K-weighted power)^2   (no bass or accents that only eat headroom)
  + smooth_freq * (roughness of EQ and expansion across bands)

with E the DSP embedder and x0 the content anchor (the clip before the chain, which
is what the benchmark's chroma and onset correlations compare with). `strength`
is the fraction of the optimised gain applied (0 returns the input untouched).
Long audio is analysed in windows; one EQ and one expansion are fitted to all of them at once, and
the windows' gains (each on its own accents) are cross-faded in the log domain.
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
TOP_HZ = 8000.0
LEVEL_TOLERANCE_DB = 0.5                       # the loudness the stage may lose to the peak ceiling
BACK_OFF_FRACTIONS = (1.0, 0.75, 0.5, 0.25, 0.0)


@dataclass(frozen=True)
class TextureSettings:
    """The stage's knobs; the defaults were chosen on training-split clips (BENCHMARKS.md, "Style presets")."""

    iterations: int = 60
    learning_rate: float = 0.3
    bound_db: float = 12.0           # the EQ curve's bound
    expansion_max: float = 1.0       # |expansion|: 1 doubles a band's accents, -1 flattens them
    envelope_s: float = 1.0          # the accents are the band's level against its mean over this long
    envelope_clip_db: float = 12.0
    detector_s: float = 0.035        # the band level is read over this long (a multiband dynamics' detector)
    bands: int = 48
    frame_stride: int = 4
    smooth_freq: float = 0.3         # roughness of EQ and expansion across bands (0.03 left a 3-5 dB comb)
    chroma_weight: float = 16.0
    onset_weight: float = 4.0
    centroid_weight: float = 20.0
    top_weight: float = 10.0         # the share above TOP_HZ kept from moving against the tone
    headroom_weight: float = 20.0
    window_s: float = 12.0
    overlap_s: float = 1.0

    def describe(self) -> dict:
        return asdict(self)


@dataclass
class TextureResult:
    """The matched audio, the EQ (dB) and expansion per band (one for the whole clip), and the distances."""

    audio: np.ndarray
    eq_db: np.ndarray
    expansion: np.ndarray
    windows: int
    distance_before: float
    distance_after: float
    seconds: float
    fraction_applied: float = 1.0   # under 1 where the full gain cost level (peak ceiling) or distance
    drift_db: float = 0.0           # the most any bin's applied gain, averaged over envelope_s, moves over the clip


# --- the gain: an EQ curve and per-band dynamics -------------------------------------------

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


def _stft(x: torch.Tensor) -> torch.Tensor:
    return torch.stft(x, N_FFT, hop_length=HOP, window=torch.hann_window(N_FFT, dtype=x.dtype), center=True,
                      pad_mode="reflect", return_complex=True)


def _istft(spec: torch.Tensor, length: int) -> torch.Tensor:
    return torch.istft(spec, N_FFT, hop_length=HOP, window=torch.hann_window(N_FFT, dtype=spec.real.dtype),
                       center=True, length=length)


def _odd_frames(seconds: float, sample_rate: int, hop: int) -> int:
    """`seconds` as an odd number of STFT frames (at least 1), so a moving mean over them is centred."""
    return int(round(seconds * sample_rate / hop)) // 2 * 2 + 1


def _moving_mean(x: torch.Tensor, span: int) -> torch.Tensor:
    """Centred moving mean along the last axis over `span` frames (odd), edges replicated."""
    if span <= 1:
        return x
    padded = torch.nn.functional.pad(x[None], (span // 2, span // 2), mode="replicate")[0]
    return torch.nn.functional.avg_pool1d(padded[None], span, stride=1)[0]


class GainGrid:
    """How (bands) EQ dB and (bands) expansion factors become a gain in dB on one STFT grid of one stretch.

    gain(bin, frame) = EQ(bin) + expansion(bin) * envelope(bin, frame), where the
    envelope is the band's own level (dB) minus its moving mean over `envelope_s`,
    clipped to +-`envelope_clip_db`: an expansion above 0 deepens the music's own
    accents (more punch), below 0 evens them out (smoother), and nothing in the gain can
    move unless the music does. Bins under SUBSONIC_HZ are never boosted (no DC or
    rumble pumped up to meet a drone's mean spectrum).
    """

    def __init__(self, power: torch.Tensor, sample_rate: int, hop: int, settings: "TextureSettings") -> None:
        n_bins = power.shape[0]
        self.interp = band_interpolation(n_bins, sample_rate, settings.bands).float()      # (bins, bands)
        pool = self.interp.T / self.interp.T.sum(dim=1, keepdim=True).clamp(min=1e-9)       # (bands, bins)
        level = 10.0 * torch.log10(pool @ power + 1e-12)
        level = torch.maximum(level, level.max() - 80.0)
        edge = -(-(n_bins - 1) // hop)      # frames whose window reaches past the clip (reflect padding) ...
        if level.shape[1] > 2 * edge + 1:   # ... do not read its level: they take their neighbour's
            level = torch.cat([level[:, edge:edge + 1].expand(-1, edge), level[:, edge:-edge],
                               level[:, -edge - 1:-edge].expand(-1, edge)], dim=1)
        # the detector's ~35 ms time constant: partials beating inside a band are not accents
        level = _moving_mean(level, _odd_frames(settings.detector_s, sample_rate, hop))
        accent = level - _moving_mean(level, _odd_frames(settings.envelope_s, sample_rate, hop))
        env = accent.clamp(-settings.envelope_clip_db, settings.envelope_clip_db)
        self.envelope = self.interp @ env                                                    # (bins, frames)
        self.subsonic = torch.from_numpy(np.linspace(0.0, sample_rate / 2, n_bins) < SUBSONIC_HZ)[:, None]

    def db(self, eq_db: torch.Tensor, expansion: torch.Tensor) -> torch.Tensor:
        db = (self.interp @ eq_db)[:, None] + (self.interp @ expansion)[:, None] * self.envelope
        return torch.where(self.subsonic, -torch.relu(-db), db)


def apply_gain(spec: torch.Tensor, db: torch.Tensor, length: int) -> torch.Tensor:
    """Scale each channel's STFT (`_stft`) magnitude by `db` (bins x frames), keep its phase, resynthesise."""
    return _istft(spec * torch.pow(10.0, db / 20.0), length)


# --- differentiable content measures (torch twins of engine.features, on power spectrograms) ----

def _pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a = a.reshape(-1) - a.mean()
    b = b.reshape(-1) - b.mean()
    return (a * b).sum() / torch.sqrt((a * a).sum() * (b * b).sum() + 1e-20)


class ContentMeasures:
    """Per-frame chroma, onset envelope and long-term centroid, as in `engine.features`, from power spectra."""

    def __init__(self, embedder, sample_rate: int) -> None:
        self.chroma_fb = embedder.chroma_fb.float()
        self.sample_rate = sample_rate
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

    def log_top_share(self, power: torch.Tensor) -> torch.Tensor:
        """log of the share of power above TOP_HZ: the air a centroid can hide (a bright clip's top octave)."""
        p = power.mean(dim=-1)
        return torch.log(p[self.freqs >= TOP_HZ].sum() / (p.sum() + 1e-20) + 1e-12)

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


@dataclass
class WindowTerms:
    """What one window's loss needs, computed once: its power spectrograms (every `frame_stride`-th
    frame of the main one), their gain grids, and the input's own measures the terms compare with."""

    power: torch.Tensor
    cpow: torch.Tensor
    grid: GainGrid
    cgrid: GainGrid
    anchor_chroma: torch.Tensor
    anchor_onset: torch.Tensor
    centroid0: torch.Tensor
    top0: torch.Tensor
    loudness0: torch.Tensor
    headroom0: torch.Tensor


def window_terms(embedder, content: ContentMeasures, mid: torch.Tensor, anchor: torch.Tensor,
                 settings: TextureSettings) -> WindowTerms:
    cfg = embedder.config
    rate = content.sample_rate
    with torch.no_grad():
        power, cpow = (p[0].float() for p in embedder.spectra(mid[None, None]))
        a_power, a_cpow = (p[0].float() for p in embedder.spectra(anchor[None, None]))
        grid, cgrid = GainGrid(power, rate, cfg.hop, settings), GainGrid(cpow, rate, cfg.chroma_hop, settings)
        k = settings.frame_stride
        grid.envelope = grid.envelope[:, ::k].contiguous()
        power, a_power = power[:, ::k].contiguous(), a_power[:, ::k].contiguous()
        return WindowTerms(power, cpow, grid, cgrid, content.chroma(a_cpow), content.onset(a_power),
                           content.log_centroid(power), content.log_top_share(power), content.log_loudness(power),
                           content.log_headroom_cost(power))


def window_loss(embedder, content: ContentMeasures, x: WindowTerms, eq_db: torch.Tensor, expansion: torch.Tensor,
                ref: torch.Tensor, w: torch.Tensor, settings: TextureSettings, tone: int) -> torch.Tensor:
    """The module docstring's loss for one window, the gain modelled on its power spectrograms."""
    p = x.power * torch.pow(10.0, x.grid.db(eq_db, expansion) / 10.0)
    cp = x.cpow * torch.pow(10.0, x.cgrid.db(eq_db, expansion) / 10.0)
    # The loudness match that follows the stage, modelled: judged at the input's loudness, the gain
    # cannot win by changing the level (expansion raises it), only by changing the balance.
    level = torch.exp(x.loudness0 - content.log_loudness(p))
    p, cp = p * level, cp * level
    f = embedder.features_from_power(p[None], cp[None])
    e = (torch.cat([f[g] for g in embedder.slices], dim=1)[0] - embedder.offset.float()) / embedder.scale.float() * w
    loss = ((e - ref) ** 2).sum()
    if settings.chroma_weight:
        loss = loss + settings.chroma_weight * (1.0 - _pearson(content.chroma(cp), x.anchor_chroma))
    if settings.onset_weight:
        loss = loss + settings.onset_weight * (1.0 - _pearson(content.onset(p), x.anchor_onset))
    if settings.centroid_weight:
        moved = content.log_centroid(p) - x.centroid0
        against = moved ** 2 if tone == 0 else moved ** 2 + 10.0 * torch.relu(-tone * moved) ** 2
        loss = loss + settings.centroid_weight * against
    if settings.top_weight and tone != 0:
        loss = loss + settings.top_weight * torch.relu(-tone * (content.log_top_share(p) - x.top0)) ** 2
    if settings.headroom_weight:
        loss = loss + settings.headroom_weight * torch.relu(content.log_headroom_cost(p) - x.headroom0) ** 2
    return loss


def optimise_gain(embedder, content: ContentMeasures, windows_terms: list[WindowTerms], reference: torch.Tensor,
                  w: torch.Tensor, settings: TextureSettings, on_iteration: Optional[Callable[[], None]] = None,
                  tone: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The (bands) EQ in dB and (bands) expansion that move every window toward the reference, keeping its content.

    One EQ and one expansion for the whole clip, fitted to all its windows at once (their
    losses averaged): a gain fitted window by window would change from one window to the
    next, a sweep over tens of seconds (measured: 18-20 dB of drift on 60 s). Works on
    power spectrograms: the gained audio's spectrogram is taken as the input's times the
    gain squared (exact up to STFT consistency for a gain this smooth), so an iteration
    costs no STFT; and every `frame_stride`-th frame stands for its neighbours (the
    statistics are means, spreads and correlations over time). The caller measures the
    real result. `on_iteration` is called once per window and iteration.
    """
    eq_raw = torch.zeros(settings.bands, requires_grad=True)
    ex_raw = torch.zeros(settings.bands, requires_grad=True)
    opt = torch.optim.Adam([eq_raw, ex_raw], lr=settings.learning_rate)
    ref = (w * reference.reshape(-1).float()).detach()
    n = len(windows_terms)

    def params() -> tuple[torch.Tensor, torch.Tensor]:
        return settings.bound_db * torch.tanh(eq_raw), settings.expansion_max * torch.tanh(ex_raw)

    for _ in range(settings.iterations):
        opt.zero_grad()
        for x in windows_terms:       # gradients accumulate window by window: one window's graph in memory
            eq_db, expansion = params()
            (window_loss(embedder, content, x, eq_db, expansion, ref, w, settings, tone) / n).backward()
            if on_iteration is not None:
                on_iteration()
        eq_unit, ex_unit = torch.tanh(eq_raw), torch.tanh(ex_raw)      # roughness in units of each bound
        rough = settings.smooth_freq * settings.bands * (
            (eq_unit[1:] - eq_unit[:-1]).pow(2).mean() + (ex_unit[1:] - ex_unit[:-1]).pow(2).mean())
        rough.backward()
        opt.step()
    eq_db, expansion = params()
    return eq_db.detach(), expansion.detach()


def texture_match(audio: np.ndarray, anchor: np.ndarray, rate: int, embedder, reference: torch.Tensor,
                  weights: dict, strength: float, settings: TextureSettings = TextureSettings(),
                  on_iteration: Optional[Callable[[], None]] = None, tone: str = "neutral") -> TextureResult:
    """Move (C, N) `audio` toward `reference` with an EQ curve and per-band dynamics; `anchor` is the content to keep.

    The result is loudness-matched back to `audio` (the optimiser saw it at that level).
    `tone` ("dark", "bright", "neutral") is the way the chain moved the centroid: the
    stage keeps the chain's centroid, and a move back against the tone costs ten times more.
    """
    t0 = time.perf_counter()
    audio = np.ascontiguousarray(audio, dtype=np.float32)
    w = weights_vector(embedder, weights)
    before = weighted_distance(embedder, audio, reference, w)
    if strength <= 0.0 or settings.iterations <= 0:
        zero = np.zeros(settings.bands, np.float32)
        return TextureResult(audio.copy(), zero, zero, 0, before, before, time.perf_counter() - t0, 0.0)
    x = torch.from_numpy(audio)
    mid = x.mean(dim=0)
    anc = torch.from_numpy(np.ascontiguousarray(anchor, dtype=np.float32)).mean(dim=0)
    content = ContentMeasures(embedder, rate)
    n = audio.shape[1]
    spans = windows(n, rate, settings)
    terms = [window_terms(embedder, content, mid[a:b], anc[a:b], settings) for a, b in spans]
    eq_db, expansion = optimise_gain(embedder, content, terms, reference, w, settings, on_iteration,
                                     tone={"dark": -1, "bright": 1}.get(tone, 0))
    del terms     # each window's gain is rebuilt below at full frame rate, not kept through the whole fit
    n_stft = n // HOP + 1
    total_db = torch.zeros(N_FFT // 2 + 1, n_stft)
    total_w = torch.zeros(n_stft)
    for a, b in spans:
        with torch.no_grad():
            grid = GainGrid(_stft(mid[a:b]).abs().pow(2), rate, HOP, settings)
            db = grid.db(eq_db * float(strength), expansion * float(strength))
        fa = a // HOP
        m = min(db.shape[1], n_stft - fa)
        ramp = _ramp(m, int(settings.overlap_s * rate) // HOP, a > 0, b < n)
        total_db[:, fa:fa + m] += db[:, :m] * ramp
        total_w[fa:fa + m] += ramp
    total_db = total_db / total_w.clamp(min=1e-6)
    goal = integrated_lufs(audio, rate)
    spec = _stft(x)                       # once: each back-off step only rescales it
    for fraction in BACK_OFF_FRACTIONS:
        # Apply the gain and match the loudness back. Where the peak ceiling would cost level (a peakier
        # result), or the real distance did not fall (the optimiser's spectrogram model was wrong), apply a
        # smaller fraction of the gain instead: the stage never costs level or distance.
        with torch.no_grad():
            out = match_loudness(apply_gain(spec, total_db * fraction, n).numpy().astype(np.float32), rate, goal)
        after = weighted_distance(embedder, out, reference, w)
        level_ok = not math.isfinite(goal) or integrated_lufs(out, rate) >= goal - LEVEL_TOLERANCE_DB
        if fraction == 0.0 or (level_ok and after < before):
            break
    if fraction == 0.0:
        out, after = audio.copy(), before
    applied = total_db * fraction
    slow = _moving_mean(applied, _odd_frames(settings.envelope_s, rate, HOP))
    drift = float((slow.max(dim=1).values - slow.min(dim=1).values).max())
    return TextureResult(out, eq_db.numpy(), expansion.numpy(), len(spans), before, after,
                         time.perf_counter() - t0, fraction, drift)


def _ramp(m: int, overlap: int, fade_in: bool, fade_out: bool) -> torch.Tensor:
    """Cross-fade weights over one window's STFT frames (linear over the overlap at inner edges)."""
    r = torch.ones(m)
    k = max(1, min(overlap, m // 2))
    if fade_in:
        r[:k] = torch.linspace(1.0 / (k + 1), 1.0, k)
    if fade_out:
        r[m - k:] = torch.minimum(r[m - k:], torch.linspace(1.0, 1.0 / (k + 1), k))
    return r
