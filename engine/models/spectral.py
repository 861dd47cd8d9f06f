"""A fixed, exactly invertible spectral "autoencoder" for the built-in model.

Why not a learned VAE: this project trains on a shared CPU, where a VAE cannot be
trained alongside a diffusion model. A magnitude-compressed complex STFT gives a
representation that is easy to denoise (sparse, roughly Gaussian per bin after
normalisation) and decodes exactly, so every loss of quality comes from the
diffusion model and never from a codec.

Layout: audio (B, 2, N) -> STFT (n_fft, hop, periodic sqrt-Hann window, zero-padded
centred frames) -> c |c|^(power-1) -> divided by a per-bin scale (so every channel
has unit variance on the training corpus, sigma_data = 1) -> channels ordered
[left.re, left.im, right.re, right.im] x bins, i.e. (B, 4 * bins, 1 + N // hop).
With the sqrt-Hann window at 50% overlap the squared windows sum to one, so the
inverse STFT is a plain overlap-add and stays well behaved on generated spectra.
"""
from __future__ import annotations

import torch

SAMPLE_RATE = 44100


class SpectralTransform(torch.nn.Module):
    """Implements the `engine.denoiser.Autoencoder` protocol with a fixed transform."""

    def __init__(self, *, n_fft: int = 1024, hop: int = 512, power: float = 0.5,
                 bin_scale: torch.Tensor | None = None, sample_rate: int = SAMPLE_RATE) -> None:
        super().__init__()
        if n_fft % hop:
            raise ValueError(f"n_fft ({n_fft}) must be a multiple of hop ({hop})")
        if not 0.0 < power <= 1.0:
            raise ValueError(f"power must be in (0, 1], got {power}")
        self.n_fft = n_fft
        self.hop = hop
        self.power = power
        self.sample_rate = sample_rate
        self.bins = n_fft // 2 + 1
        self.latent_channels = 4 * self.bins
        window = torch.hann_window(n_fft, periodic=True).sqrt()
        if n_fft != 2 * hop:
            # Keep sum(w^2) = 1 over overlapping frames for other overlaps too.
            window = window * (2 * hop / n_fft) ** 0.5
        self.register_buffer("window", window, persistent=False)
        scale = torch.ones(self.bins) if bin_scale is None else bin_scale.detach().float().clone()
        if scale.shape != (self.bins,) or not bool((scale > 0).all()):
            raise ValueError(f"bin_scale must be ({self.bins},) and positive, got {tuple(scale.shape)}")
        self.register_buffer("bin_scale", scale)

    def frames_for(self, samples: int) -> int:
        """Latent frames for `samples` audio samples (frame k is centred on sample k * hop)."""
        return 1 + samples // self.hop

    def compressed_stft(self, audio: torch.Tensor) -> torch.Tensor:
        """(B, 2, N) -> complex (B, 2, bins, frames), magnitudes raised to `power`, not scaled."""
        if audio.ndim != 3 or audio.shape[1] != 2:
            raise ValueError(f"audio must be (batch, 2, samples), got {tuple(audio.shape)}")
        b, ch, n = audio.shape
        spec = torch.stft(audio.reshape(b * ch, n).float(), self.n_fft, self.hop, window=self.window,
                          center=True, pad_mode="constant", return_complex=True)
        mag = spec.abs().clamp_min(1e-12)
        spec = spec * mag ** (self.power - 1.0)
        return spec.reshape(b, ch, self.bins, -1)

    def encode(self, audio: torch.Tensor) -> torch.Tensor:
        """(B, 2, N) audio -> (B, 4 * bins, 1 + N // hop) latents of roughly unit variance."""
        spec = self.compressed_stft(audio) / self.bin_scale[:, None]
        z = torch.stack([spec.real, spec.imag], dim=2)  # (B, 2, 2, bins, T)
        return z.reshape(z.shape[0], self.latent_channels, -1)

    def decode(self, z: torch.Tensor, length: int | None = None) -> torch.Tensor:
        """(B, 4 * bins, T) -> (B, 2, length or (T - 1) * hop) audio; differentiable."""
        if z.ndim != 3 or z.shape[1] != self.latent_channels:
            raise ValueError(f"z must be (batch, {self.latent_channels}, frames), got {tuple(z.shape)}")
        b, _, t = z.shape
        z = z.reshape(b, 2, 2, self.bins, t) * self.bin_scale[:, None]
        spec = torch.complex(z[:, :, 0], z[:, :, 1])
        if self.power != 1.0:
            mag = (z[:, :, 0] ** 2 + z[:, :, 1] ** 2 + 1e-24).sqrt()
            spec = spec * mag ** (1.0 / self.power - 1.0)
        n = (t - 1) * self.hop if length is None else length
        audio = torch.istft(spec.reshape(b * 2, self.bins, t), self.n_fft, self.hop, window=self.window,
                            center=True, length=n)
        return audio.reshape(b, 2, n)
