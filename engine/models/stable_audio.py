"""Stable Audio Open 1.0 as a Segue backend: v-prediction latent DiT + Oobleck VAE via diffusers.

Loaded from a local folder in diffusers layout (`model_index.json`, `transformer/`,
`vae/`, `projection_model/`, `scheduler/`, optionally `text_encoder/` + `tokenizer/`).
diffusers is imported only when a folder is loaded, so the core runs without it.

The DiT is wrapped as a VE denoiser with the EDM preconditioning the scheduler uses
(sigma_data = 1): c_in = 1/sqrt(s^2+1), c_skip = 1/(s^2+1), c_out = -s/sqrt(s^2+1),
network time atan(s)*2/pi (see BACKEND_NOTES.md). Text is optional: without a prompt
the cross-attention text tokens are zeros (the pipeline's unconditional input) and the
seconds-start/end tokens describe the window, so guidance works with no text encoder.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from typing import Any, Optional

import torch

from ..errors import ModelNotFound
from . import diffusers_io
from .base import Model, register_model

HOW_TO = ("save a diffusers StableAudioPipeline there (pipe.save_pretrained(folder)) or download "
          "stabilityai/stable-audio-open-1.0 yourself; Segue never downloads weights")


@dataclass(frozen=True)
class StableAudioCond:
    """Conditioning for one request: projected text tokens and the seconds tokens, plus CFG.

    text: (B, S, D) projected text states (zeros for no prompt); seconds_start/end: (B, 1, D).
    negative_text: projected negative-prompt states; None means the pipeline's default
    unconditional input (all cross-attention tokens zero, global token unchanged).
    """

    text: torch.Tensor
    seconds_start: torch.Tensor
    seconds_end: torch.Tensor
    cfg_scale: float = 1.0
    negative_text: Optional[torch.Tensor] = None

    def to(self, device: torch.device, dtype: torch.dtype) -> "StableAudioCond":
        conv = lambda t: None if t is None else t.to(device=device, dtype=dtype)  # noqa: E731
        return replace(self, text=conv(self.text), seconds_start=conv(self.seconds_start),
                       seconds_end=conv(self.seconds_end), negative_text=conv(self.negative_text))


class OobleckAutoencoder(torch.nn.Module):
    """`Autoencoder` over diffusers' `AutoencoderOobleck`; encode uses the posterior mean (deterministic)."""

    def __init__(self, vae: torch.nn.Module) -> None:
        super().__init__()
        self.vae = vae
        self.sample_rate = int(vae.config.sampling_rate)
        self.hop = int(vae.hop_length)
        self.latent_channels = int(vae.config.decoder_input_channels)

    def encode(self, audio: torch.Tensor) -> torch.Tensor:
        """(B, 2, N) -> (B, C, ceil(N / hop)); the tail is zero-padded to a whole frame."""
        pad = (-audio.shape[-1]) % self.hop
        if pad:
            audio = torch.nn.functional.pad(audio, (0, pad))
        return self.vae.encode(audio.to(self.vae.dtype)).latent_dist.mean

    def frames_for(self, samples: int) -> int:
        return -(-int(samples) // self.hop)

    def decode(self, z: torch.Tensor, length: Optional[int] = None) -> torch.Tensor:
        audio = self.vae.decode(z.to(self.vae.dtype)).sample
        return audio if length is None else audio[..., :length]


class StableAudioDenoiser(torch.nn.Module):
    """D(x, sigma, cond) -> x0_hat for the Stable Audio DiT (VE view, EDM v-preconditioning)."""

    def __init__(self, transformer: torch.nn.Module, projection_model: torch.nn.Module, *,
                 text_encoder: Optional[torch.nn.Module] = None, tokenizer: Any = None,
                 sample_rate: int = 44100, hop: int = 2048, sigma_data: float = 1.0,
                 max_text_tokens: int = 128) -> None:
        super().__init__()
        self.transformer = transformer
        self.projection_model = projection_model
        self.text_encoder = text_encoder
        self.tokenizer = tokenizer
        self.sample_rate = sample_rate
        self.hop = hop
        self.channels = int(transformer.config.in_channels)
        self.sigma_data = sigma_data
        self.max_text_tokens = int(getattr(tokenizer, "model_max_length", max_text_tokens) or max_text_tokens)
        self.rotary_dim = int(transformer.config.attention_head_dim) // 2
        self._rotary: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        self._default_conds: dict[tuple, StableAudioCond] = {}

    # --- conditioning -----------------------------------------------------------------
    @torch.no_grad()
    def make_cond(self, prompt: Optional[str] = None, *, seconds_start: float = 0.0, seconds_end: float = 10.0,
                  cfg_scale: float = 1.0, negative_prompt: Optional[str] = None) -> StableAudioCond:
        """Encode a text prompt (optional) and the window's start/end seconds, as the pipeline does."""
        device = next(self.projection_model.parameters()).device
        dtype = next(self.transformer.parameters()).dtype
        if prompt is not None or negative_prompt is not None:
            if self.text_encoder is None or self.tokenizer is None:
                raise ModelNotFound("this Stable Audio folder has no text_encoder/tokenizer, so text prompts are "
                                    "unavailable; leave the prompt empty (guidance works without it)")
        text = self._encode_text(prompt, device) if prompt is not None else None
        if text is None:
            width = int(self.projection_model.config.conditioning_dim)
            text = torch.zeros(1, self.max_text_tokens, width, device=device)
        negative = self._encode_text(negative_prompt, device) if negative_prompt is not None else None
        out = self.projection_model(start_seconds=torch.tensor([float(seconds_start)], device=device),
                                    end_seconds=torch.tensor([float(seconds_end)], device=device))
        return StableAudioCond(text=text.to(dtype), seconds_start=out.seconds_start_hidden_states.to(dtype),
                               seconds_end=out.seconds_end_hidden_states.to(dtype), cfg_scale=float(cfg_scale),
                               negative_text=None if negative is None else negative.to(dtype))

    def conditioning(self, prompt: Optional[str] = None, *, duration_s: float, cfg_scale: float = 1.0,
                     negative_prompt: Optional[str] = None) -> StableAudioCond:
        """The backend-neutral entry point (same signature for Stable Audio 3): a window of `duration_s`."""
        return self.make_cond(prompt, seconds_start=0.0, seconds_end=duration_s, cfg_scale=cfg_scale,
                              negative_prompt=negative_prompt)

    def _encode_text(self, prompt: str, device: torch.device) -> torch.Tensor:
        tok = self.tokenizer([prompt], padding="max_length", max_length=self.max_text_tokens, truncation=True,
                             return_tensors="pt")
        ids, mask = tok.input_ids.to(device), tok.attention_mask.to(device)
        states = self.text_encoder(ids, attention_mask=mask)[0]
        states = torch.where(mask.bool().unsqueeze(2), states, 0.0)
        projected = self.projection_model(text_hidden_states=states).text_hidden_states
        return projected * mask.unsqueeze(-1).to(projected.dtype)

    def default_cond(self, frames: int) -> StableAudioCond:
        """No prompt; the seconds tokens say the window is `frames * hop` samples long (cached per length)."""
        key = (frames, str(next(self.projection_model.parameters()).device))
        if key not in self._default_conds:
            self._default_conds[key] = self.make_cond(None, seconds_start=0.0,
                                                      seconds_end=frames * self.hop / self.sample_rate)
        return self._default_conds[key]

    # --- the denoiser -------------------------------------------------------------------
    def rotary(self, frames: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        key = (frames, str(device))
        if key not in self._rotary:
            from diffusers.models.embeddings import get_1d_rotary_pos_embed

            cos, sin = get_1d_rotary_pos_embed(self.rotary_dim, frames + 1, use_real=True,
                                               repeat_interleave_real=False)
            self._rotary[key] = (cos.to(device), sin.to(device))
        return self._rotary[key]

    def velocity(self, x_in: torch.Tensor, t: torch.Tensor, cond: StableAudioCond) -> torch.Tensor:
        """The DiT's v for a preconditioned input, with classifier-free guidance when cfg_scale > 1."""
        b = x_in.shape[0]
        dtype = next(self.transformer.parameters()).dtype
        cond = cond.to(x_in.device, dtype)
        expand = lambda v: v.expand(b, *v.shape[1:]) if v.shape[0] == 1 else v  # noqa: E731
        text, start, end = expand(cond.text), expand(cond.seconds_start), expand(cond.seconds_end)
        cross = torch.cat([text, start, end], dim=1)
        glob = torch.cat([start, end], dim=2)
        rotary = self.rotary(x_in.shape[-1], x_in.device)
        if cond.cfg_scale > 1.0:
            if cond.negative_text is None:
                negative = torch.zeros_like(cross)
            else:
                negative = torch.cat([expand(cond.negative_text), start, end], dim=1)
            v = self.transformer(torch.cat([x_in, x_in]).to(dtype), torch.cat([t, t]),
                                 encoder_hidden_states=torch.cat([negative, cross]),
                                 global_hidden_states=torch.cat([glob, glob]), rotary_embedding=rotary,
                                 return_dict=False)[0]
            v_u, v_c = v.float().chunk(2)
            return v_u + cond.cfg_scale * (v_c - v_u)
        v = self.transformer(x_in.to(dtype), t, encoder_hidden_states=cross, global_hidden_states=glob,
                             rotary_embedding=rotary, return_dict=False)[0]
        return v.float()

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, cond: Optional[StableAudioCond] = None) -> torch.Tensor:
        if cond is None:
            cond = self.default_cond(x.shape[-1])
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device)
        if sigma.ndim == 0:
            sigma = sigma.expand(x.shape[0])
        sd = self.sigma_data
        s2 = sigma ** 2 + sd ** 2
        c_in = (1 / s2.sqrt()).view(-1, 1, 1)
        c_skip = (sd ** 2 / s2).view(-1, 1, 1)
        c_out = (-sigma * sd / s2.sqrt()).view(-1, 1, 1)
        t = sigma.atan() / math.pi * 2
        v = self.velocity(x * c_in.to(x.dtype), t, cond)
        return (c_skip * x.float() + c_out * v).to(x.dtype)


