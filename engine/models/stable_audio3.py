"""Stable Audio 3 as a Segue backend: flow-matching DiT + SAME autoencoder via diffusers.

Loaded from a local diffusers folder (`transformer/`, `vae/`, `duration_embedder/`,
`scheduler/`, optionally `text_encoder/` + `tokenizer/`). The DiT predicts the velocity
of x_t = (1 - t) x0 + t e; `FlowMatchingDenoiser`'s algebra gives the VE view
(x = x_t / (1 - t), sigma = t / (1 - t), x0_hat = x_t - t v), so every engine sampler
and the guidance hook work unchanged. DDIM in that view *is* the pipeline's flow Euler
step, and `sample_pingpong` is its stochastic (distilled-model) step.

A checkpoint whose DiT has `local_add_cond` inputs (the SA3 inpainting model) is also
offered as "native inpaint": `Sa3Cond.inpaint(...)` puts the known latents and their
frame mask into that input, with no guidance; the comparison bench measures our guided
infill against it on the same windows.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from typing import Any, Optional

import torch

from ..errors import ModelNotFound
from ..samplers import sample_pingpong  # noqa: F401  (SA3's sampler: a step function on the one loop)
from . import diffusers_io
from .base import Model, register_model

HOW_TO = ("save a diffusers StableAudio3Pipeline there (pipe.save_pretrained(folder)) or download an SA3 "
          "checkpoint yourself; Segue never downloads weights")
# Flow time of the first step: t = 1 is sigma = inf in the VE view, so start a hair below it.
T_MAX = 1.0 - 1e-6


@dataclass(frozen=True)
class Sa3Cond:
    """Text tokens (B, S, D) with their mask, the duration vector (B, G), optional CFG and inpaint input."""

    text: torch.Tensor
    text_mask: torch.Tensor
    duration: torch.Tensor
    cfg_scale: float = 1.0
    negative_text: Optional[torch.Tensor] = None
    negative_mask: Optional[torch.Tensor] = None
    local_add_cond: Optional[torch.Tensor] = None

    def inpaint(self, known_latents: torch.Tensor, frame_mask: torch.Tensor) -> "Sa3Cond":
        """Native (trained) inpainting input: [mask, known * mask] on channels; mask 1 = keep."""
        m = frame_mask.to(known_latents.dtype).expand(known_latents.shape[0], 1, known_latents.shape[-1])
        return replace(self, local_add_cond=torch.cat([m, known_latents * m], dim=1))


class SameAutoencoder(torch.nn.Module):
    """`Autoencoder` over diffusers' `AutoencoderSAME` (deterministic; hop = patch x strides)."""

    def __init__(self, vae: torch.nn.Module) -> None:
        super().__init__()
        self.vae = vae
        self.sample_rate = int(vae.config.sampling_rate)
        self.hop = int(vae.downsampling_ratio)
        self.latent_channels = int(vae.config.latent_dim)

    def frames_for(self, samples: int) -> int:
        return -(-int(samples) // self.hop)

    def encode(self, audio: torch.Tensor) -> torch.Tensor:
        pad = (-audio.shape[-1]) % self.hop
        if pad:
            audio = torch.nn.functional.pad(audio, (0, pad))
        return self.vae.encode(audio.to(next(self.vae.parameters()).dtype)).latents

    def decode(self, z: torch.Tensor, length: Optional[int] = None) -> torch.Tensor:
        audio = self.vae.decode(z.to(next(self.vae.parameters()).dtype)).sample
        return audio if length is None else audio[..., :length]


class StableAudio3Denoiser(torch.nn.Module):
    """D(x, sigma, cond) -> x0_hat for the SA3 velocity DiT, in the VE view."""

    def __init__(self, transformer: torch.nn.Module, duration_embedder: torch.nn.Module, *,
                 text_encoder: Optional[torch.nn.Module] = None, tokenizer: Any = None,
                 sample_rate: int = 44100, hop: int = 4096, timestep_scale: float = 1.0,
                 max_text_tokens: int = 256) -> None:
        super().__init__()
        self.transformer = transformer
        self.duration_embedder = duration_embedder
        self.text_encoder = text_encoder
        self.tokenizer = tokenizer
        self.sample_rate = sample_rate
        self.hop = hop
        self.channels = int(transformer.config.io_channels)
        self.sigma_data = 1.0
        self.timestep_scale = float(timestep_scale)
        tok_max = getattr(tokenizer, "model_max_length", None) if tokenizer is not None else None
        self.max_text_tokens = min(int(tok_max), 256) if tok_max else int(max_text_tokens)
        self.native_inpaint = False  # set by the loader for the inpainting checkpoint
        self._default_conds: dict[tuple, Sa3Cond] = {}

    @torch.no_grad()
    def make_cond(self, prompt: Optional[str] = None, *, duration_s: float = 10.0, cfg_scale: float = 1.0,
                  negative_prompt: Optional[str] = None) -> Sa3Cond:
        """Text (optional) and duration conditioning, as `StableAudio3Pipeline` builds it.

        With no prompt the text tokens are all padding, which the DiT replaces by its learned
        padding embedding: the model's own "no text" input, needing no text encoder.
        """
        device = next(self.transformer.parameters()).device
        dtype = next(self.transformer.parameters()).dtype
        duration = self.duration_embedder(torch.tensor([float(duration_s)], device=device)).to(dtype)
        text, mask = self._encode(prompt, device, dtype)
        neg, neg_mask = (None, None)
        if cfg_scale > 1.0:
            neg, neg_mask = self._encode(negative_prompt if negative_prompt is not None else "", device, dtype,
                                         allow_missing=negative_prompt is None)
        return Sa3Cond(text=text, text_mask=mask, duration=duration, cfg_scale=float(cfg_scale),
                       negative_text=neg, negative_mask=neg_mask)

    def conditioning(self, prompt: Optional[str] = None, *, duration_s: float, cfg_scale: float = 1.0,
                     negative_prompt: Optional[str] = None) -> Sa3Cond:
        """The backend-neutral entry point (same signature for Stable Audio Open)."""
        return self.make_cond(prompt, duration_s=duration_s, cfg_scale=cfg_scale, negative_prompt=negative_prompt)

    def inpaint_cond(self, known_latents: torch.Tensor, frame_mask: torch.Tensor,
                     cond: Optional[Sa3Cond] = None) -> Sa3Cond:
        """Conditioning for native (trained) inpainting; only the inpainting checkpoint was trained for it."""
        if not self.native_inpaint:
            raise ValueError("native inpaint needs the Stable Audio 3 inpainting checkpoint "
                             "(a folder saved from StableAudio3InpaintPipeline)")
        if cond is None:
            cond = self.make_cond(None, duration_s=known_latents.shape[-1] * self.hop / self.sample_rate)
        return cond.inpaint(known_latents, frame_mask)

    def _encode(self, prompt: Optional[str], device, dtype, allow_missing: bool = True):
        if prompt is None or (self.text_encoder is None and allow_missing and prompt == ""):
            width = int(self.transformer.config.cond_token_dim)
            return (torch.zeros(1, self.max_text_tokens, width, device=device, dtype=dtype),
                    torch.zeros(1, self.max_text_tokens, dtype=torch.long, device=device))
        if self.text_encoder is None or self.tokenizer is None:
            raise ModelNotFound("this Stable Audio 3 folder has no text_encoder/tokenizer, so text prompts are "
                                "unavailable; leave the prompt empty (guidance works without it)")
        tok = self.tokenizer([prompt], padding="max_length", max_length=self.max_text_tokens, truncation=True,
                             return_tensors="pt")
        ids, mask = tok.input_ids.to(device), tok.attention_mask.to(device)
        return self.text_encoder(ids, attention_mask=mask)[0].to(dtype), mask

    def velocity(self, x_t: torch.Tensor, t: torch.Tensor, cond: Sa3Cond) -> torch.Tensor:
        b = x_t.shape[0]
        dtype = next(self.transformer.parameters()).dtype
        expand = lambda v: None if v is None else (v.expand(b, *v.shape[1:]) if v.shape[0] == 1 else v)  # noqa: E731
        dur = expand(cond.duration.to(x_t.device, dtype))
        ones = torch.ones(b, 1, dtype=torch.long, device=x_t.device)

        def context(text, mask):
            text, mask = expand(text.to(x_t.device, dtype)), expand(mask.to(x_t.device))
            return torch.cat([text, dur[:, None]], dim=1), torch.cat([mask, ones], dim=1)

        ctx, ctx_mask = context(cond.text, cond.text_mask)
        local = expand(cond.local_add_cond)
        if local is not None:
            local = local.to(x_t.device, dtype)
        ts = (t * self.timestep_scale).to(torch.float32)
        if cond.cfg_scale > 1.0:
            nctx, nmask = context(cond.negative_text, cond.negative_mask)
            v = self.transformer(torch.cat([x_t, x_t]).to(dtype), torch.cat([ts, ts]),
                                 encoder_hidden_states=torch.cat([nctx, ctx]), global_hidden_states=torch.cat([dur, dur]),
                                 encoder_attention_mask=torch.cat([nmask, ctx_mask]),
                                 local_add_cond=None if local is None else torch.cat([local, local]),
                                 return_dict=False)[0].float()
            v_u, v_c = v.chunk(2)
            return v_u + cond.cfg_scale * (v_c - v_u)
        return self.transformer(x_t.to(dtype), ts, encoder_hidden_states=ctx, global_hidden_states=dur,
                                encoder_attention_mask=ctx_mask, local_add_cond=local, return_dict=False)[0].float()

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, cond: Optional[Sa3Cond] = None) -> torch.Tensor:
        if cond is None:
            key = (x.shape[-1], str(x.device))
            if key not in self._default_conds:
                self._default_conds[key] = self.make_cond(None, duration_s=x.shape[-1] * self.hop / self.sample_rate)
            cond = self._default_conds[key]
        sigma = torch.as_tensor(sigma, dtype=torch.float64, device=x.device)
        if sigma.ndim == 0:
            sigma = sigma.expand(x.shape[0])
        t = (sigma / (1 + sigma))
        t = torch.where(torch.isinf(sigma), torch.ones_like(t), t)
        shape = (-1,) + (1,) * (x.ndim - 1)
        x_t = (x.double() * (1 - t).view(shape)).float()
        # T_MAX stands for t = 1 (pure noise): give the network exactly the time it was trained on.
        t = torch.where(t >= T_MAX - 1e-9, torch.ones_like(t), t).float()
        v = self.velocity(x_t, t, cond)
        return (x_t - t.view(shape) * v).to(x.dtype)


