"""A built-in differentiable DSP embedder for style guidance: no weights, no download.

Describes the *sound* of a clip with hand-made statistics that a gradient can push on:

- `mel_mean`, `mel_std`: per-band mean and spread over time of the log-mel spectrum
  (timbre / spectral envelope, and how much each band moves),
- `contrast`: spectral contrast (peak minus valley per octave band; tonal vs noisy),
- `texture`: the correlation (normalised Gram) matrix of coarse log-mel bands over time
  (which bands move together: the sound-texture statistics of McDermott & Simoncelli
  and of Gram-matrix style transfer),
- `chroma`: the energy distribution over the 12 pitch classes (harmony/key colour).

Everything is a torch op on one STFT (plus a long-window STFT for chroma), so the
embedding is differentiable and deterministic. Stereo is averaged to mid (L + R) / 2
before analysis, so panning does not change the embedding.

The groups have different units and sizes. Each is centred and scaled by constants
measured once, at construction, on a fixed synthetic calibration set (noises, tones,
saws, clicks, a chord, generated from a seeded generator): one scale per group, chosen
so the group's deviation from the calibration mean has unit mean squared norm. Each
group then contributes about equally to a squared L2 distance between typical sounds,
whatever its dimension, and the relative geometry inside a group is kept.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .base import check_audio


def _hz_to_mel(f: torch.Tensor) -> torch.Tensor:
    return 2595.0 * torch.log10(1.0 + f / 700.0)


def _mel_to_hz(m: torch.Tensor) -> torch.Tensor:
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


def mel_filterbank(n_fft: int, sample_rate: int, n_mels: int, f_min: float, f_max: float) -> torch.Tensor:
    """(n_mels, n_fft // 2 + 1) triangular HTK-mel filters, area-normalised (Slaney)."""
    freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    m = torch.linspace(float(_hz_to_mel(torch.tensor(f_min))), float(_hz_to_mel(torch.tensor(f_max))),
                       n_mels + 2, dtype=torch.float64)
    hz = _mel_to_hz(m)
    lower, center, upper = hz[:-2, None], hz[1:-1, None], hz[2:, None]
    up = (freqs[None] - lower) / (center - lower)
    down = (upper - freqs[None]) / (upper - center)
    fb = torch.clamp(torch.minimum(up, down), min=0.0)
    fb = fb * (2.0 / (upper - lower))
    return fb


def chroma_filterbank(n_fft: int, sample_rate: int, f_min: float, f_max: float,
                      width_semitones: float = 0.5) -> torch.Tensor:
    """(12, n_fft // 2 + 1) soft pitch-class filters, C = 0; Gaussian in circular semitone distance."""
    freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    inside = (freqs >= f_min) & (freqs <= f_max)
    midi = 69.0 + 12.0 * torch.log2(freqs.clamp(min=1.0) / 440.0)
    pc = torch.remainder(midi, 12.0)
    classes = torch.arange(12, dtype=torch.float64)[:, None]
    d = torch.remainder(pc[None] - classes + 6.0, 12.0) - 6.0
    fb = torch.exp(-0.5 * (d / width_semitones) ** 2) * inside[None]
    return fb


@dataclass(frozen=True)
class DSPConfig:
    """Analysis settings; the defaults suit 44.1 kHz music."""

    sample_rate: int = 44100
    n_fft: int = 2048
    hop: int = 512
    n_mels: int = 64
    f_min: float = 20.0
    f_max: float = 16000.0
    texture_bands: int = 16
    texture_var_floor: float = 0.1
    contrast_edges_hz: tuple[float, ...] = (200.0, 400.0, 800.0, 1600.0, 3200.0, 6400.0)
    contrast_quantile: float = 0.05
    chroma_n_fft: int = 8192
    chroma_hop: int = 2048
    chroma_f_min: float = 65.0
    chroma_f_max: float = 4200.0
    eps: float = 1e-8


GROUPS = ("mel_mean", "mel_std", "contrast", "texture", "chroma")
_CALIBRATION: dict[DSPConfig, tuple[torch.Tensor, torch.Tensor]] = {}


class DSPEmbedder(torch.nn.Module):
    """Differentiable log-mel / contrast / texture / chroma statistics; see the module docstring."""

    def __init__(self, config: DSPConfig = DSPConfig()) -> None:
        super().__init__()
        c = config
        if c.n_mels % c.texture_bands:
            raise ValueError(f"n_mels ({c.n_mels}) must be a multiple of texture_bands ({c.texture_bands})")
        self.config = c
        self.sample_rate = c.sample_rate
        self.min_samples = c.chroma_n_fft // 2 + 1
        self.register_buffer("window", torch.hann_window(c.n_fft, dtype=torch.float64), persistent=False)
        self.register_buffer("chroma_window", torch.hann_window(c.chroma_n_fft, dtype=torch.float64), persistent=False)
        self.register_buffer("mel_fb", mel_filterbank(c.n_fft, c.sample_rate, c.n_mels, c.f_min, c.f_max),
                             persistent=False)
        self.register_buffer("chroma_fb", chroma_filterbank(c.chroma_n_fft, c.sample_rate, c.chroma_f_min,
                                                            c.chroma_f_max), persistent=False)
        freqs = torch.linspace(0, c.sample_rate / 2, c.n_fft // 2 + 1)
        edges = (0.0,) + tuple(c.contrast_edges_hz) + (c.sample_rate / 2 + 1.0,)
        self._contrast_bins = [
            (int((freqs >= lo).nonzero()[0]), int((freqs < hi).nonzero()[-1]) + 1) for lo, hi in zip(edges[:-1], edges[1:])
        ]
        n_tex = c.texture_bands
        sizes = {"mel_mean": c.n_mels, "mel_std": c.n_mels, "contrast": 2 * len(self._contrast_bins),
                 "texture": n_tex * (n_tex - 1) // 2, "chroma": 12}
        self.slices: dict[str, slice] = {}
        start = 0
        for g in GROUPS:
            self.slices[g] = slice(start, start + sizes[g])
            start += sizes[g]
        self.dim = start
        iu = torch.triu_indices(n_tex, n_tex, offset=1)
        self.register_buffer("_triu", iu, persistent=False)
        self.register_buffer("offset", torch.zeros(self.dim, dtype=torch.float64), persistent=False)
        self.register_buffer("scale", torch.ones(self.dim, dtype=torch.float64), persistent=False)
        self._calibrate()

    # --- analysis -----------------------------------------------------------------------
    def _power(self, mid: torch.Tensor, n_fft: int, hop: int, window: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(mid, n_fft, hop_length=hop, window=window.to(mid.dtype), center=True,
                          pad_mode="reflect", return_complex=True)
        return spec.real ** 2 + spec.imag ** 2  # (B, F, T)

    def features(self, audio: torch.Tensor) -> dict[str, torch.Tensor]:
        """Raw (un-normalised) statistics per group, each (B, group_dim)."""
        return self.features_from_power(*self.spectra(audio))

    def spectra(self, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The two power spectrograms the statistics read: (B, F, T) at n_fft and (B, F', T') at chroma_n_fft."""
        c = self.config
        mid = check_audio(audio, min_samples=self.min_samples)
        return (self._power(mid, c.n_fft, c.hop, self.window),
                self._power(mid, c.chroma_n_fft, c.chroma_hop, self.chroma_window))

    def features_from_power(self, power: torch.Tensor, cpow: torch.Tensor) -> dict[str, torch.Tensor]:
        """The statistics from `spectra`'s power spectrograms (so a gain applied to them can be optimised)."""
        c = self.config
        eps = c.eps
        mel = torch.einsum("mf,bft->bmt", self.mel_fb.to(power.dtype), power)
        logmel = torch.log(mel + eps)
        mel_mean = logmel.mean(dim=-1)
        mel_std = torch.sqrt(logmel.var(dim=-1, unbiased=False) + 1e-6)

        logpow = torch.log(power + eps)
        contrast = []
        for lo, hi in self._contrast_bins:
            band = logpow[:, lo:hi]  # (B, nb, T)
            k = max(1, round(c.contrast_quantile * (hi - lo)))
            peak = band.topk(k, dim=1).values.mean(dim=1)
            valley = (-band).topk(k, dim=1).values.mean(dim=1).neg()
            contrast.append(peak - valley)
        con = torch.stack(contrast, dim=1)  # (B, bands, T)
        contrast_feat = torch.cat([con.mean(dim=-1), torch.sqrt(con.var(dim=-1, unbiased=False) + 1e-6)], dim=1)

        b, m, t = logmel.shape
        coarse = logmel.reshape(b, c.texture_bands, m // c.texture_bands, t).mean(dim=2)
        centred = coarse - coarse.mean(dim=-1, keepdim=True)
        cov = centred @ centred.transpose(1, 2) / t
        var = torch.diagonal(cov, dim1=1, dim2=2)
        # The variance floor keeps steady bands (a held tone) from turning noise into correlation.
        v = var + c.texture_var_floor
        corr = cov / torch.sqrt(v[:, :, None] * v[:, None, :])
        texture = corr[:, self._triu[0], self._triu[1]]

        cmag = torch.sqrt(cpow + eps)
        chroma_energy = torch.einsum("cf,bft->bc", self.chroma_fb.to(power.dtype), cmag)
        chroma = chroma_energy / (chroma_energy.sum(dim=1, keepdim=True) + eps)
        return {"mel_mean": mel_mean, "mel_std": mel_std, "contrast": contrast_feat,
                "texture": texture, "chroma": chroma}

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        f = self.features(audio)
        raw = torch.cat([f[g] for g in GROUPS], dim=1)
        return (raw - self.offset.to(raw.dtype)) / self.scale.to(raw.dtype)

    # --- per-group normalisation -------------------------------------------------------
    @torch.no_grad()
    def _calibrate(self) -> None:
        """Set offset/scale so each group has unit mean squared deviation over the calibration set.

        The constants depend only on the config, so they are computed once per process.
        """
        cached = _CALIBRATION.get(self.config)
        if cached is None:
            cached = self._measure_calibration()
            _CALIBRATION[self.config] = cached
        self.offset.copy_(cached[0])
        self.scale.copy_(cached[1])

    def _measure_calibration(self) -> tuple[torch.Tensor, torch.Tensor]:
        audio = calibration_set(self.sample_rate)
        raw = torch.cat([v for v in (self.features(audio)[g] for g in GROUPS)], dim=1)
        offset = raw.mean(dim=0)
        spread = raw - offset
        scale = torch.ones(self.dim, dtype=torch.float64)
        for sl in self.slices.values():
            rms = float(spread[:, sl].pow(2).sum(dim=1).mean().sqrt())
            scale[sl] = max(rms, 1e-6)
        return offset, scale


def calibration_set(sample_rate: int, seconds: float = 1.0) -> torch.Tensor:
    """A fixed, seeded set of contrasting sounds (B, 2, N) used only to scale the groups."""
    n = int(sample_rate * seconds)
    t = torch.arange(n, dtype=torch.float64) / sample_rate
    g = torch.Generator().manual_seed(20240611)
    sounds = []
    white = torch.randn(n, generator=g, dtype=torch.float64)
    sounds.append(0.1 * white)
    spec = torch.fft.rfft(torch.randn(n, generator=g, dtype=torch.float64))
    f = torch.fft.rfftfreq(n, 1 / sample_rate, dtype=torch.float64).clamp(min=20.0)
    pink = torch.fft.irfft(spec / f.sqrt(), n)
    sounds.append(0.3 * pink / pink.abs().max())
    brown = torch.fft.irfft(spec / f, n)
    sounds.append(0.3 * brown / brown.abs().max())
    for hz in (110.0, 261.63, 392.0, 1244.5):
        sounds.append(0.3 * torch.sin(2 * math.pi * hz * t))
    for hz in (55.0, 146.83, 329.63):
        saw = 2 * torch.remainder(hz * t, 1.0) - 1
        sounds.append(0.2 * saw)
    clicks = torch.zeros(n, dtype=torch.float64)
    clicks[:: sample_rate // 8] = 1.0
    sounds.append(clicks)
    chord = sum(torch.sin(2 * math.pi * hz * t) for hz in (220.0, 277.18, 329.63)) / 3
    sounds.append(0.3 * chord * torch.exp(-3 * torch.remainder(t, 0.5)))
    mono = torch.stack(sounds)
    return mono[:, None].expand(-1, 2, -1).contiguous()