# --- loading --------------------------------------------------------------------------------
REQUIRED = ("transformer", "vae", "projection_model")


def check_folder(folder: str) -> dict[str, bool]:
    """Which optional parts exist; raises ModelNotFound naming every missing required part."""
    return diffusers_io.check_folder(folder, label="Stable Audio", required=REQUIRED, how_to=HOW_TO)


def load_stable_audio(folder: str, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                      max_text_tokens: int = 128) -> Model:
    """Load a local Stable Audio Open folder as a `Model`.

    Diffusers layout, or the single-file stable-audio-tools layout (`model.safetensors` +
    `model_config.json`, converted on load; no text encoder in that file, so no prompts).

    `max_text_tokens` is the text length the DiT was trained with (128 for SAO 1.0); it is
    read from the tokenizer when there is one and matters without one, because the empty
    prompt is that many zero tokens in cross-attention.
    """
    folder = os.path.expanduser(folder)
    if (os.path.isfile(os.path.join(folder, "model_config.json"))
            and not os.path.isdir(os.path.join(folder, "transformer"))):
        from .stable_audio_single import load_single_file_components

        comps, sched, max_tokens = load_single_file_components(folder)
        return model_from_components(comps, sched, name=f"stable-audio:{folder}", device=device, dtype=dtype,
                                     max_text_tokens=max_tokens, info={"folder": folder, "layout": "single-file"})
    parts = check_folder(folder)
    try:
        import diffusers
        from diffusers.pipelines.stable_audio.modeling_stable_audio import StableAudioProjectionModel
    except ImportError as exc:
        raise ModelNotFound("the stable-audio backend needs diffusers: pip install 'segue[stable-audio]'") from exc
    loaders: dict[str, Any] = {"transformer": diffusers.StableAudioDiTModel.from_pretrained,
                               "vae": diffusers.AutoencoderOobleck.from_pretrained,
                               "projection_model": StableAudioProjectionModel.from_pretrained}
    if parts["text"]:
        from transformers import AutoTokenizer, T5EncoderModel

        loaders.update(text_encoder=T5EncoderModel.from_pretrained, tokenizer=AutoTokenizer.from_pretrained)
    loaded = diffusers_io.load_parts(folder, loaders, label="Stable Audio")
    return model_from_components(loaded, diffusers_io.scheduler_config(folder), name=f"stable-audio:{folder}",
                                 device=device, dtype=dtype, max_text_tokens=max_text_tokens, info={"folder": folder})


