"""Window geometry, masks and seams: where a task's generated audio goes on the timeline.

All positions are sample indices at the model rate. A window is the span the
model sees (the region plus context on both sides); the gap is the part of it to
generate. Results go back with equal-power crossfades at the seams.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .errors import InvalidRequest
from .schema import REGION_OUT_OF_RANGE


@dataclass(frozen=True)
class Window:
    """`[start, stop)` of the source timeline, with the gap `[gap_start, gap_stop)` inside it (absolute)."""

    start: int
    stop: int
    gap_start: int
    gap_stop: int

    @property
    def length(self) -> int:
        return self.stop - self.start

    def known_mask(self) -> np.ndarray:
        """(length,) bool: True on context, False on the gap."""
        m = np.ones(self.length, dtype=bool)
        m[self.gap_start - self.start:self.gap_stop - self.start] = False
        return m


def plan_window(total: int, gap_start: int, gap_stop: int, context: int) -> Window:
    """The gap plus up to `context` samples each side, clipped to [0, total)."""
    if not 0 <= gap_start < gap_stop <= total:
        raise InvalidRequest(f"the region [{gap_start}, {gap_stop}) (samples) does not lie inside the audio's "
                             f"[0, {total})", code=REGION_OUT_OF_RANGE)
    return Window(max(0, gap_start - context), min(total, gap_stop + context), gap_start, gap_stop)


def equal_power_curves(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(fade_out, fade_in) of length n with fade_out^2 + fade_in^2 = 1."""
    if n <= 0:
        return np.zeros(0, np.float32), np.zeros(0, np.float32)
    phase = (np.arange(n, dtype=np.float64) + 0.5) / n * (np.pi / 2)
    return np.cos(phase).astype(np.float32), np.sin(phase).astype(np.float32)


def smooth_equal_power_curves(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Equal-power curves (fade_out^2 + fade_in^2 = 1) that leave and reach 0 and 1 with zero slope.

    The sine law's fade-in starts with a kink: 50 ms into a 2.5 s fade the incoming
    clip is already at -30 dB, audible wherever the outgoing one has no energy (a
    band-limited clip, a quiet bar). Warping the phase by a raised cosine keeps the
    power constant and puts the incoming clip at -56 dB there.
    """
    if n <= 0:
        return np.zeros(0, np.float32), np.zeros(0, np.float32)
    u = (np.arange(n, dtype=np.float64) + 0.5) / n
    phase = 0.5 * (1.0 - np.cos(np.pi * u)) * (np.pi / 2)
    return np.cos(phase).astype(np.float32), np.sin(phase).astype(np.float32)


# The fade a transition's crossfade uses (tasks.transition_mix), and that the prior's join
# choice predicts the level of (prior.edits.crossfade_dip_db): one definition for both.
transition_fade_curves = smooth_equal_power_curves


def crossfade(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Equal-power crossfade from `a` to `b` over their common length (channels, n)."""
    fo, fi = equal_power_curves(a.shape[-1])
    return a * fo + b * fi


def splice(original: np.ndarray, generated: np.ndarray, gap_start: int, gap_stop: int, seam: int) -> np.ndarray:
    """The region `[gap_start, gap_stop)` taken from `generated`, blended into `original` at both edges.

    Both arrays share one timeline. The seams lie inside the region, so the
    result can replace exactly that region on a DAW track.
    """
    region = generated[:, gap_start:gap_stop].copy()
    seam = min(seam, (gap_stop - gap_start) // 2)
    if seam > 0:
        region[:, :seam] = crossfade(original[:, gap_start:gap_start + seam], region[:, :seam])
        region[:, -seam:] = crossfade(region[:, -seam:], original[:, gap_stop - seam:gap_stop])
    return region


def frame_support(autoencoder: object) -> tuple[int, int]:
    """(offset, span): latent frame k covers samples [k hop + offset, k hop + offset + span)."""
    if hasattr(autoencoder, "frame_span"):
        return int(getattr(autoencoder, "frame_offset", 0)), int(autoencoder.frame_span)
    if hasattr(autoencoder, "n_fft"):   # centred STFT frames
        n_fft = int(autoencoder.n_fft)
        return -(n_fft // 2), n_fft
    return 0, int(autoencoder.hop)


def frame_mask(sample_mask: np.ndarray, frames: int, hop: int, offset: int, span: int) -> np.ndarray:
    """A latent frame is known only if every sample it covers is known (outside the signal counts as known)."""
    unknown = np.concatenate([[0], np.cumsum(~sample_mask)])
    n = len(sample_mask)
    out = np.zeros(frames, dtype=bool)
    for k in range(frames):
        lo = min(max(k * hop + offset, 0), n)
        hi = min(max(k * hop + offset + span, 0), n)
        out[k] = unknown[hi] - unknown[lo] == 0
    return out


def as_tensor(audio: np.ndarray) -> torch.Tensor:
    """(channels, n) numpy -> (1, channels, n) float32 tensor."""
    return torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))[None]