def logsnr_sigmas(steps: int, logsnr_min: float = -6.2, logsnr_max: float = 2.0) -> torch.Tensor:
    """The SA3 schedule (flow times, uniform in log-SNR, first exactly 1) in the VE view: n + 1 sigmas ending in 0."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    t = torch.linspace(1.0, 0.0, steps + 1)
    ts = torch.sigmoid(-(logsnr_max - t * (logsnr_max - logsnr_min)))
    ts[0] = 1.0
    ts[-1] = 0.0
    ts = ts.to(torch.float64).clamp(max=T_MAX)
    return ts / (1 - ts)


def native_infill(model: Model, audio, gap: tuple[int, int], *, steps: int, seed: int = 0):
    """The trained SA3 inpainting path on a (2, N) float32 window: samples [gap) are regenerated.

    Context latents and the latent frame mask go into the DiT's `local_add_cond`; there is no
    guidance. Returns the (2, N) window with the generated gap (not yet spliced with seams).
    """
    import numpy as np

    from ..regions import frame_mask, frame_support
    from ..samplers import randn_like, sample_ddim

    a, b = gap
    n = audio.shape[1]
    padded = -(-n // model.hop) * model.hop
    x_audio = torch.from_numpy(np.pad(np.asarray(audio, dtype=np.float32), ((0, 0), (0, padded - n))))[None]
    known = np.ones(padded, dtype=bool)
    known[a:b] = False
    device = next(model.denoiser.parameters()).device
    with torch.no_grad():
        y = model.encode(x_audio.to(device))
        offset, span = frame_support(model.autoencoder)
        m = torch.from_numpy(frame_mask(known, y.shape[-1], model.hop, offset, span)).to(y).reshape(1, 1, -1)
        cond = model.denoiser.inpaint_cond(y, m)
        sigmas = logsnr_sigmas(steps)
        g = torch.Generator().manual_seed(seed)
        x = randn_like(y, g) * (1 + float(sigmas[0]))
        out = sample_ddim(model.denoiser, x, sigmas, cond=cond, generator=g)
        return model.decode(out, padded)[0, :, :n].float().cpu().numpy()


def flow_to_ve(x_t: torch.Tensor, sigma_ve: float) -> torch.Tensor:
    """A flow-space sample at VE noise level `sigma_ve` -> the VE sample the samplers expect."""
    t = sigma_ve / (1 + sigma_ve)
    return x_t / (1 - t)


REQUIRED = ("transformer", "vae", "duration_embedder")


def _pipeline_class(folder: str) -> str:
    try:
        with open(os.path.join(folder, "model_index.json")) as f:
            return str(json.load(f).get("_class_name", ""))
    except (OSError, ValueError):
        return ""


def check_folder(folder: str) -> dict[str, bool]:
    """Which optional parts exist; raises ModelNotFound naming every missing required part."""
    return diffusers_io.check_folder(folder, label="Stable Audio 3", required=REQUIRED, how_to=HOW_TO)


def load_stable_audio3(folder: str, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                       max_text_tokens: int = 256) -> Model:
    """Load a local Stable Audio 3 folder (diffusers layout) as a `Model`."""
    folder = os.path.expanduser(folder)
    parts = check_folder(folder)
    try:
        import diffusers
    except ImportError as exc:
        raise ModelNotFound("the stable-audio-3 backend needs diffusers: pip install 'segue[stable-audio]'") from exc
    loaders: dict[str, Any] = {"transformer": diffusers.StableAudio3DiTModel.from_pretrained,
                               "vae": diffusers.AutoencoderSAME.from_pretrained,
                               "duration_embedder": diffusers.StableAudio3DurationEmbedder.from_pretrained}
    if parts["text"]:
        from transformers import AutoTokenizer, T5GemmaEncoderModel  # AutoModel would pick the enc-dec class

        loaders.update(text_encoder=T5GemmaEncoderModel.from_pretrained, tokenizer=AutoTokenizer.from_pretrained)
    loaded = diffusers_io.load_parts(folder, loaders, label="Stable Audio 3")
    diffusers_io.freeze_for_inference(loaded, device=device, dtype=dtype)
    sched = diffusers_io.scheduler_config(folder)
    autoencoder = SameAutoencoder(loaded["vae"])
    denoiser = StableAudio3Denoiser(loaded["transformer"], loaded["duration_embedder"],
                                    text_encoder=loaded.get("text_encoder"), tokenizer=loaded.get("tokenizer"),
                                    sample_rate=autoencoder.sample_rate, hop=autoencoder.hop,
                                    timestep_scale=float(sched.get("num_train_timesteps", 1)),
                                    max_text_tokens=max_text_tokens)
    denoiser.native_inpaint = _pipeline_class(folder) == "StableAudio3InpaintPipeline"
    stochastic = bool(sched.get("stochastic_sampling", False))
    info = {"family": "stable-audio-3", "folder": folder, "text": parts["text"],
            "sampler": "pingpong" if stochastic else "ddim", "schedule": "logsnr",
            "default_steps": 8 if stochastic else 100, "native_inpaint": denoiser.native_inpaint}
    return Model(name=f"stable-audio-3:{folder}", denoiser=denoiser, autoencoder=autoencoder,
                 default_guidance_scale=3e-2, default_steps=info["default_steps"], info=info)


register_model("stable-audio-3:", load_stable_audio3)  # type: ignore[arg-type]
