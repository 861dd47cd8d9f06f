"""What the engine needs to know about a backend, and the name -> loader registry."""
from __future__ import annotations

from dataclasses import dataclass, field
from importlib import metadata
from typing import Callable, Optional

import torch

from ..denoiser import Autoencoder, Denoiser
from ..errors import ModelNotFound


@dataclass
class Model:
    """A loaded backend: the denoiser, its optional autoencoder, and sampling defaults.

    Without an autoencoder the denoiser works on waveforms (hop 1). Defaults are
    what the method used: xi = 3e-2 for latent models, 3e-3 for waveform models.
    """

    name: str
    denoiser: Denoiser
    autoencoder: Optional[Autoencoder] = None
    default_guidance_scale: Optional[float] = None
    default_steps: int = 50
    default_step_mode: str = "fixed"
    info: dict = field(default_factory=dict)
    # The retrieval prior (engine/prior): generative backends default to none; a small
    # refiner defaults to copying from the user's audio and regenerating around the seams.
    default_prior: str = "none"
    default_refine_strength: Optional[float] = None
    default_refine_span: Optional[str] = None
    # What a prior that finds nothing falls back to: "generative" (the model generates the
    # region) or "crossfade" (for a model that cannot generate music on its own).
    prior_fallback: str = "generative"
    # The denoiser as a refiner (a sampler started from a noised real signal), e.g. with a
    # Jensen cap; None = the denoiser itself.
    refiner: Optional[Callable[[Denoiser], Denoiser]] = None

    @property
    def sample_rate(self) -> int:
        return int(self.denoiser.sample_rate)

    @property
    def hop(self) -> int:
        return int(self.autoencoder.hop) if self.autoencoder is not None else 1

    def default_scale(self, step_mode: str) -> float:
        """xi when a request names none: the model's own choice for its default mode, else the
        method's values for "fixed" (3e-2 latent, 3e-3 waveform), 0.2 for "normalized" and the
        exact Bayes weight 1 for "posterior"."""
        if step_mode == self.default_step_mode and self.default_guidance_scale is not None:
            return self.default_guidance_scale
        if step_mode == "fixed":
            return 3e-2 if self.autoencoder is not None else 3e-3
        return 0.2 if step_mode == "normalized" else 1.0

    def to(self, device: str | torch.device) -> "Model":
        """Move the denoiser and the autoencoder (whichever are modules) to `device`; returns self."""
        for part in (self.denoiser, self.autoencoder):
            if isinstance(part, torch.nn.Module):
                part.to(device)
        return self

    def encode(self, audio: torch.Tensor) -> torch.Tensor:
        """(B, 2, samples) audio -> the space the denoiser works in."""
        return audio if self.autoencoder is None else self.autoencoder.encode(audio)

    def decode(self, z: torch.Tensor, length: Optional[int] = None) -> torch.Tensor:
        """Latents -> (B, 2, samples) audio, `length` samples long when given."""
        if self.autoencoder is None:
            audio = z
        else:
            try:
                audio = self.autoencoder.decode(z, length=length)  # type: ignore[call-arg]
            except TypeError:
                audio = self.autoencoder.decode(z)
        if length is not None:
            if audio.shape[-1] < length:
                audio = torch.nn.functional.pad(audio, (0, length - audio.shape[-1]))
            audio = audio[..., :length]
        return audio

    def latent_frames(self, samples: int) -> int:
        """How many frames `encode` gives for `samples` samples."""
        if self.autoencoder is None:
            return samples
        frames_for = getattr(self.autoencoder, "frames_for", None)
        return int(frames_for(samples)) if frames_for is not None else samples // self.hop

    @property
    def frame_multiple(self) -> int:
        """The denoiser needs a frame count divisible by this (e.g. a U-Net's downsampling)."""
        return int(getattr(self.denoiser, "frame_multiple", 1))


ModelLoader = Callable[[], Model]
_LOADERS: dict[str, ModelLoader] = {}
ENTRY_POINT_GROUP = "segue.models"


def register_model(name: str, loader: ModelLoader) -> None:
    """Make `name` loadable; third-party packages can also use the `segue.models` entry point."""
    _LOADERS[name] = loader


def available_models() -> list[str]:
    names = set(_LOADERS)
    try:
        names.update(ep.name for ep in metadata.entry_points(group=ENTRY_POINT_GROUP))
    except Exception:  # broken third-party metadata must not hide the built-in models
        pass
    return sorted(names)


def load_model(name: str) -> Model:
    """Load a model by registry name, or by `stable-audio:/local/folder` style `kind:path`."""
    kind, _, arg = name.partition(":")
    if kind in _LOADERS and not arg:
        return _LOADERS[kind]()
    if arg and kind + ":" in _LOADERS:
        return _LOADERS[kind + ":"](arg)  # type: ignore[call-arg]
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            return ep.load()()
    raise ModelNotFound(f"unknown model {name!r}; available: {', '.join(available_models()) or 'none'}")