def model_from_components(components: dict[str, Any], scheduler: dict, *, name: str,
                          device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                          max_text_tokens: int = 128, info: Optional[dict] = None) -> Model:
    """Wrap loaded (or freshly built) diffusers components as a `Model`; the DiT gets `dtype`."""
    diffusers_io.freeze_for_inference(components, device=device, dtype=dtype)
    autoencoder = OobleckAutoencoder(components["vae"])
    denoiser = StableAudioDenoiser(components["transformer"], components["projection_model"],
                                   text_encoder=components.get("text_encoder"), tokenizer=components.get("tokenizer"),
                                   sample_rate=autoencoder.sample_rate, hop=autoencoder.hop,
                                   sigma_data=float(scheduler.get("sigma_data", 1.0)), max_text_tokens=max_text_tokens)
    sigma_min, sigma_max = float(scheduler.get("sigma_min", 0.3)), float(scheduler.get("sigma_max", 500.0))
    full_info = {"family": "stable-audio-open", "text": "text_encoder" in components,
                 "sampler": "dpmpp_2m_sde",
                 "sampler_kwargs": {"noise": "brownian", "brownian_range": (sigma_min, sigma_max)},
                 "schedule": "exponential", "sigma_min": sigma_min, "sigma_max": sigma_max,
                 "init_noise_scale": math.sqrt(sigma_max ** 2 + 1.0),
                 "max_frames": int(components["transformer"].config.sample_size)}
    full_info.update(info or {})
    return Model(name=name, denoiser=denoiser, autoencoder=autoencoder, default_guidance_scale=3e-2,
                 default_steps=100, info=full_info)


register_model("stable-audio:", load_stable_audio)  # type: ignore[arg-type]
