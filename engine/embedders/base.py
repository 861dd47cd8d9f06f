"""The `Embedder` contract for style guidance, and a differentiable resampler.

Style guidance measures d(E(x0_hat), E(reference)) and follows its gradient, so
every embedder must be differentiable with respect to the audio it is given.
Audio is (batch, channels, samples) at `sample_rate`; the result is (batch, dim).
"""
from __future__ import annotations

import math
from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class Embedder(Protocol):
    """E(audio) -> (B, dim): audio is (B, 2, N) float at `sample_rate`, differentiable in audio."""

    sample_rate: int
    dim: int

    def __call__(self, audio: torch.Tensor) -> torch.Tensor: ...


def check_audio(audio: torch.Tensor, *, min_samples: int, name: str = "audio") -> torch.Tensor:
    """Validate (B, C, N) audio and average its channels to mid (B, N).

    Mid (L + R) / 2 is what the style models were trained on (mono) and keeps
    the embedding independent of panning.
    """
    if not isinstance(audio, torch.Tensor) or audio.ndim != 3:
        raise ValueError(f"{name} must be a (batch, channels, samples) tensor, got {getattr(audio, 'shape', type(audio))}")
    if audio.shape[-1] < min_samples:
        raise ValueError(f"{name} must have at least {min_samples} samples, got {audio.shape[-1]}")
    if not audio.is_floating_point():
        raise ValueError(f"{name} must be floating point, got {audio.dtype}")
    return audio.mean(dim=1)


class Resample(torch.nn.Module):
    """Band-limited polyphase resampling by a windowed sinc (Hann), differentiable.

    The same kernel design as torchaudio's `sinc_interp_hann`, written here because no
    torchaudio release matches our torch. Works on the last axis of any tensor.
    """

    def __init__(self, orig_freq: int, new_freq: int, *, lowpass_filter_width: int = 16,
                 rolloff: float = 0.945) -> None:
        super().__init__()
        if orig_freq <= 0 or new_freq <= 0:
            raise ValueError(f"sample rates must be positive, got {orig_freq} -> {new_freq}")
        g = math.gcd(int(orig_freq), int(new_freq))
        self.orig = int(orig_freq) // g
        self.new = int(new_freq) // g
        self.orig_freq, self.new_freq = int(orig_freq), int(new_freq)
        if self.orig == self.new:
            self.register_buffer("kernel", torch.ones(1, 1, 1), persistent=False)
            self.width = 0
            return
        base = min(self.orig, self.new) * rolloff
        self.width = math.ceil(lowpass_filter_width * self.orig / base)
        idx = torch.arange(-self.width, self.width + self.orig, dtype=torch.float64)[None] / self.orig
        t = torch.arange(0, -self.new, -1, dtype=torch.float64)[:, None] / self.new + idx
        t = (t * base).clamp(-lowpass_filter_width, lowpass_filter_width)
        window = torch.cos(t * math.pi / lowpass_filter_width / 2) ** 2
        t = t * math.pi
        scale = base / self.orig
        k = torch.where(t == 0, torch.ones_like(t), torch.sin(t) / t.where(t != 0, torch.ones_like(t)))
        self.register_buffer("kernel", (k * window * scale)[:, None].float(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.orig == self.new:
            return x
        shape = x.shape
        n = shape[-1]
        y = x.reshape(-1, 1, n)
        y = torch.nn.functional.pad(y, (self.width, self.width + self.orig))
        y = torch.nn.functional.conv1d(y, self.kernel.to(y.dtype), stride=self.orig)
        y = y.transpose(1, 2).reshape(y.shape[0], -1)
        target = math.ceil(self.new * n / self.orig)
        return y[..., :target].reshape(*shape[:-1], target)
