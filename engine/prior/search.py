"""Candidate search: which span of the user's audio best fits a region, judged by its surroundings.

In the manner of similarity-graph inpainting (Perraudin et al., "Inpainting of long
audio segments with similarity graphs"): a span of a source can replace the region
[g0, g1) when the frames around it look like the frames around the region, on both
sides. Every frame shift is scored at once with FFT correlations, so a ten-minute
source costs a few tens of milliseconds. Beats then pin the shift to the grid, and a
waveform cross-correlation at the seams pins it to the sample, so seams meet in phase.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np

from .analysis import HOP, N_FFT, Analysis

# Distance units: mean squared difference per z-scored feature (unrelated frames ~ 2).
BEAT_PENALTY = 6.0          # times the squared beat-phase error (in beats) added to a candidate's score
MIN_COVERAGE = 0.3          # of each side's context weight that must be comparable


@dataclass(frozen=True)
class Candidate:
    """A span of source `source` that can stand in for the region: source sample = target sample + `offset`.

    `score` is the weighted feature distance of the surroundings (lower is better);
    `typical` the median over all admissible shifts, so `score / typical` says how
    much better than an arbitrary span this one fits.
    """

    source: int
    offset: int
    score: float
    typical: float

    @property
    def match_ratio(self) -> float:
        return self.score / self.typical if self.typical > 0 else 1.0


def _xcorr(a: np.ndarray, k: np.ndarray, n_out: int) -> np.ndarray:
    """c[p] = sum_u k[u] a[p + u] for p < n_out, along axis 0 (a: (N, ...), k: (M, ...)); summed over trailing axes."""
    size = 1 << int(np.ceil(np.log2(len(a) + len(k))))
    fa = np.fft.rfft(a, size, axis=0)
    fk = np.fft.rfft(k, size, axis=0)
    c = np.fft.irfft(fa * np.conj(fk), size, axis=0)[:n_out]
    return c.sum(axis=tuple(range(1, c.ndim))) if c.ndim > 1 else c


def frames_touching(start: int, stop: int, n_frames: int) -> tuple[int, int]:
    """Frames [k0, k1) whose analysis window overlaps samples [start, stop)."""
    half = N_FFT // 2
    k0 = max(0, int(np.floor((start - half) / HOP)) + 1)
    k1 = min(n_frames, int(np.ceil((stop + half) / HOP)))
    return k0, max(k0, k1)


SEAM_EMPHASIS = 4.0          # weight of the last ~50 ms at the seam against the broad context


def _side_weights(n: int, toward_seam: bool, emphasis: float = SEAM_EMPHASIS) -> np.ndarray:
    """Context frames count more the nearer they are to the seam.

    A broad part (e-folding over a third of the side) judges the musical match; a sharp
    part (e-folding over four frames, ~50 ms) the continuity right at the seam.
    """
    d = np.arange(n)[::-1] if toward_seam else np.arange(n)
    return np.exp(-d / max(n / 3.0, 1.0)) + emphasis * np.exp(-d / 4.0)


def search_span(target: Analysis, start: int, stop: int, sources: Sequence[Analysis], *, context_s: float,
                left: bool = True, right: bool = True, exclude_self: Optional[tuple[int, int]] = None,
                min_tail: int = 0, max_candidates: int = 8, separation: Optional[int] = None,
                same_source: int = 0,
                allowed: Optional[Callable[[int, np.ndarray], np.ndarray]] = None,
                seam_emphasis: float = SEAM_EMPHASIS) -> list[Candidate]:
    """Ranked candidates for target samples [start, stop), matched on the left and/or right context.

    `exclude_self` (samples, in source `same_source`) is where the source cannot be
    trusted (the region itself): frames touching it are not compared and no candidate
    overlaps it. `min_tail` demands that much source material after the candidate's
    start (continuation copies forward from it). `allowed(source, starts)` can veto
    candidate start samples further. `seam_emphasis` weighs the frames right at the seams
    (measured: it helps two-sided infill, and hurts one-sided continuation, which passes 0).
    """
    rate = target.sample_rate
    ctx = max(4, int(round(context_s * rate / HOP)))
    n_t = target.frames
    gl0, gl1 = frames_touching(start, stop, n_t)
    left_idx = np.arange(max(0, gl0 - ctx), gl0) if left else np.arange(0)
    right_idx = np.arange(gl1, min(n_t, gl1 + ctx)) if right else np.arange(0)
    if len(left_idx) == 0 and len(right_idx) == 0:
        return []
    k_first = int(left_idx[0]) if len(left_idx) else int(right_idx[0])
    k_last = int(right_idx[-1]) if len(right_idx) else int(left_idx[-1])
    m = k_last - k_first + 1
    w_left = np.zeros(m)
    w_right = np.zeros(m)
    if len(left_idx):
        w_left[left_idx - k_first] = _side_weights(len(left_idx), toward_seam=True, emphasis=seam_emphasis)
        w_left /= w_left.sum()
    if len(right_idx):
        w_right[right_idx - k_first] = _side_weights(len(right_idx), toward_seam=False, emphasis=seam_emphasis)
        w_right /= w_right.sum()
    w = w_left + w_right
    tk = np.zeros((m, target.features.shape[1]), np.float64)
    tk[:] = target.features[k_first:k_last + 1]
    t_sq = (tk ** 2).sum(axis=1)
    sep = separation if separation is not None else max((stop - start) // 2, HOP)
    dims = target.features.shape[1]
    found: list[Candidate] = []
    for si, src in enumerate(sources):
        if _tempo_mismatch(target, src):
            continue
        # Pad the source with m incomparable frames each side, so spans near its ends still
        # count with the context they do have.
        n_s = src.frames
        pad = m
        n_out = n_s + pad
        valid = np.zeros(n_s + 2 * pad)
        valid[pad:pad + n_s] = 1.0
        if si == same_source and exclude_self is not None:
            e0, e1 = frames_touching(exclude_self[0], exclude_self[1], n_s)
            valid[pad + e0:pad + e1] = 0.0
        s = np.zeros((n_s + 2 * pad, dims))
        s[pad:pad + n_s] = src.features
        s_sq = (s ** 2).sum(axis=1)
        cov_l = _xcorr(valid, w_left, n_out)
        cov_r = _xcorr(valid, w_right, n_out)
        cov = cov_l + cov_r
        num = (_xcorr(valid, w * t_sq, n_out) - 2 * _xcorr(valid[:, None] * s, w[:, None] * tk, n_out)
               + _xcorr(valid * s_sq, w, n_out))
        score = num / np.maximum(cov, 1e-9) / dims
        ok = np.ones(n_out, bool)
        if len(left_idx):
            ok &= cov_l >= MIN_COVERAGE
        if len(right_idx):
            ok &= cov_r >= MIN_COVERAGE
        p = np.arange(n_out) - pad                          # source frame aligned with target frame k_first
        offsets = (p - k_first) * HOP                       # source sample = target sample + offset
        cand_start = start + offsets
        ok &= cand_start >= 0
        ok &= cand_start + (stop - start) <= src.length if min_tail == 0 else cand_start + min_tail <= src.length
        if si == same_source and exclude_self is not None:
            x0, x1 = exclude_self
            ok &= (cand_start + (stop - start) <= x0) | (cand_start >= x1)
        if allowed is not None:
            ok &= allowed(si, cand_start)
        if not ok.any():
            continue
        score = np.where(ok, score, np.inf)
        typical = float(np.median(score[ok]))
        if target.has_beat and src.has_beat:
            ph_t = target.beat_phase(start)
            ph = src.beat_phases(cand_start[ok])
            err = np.abs((ph - ph_t + 0.5) % 1.0 - 0.5)
            score[ok] += BEAT_PENALTY * err ** 2
        order = np.argsort(score)
        chosen: list[int] = []
        for i in order:
            if not np.isfinite(score[i]) or len(chosen) >= max_candidates:
                break
            if all(abs(int(offsets[i]) - int(offsets[j])) >= sep for j in chosen):
                chosen.append(int(i))
        for i in chosen:
            off = int(offsets[i])
            if target.has_beat and src.has_beat:
                off = _snap_to_grid(target, src, start, off)
            found.append(Candidate(si, off, float(score[i]), typical))
    found.sort(key=lambda c: c.score)
    return found


def _tempo_mismatch(target: Analysis, src: Analysis, tolerance: float = 0.04) -> bool:
    """Sources at another tempo cannot stand in without stretching (octaves are the same grid)."""
    if not (target.has_beat and src.has_beat):
        return False
    r = src.tempo_bpm / target.tempo_bpm
    return min(abs(r * f - 1.0) for f in (0.5, 1.0, 2.0)) > tolerance


def _snap_to_grid(target: Analysis, src: Analysis, start: int, offset: int) -> int:
    """Move a frame-level offset by under half a beat so the candidate's beat phase equals the region's."""
    ph_t = target.beat_phase(start)
    ph_s = src.beat_phase(start + offset)
    d = (ph_t - ph_s + 0.5) % 1.0 - 0.5
    period = 60.0 / src.tempo_bpm * src.sample_rate
    shift = d * period
    return offset + int(round(shift)) if abs(shift) <= HOP * 1.5 else offset


def align_to_sample(target: np.ndarray, source: np.ndarray, start: int, stop: int, offset: int, *,
                    max_lag: int = 3 * HOP // 2, width: int = 4096, left: bool = True, right: bool = True,
                    exclude: Optional[tuple[int, int]] = None) -> int:
    """Refine `offset` by up to `max_lag` samples so the seams' waveforms line up (mono signals).

    Normalised cross-correlation of the target just outside each seam against the
    source at the same place: the lag that maximises their sum makes the seams meet in
    phase. Sides without usable target audio (outside it, or inside `exclude`) are skipped.
    """
    total = np.zeros(2 * max_lag + 1)
    used = False
    for side, use in (("left", left), ("right", right)):
        if not use:
            continue
        t0, t1 = (start - width, start) if side == "left" else (stop, stop + width)
        if t0 < 0 or t1 > len(target):
            continue
        if exclude is not None and t0 < exclude[1] and t1 > exclude[0]:
            continue
        s0, s1 = t0 + offset - max_lag, t1 + offset + max_lag
        if s0 < 0 or s1 > len(source):
            continue
        seg_t = target[t0:t1].astype(np.float64)
        seg_s = source[s0:s1].astype(np.float64)
        c = np.correlate(seg_s, seg_t, mode="valid")
        energy = np.sqrt(np.convolve(seg_s ** 2, np.ones(width), mode="valid") * (seg_t ** 2).sum()) + 1e-12
        total += c / energy
        used = True
    if not used:
        return offset
    return offset + int(np.argmax(total)) - max_lag
