"""Stable Audio 3 backend: flow matching through the engine's VE samplers equals diffusers'
StableAudio3Pipeline / StableAudio3InpaintPipeline on tiny random components; guided infill keeps context."""
from __future__ import annotations

import shutil

import pytest
import torch

pytest.importorskip("diffusers")

from engine.errors import ModelNotFound  # noqa: E402
from engine.guidance import Guidance, LossTerm, masked_l1  # noqa: E402
from engine.models.base import load_model  # noqa: E402
from support.random_init import SA3_TINY, save_stable_audio3_folder  # noqa: E402
from engine.models.stable_audio3 import load_stable_audio3, logsnr_sigmas, sample_pingpong  # noqa: E402
from engine.samplers import DataConsistency, sample_ddim  # noqa: E402
from support.stable_audio_support import known_error, save_tiny_folder  # noqa: E402

TOKENS = 6          # text length of the tiny model (prompts are all padding: no text encoder)
FRAMES = 12


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> str:
    return save_tiny_folder(tmp_path_factory, "sa3", save_stable_audio3_folder, SA3_TINY)


@pytest.fixture(scope="module")
def model(folder):
    return load_stable_audio3(folder, max_text_tokens=TOKENS)


def _pipe(cls, folder: str, stochastic: bool = False):
    """The diffusers pipeline, loaded from the same saved folder as our backend."""
    extra = {}
    if stochastic:
        from diffusers import FlowMatchEulerDiscreteScheduler

        extra["scheduler"] = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1, stochastic_sampling=True)
    pipe = cls.from_pretrained(folder, text_encoder=None, tokenizer=None, **extra)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _no_text(cfg: float) -> dict:
    empty = dict(prompt_embeds=torch.zeros(1, TOKENS, SA3_TINY.cond_token_dim),
                 encoder_attention_mask=torch.zeros(1, TOKENS, dtype=torch.long))
    if cfg > 1:
        empty.update(negative_prompt_embeds=torch.zeros(1, TOKENS, SA3_TINY.cond_token_dim),
                     negative_encoder_attention_mask=torch.zeros(1, TOKENS, dtype=torch.long))
    return empty


def _start(noise: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """Flow-space pure noise (t = 1) in the VE view at sigmas[0]."""
    return noise * (1 + float(sigmas[0]))


@pytest.mark.parametrize("cfg", [1.0, 4.0])
def test_ddim_over_the_flow_wrapper_equals_stable_audio3_pipeline(folder, model, cfg) -> None:
    from diffusers import StableAudio3Pipeline

    from engine.models.stable_audio3 import Sa3Cond

    duration = FRAMES * model.hop / 44100
    noise = torch.randn(1, SA3_TINY.latent_dim, FRAMES, generator=torch.Generator().manual_seed(5))
    # stand-in text states (what a text encoder would give), so CFG has something to amplify
    text = torch.randn(1, TOKENS, SA3_TINY.cond_token_dim, generator=torch.Generator().manual_seed(8))
    inputs = _no_text(cfg)
    inputs.update(prompt_embeds=text, encoder_attention_mask=torch.ones(1, TOKENS, dtype=torch.long))
    ref = _pipe(StableAudio3Pipeline, folder)(duration=duration, num_inference_steps=8, guidance_scale=cfg,
                                      latents=noise.clone(), output_type="latent", **inputs).audios
    base = model.denoiser.make_cond(None, duration_s=duration, cfg_scale=cfg)
    cond = Sa3Cond(text=text, text_mask=torch.ones(1, TOKENS, dtype=torch.long), duration=base.duration,
                   cfg_scale=cfg, negative_text=base.negative_text, negative_mask=base.negative_mask)
    sigmas = logsnr_sigmas(8)
    ours = sample_ddim(model.denoiser, _start(noise, sigmas), sigmas, cond=cond)
    assert ours.shape == ref.shape == (1, SA3_TINY.latent_dim, FRAMES)
    assert float((ref - noise).abs().max()) > 0.5          # the network moved the sample
    assert float((ours - ref).abs().max()) < 1e-4
    if cfg > 1:
        plain = sample_ddim(model.denoiser, _start(noise, sigmas), sigmas,
                            cond=Sa3Cond(text=text, text_mask=cond.text_mask, duration=base.duration))
        assert float((plain - ref).abs().max()) > 1e-3


def test_pingpong_equals_the_stochastic_scheduler(folder, model) -> None:
    from diffusers import StableAudio3Pipeline

    duration = FRAMES * model.hop / 44100
    noise = torch.randn(1, SA3_TINY.latent_dim, FRAMES, generator=torch.Generator().manual_seed(6))
    ref = _pipe(StableAudio3Pipeline, folder, stochastic=True)(
        duration=duration, num_inference_steps=6, latents=noise.clone(), output_type="latent",
        generator=torch.Generator().manual_seed(9), **_no_text(1.0)).audios
    sigmas = logsnr_sigmas(6)
    ours = sample_pingpong(model.denoiser, _start(noise, sigmas), sigmas,
                           cond=model.denoiser.make_cond(None, duration_s=duration),
                           generator=torch.Generator().manual_seed(9))
    assert float((ours - ref).abs().max()) < 1e-4


def test_native_inpaint_equals_stable_audio3_inpaint_pipeline(folder, tmp_path) -> None:
    from diffusers import StableAudio3InpaintPipeline

    inpaint_dir = str(tmp_path / "sa3-inpaint")
    save_stable_audio3_folder(inpaint_dir, SA3_TINY, seed=0, inpaint=True)
    m = load_stable_audio3(inpaint_dir, max_text_tokens=TOKENS)
    assert m.info["native_inpaint"] is True
    hop = m.hop
    audio = 0.2 * torch.randn(1, 2, FRAMES * hop, generator=torch.Generator().manual_seed(1))
    mask = torch.ones(1, 1, FRAMES)
    mask[..., 4:8] = 0
    noise = torch.randn(1, SA3_TINY.latent_dim, FRAMES, generator=torch.Generator().manual_seed(2))
    duration = FRAMES * hop / 44100
    ref = _pipe(StableAudio3InpaintPipeline, inpaint_dir)(duration=duration, audio=audio, mask=mask, num_inference_steps=8,
                                             latents=noise.clone(), output_type="latent", **_no_text(1.0)).audios
    with torch.no_grad():
        known = m.encode(audio)
    sigmas = logsnr_sigmas(8)
    ours = sample_ddim(m.denoiser, _start(noise, sigmas), sigmas, cond=m.denoiser.inpaint_cond(known, mask))
    assert float((ours - ref).abs().max()) < 1e-4
    # the inpaint input matters, and only the inpainting checkpoint accepts it
    free = sample_ddim(m.denoiser, _start(noise, sigmas), sigmas)
    assert float((free - ref).abs().max()) > 1e-3
    with pytest.raises(ValueError, match="inpainting checkpoint"):
        load_stable_audio3(folder, max_text_tokens=TOKENS).denoiser.inpaint_cond(known, mask)


def test_guided_infill_preserves_context(model) -> None:
    audio = 0.2 * torch.randn(1, 2, FRAMES * model.hop, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model.encode(audio)
    mask = torch.ones(1, 1, FRAMES)
    mask[..., 4:8] = 0
    sigmas = logsnr_sigmas(20)
    noise = torch.randn(y.shape, generator=torch.Generator().manual_seed(3))
    x = _start(noise, sigmas)
    guide = Guidance([LossTerm("recon", masked_l1(y, mask))], scale=1.0, step_mode="normalized")
    free = known_error(sample_ddim(model.denoiser, x, sigmas), y, mask)
    guided = known_error(sample_ddim(model.denoiser, x, sigmas, guide=guide), y, mask)
    assert guided < 0.5 * free
    out = sample_ddim(model.denoiser, x, sigmas, guide=guide, consistency=DataConsistency(known=y, mask=mask),
                      generator=torch.Generator().manual_seed(4))
    assert known_error(out, y, mask) == 0.0


def test_loader_errors_and_registry(folder, tmp_path) -> None:
    with pytest.raises(ModelNotFound, match="not found"):
        load_model(f"stable-audio-3:{tmp_path / 'nowhere'}")
    partial = tmp_path / "partial"
    shutil.copytree(folder, partial)
    shutil.rmtree(partial / "duration_embedder")
    with pytest.raises(ModelNotFound, match="duration_embedder/config.json"):
        load_model(f"stable-audio-3:{partial}")
    m = load_model(f"stable-audio-3:{folder}")
    assert (m.hop, m.autoencoder.latent_channels, m.info["sampler"]) == (1024, SA3_TINY.latent_dim, "ddim")
    with pytest.raises(ModelNotFound, match="no text_encoder"):
        m.denoiser.conditioning("piano", duration_s=2.0)
    c = m.denoiser.conditioning(None, duration_s=2.0)
    assert torch.equal(c.duration, m.denoiser.make_cond(None, duration_s=2.0).duration)


def test_native_infill_helper_runs_on_a_window(tmp_path, model) -> None:
    import numpy as np

    from engine.models.stable_audio3 import native_infill

    inpaint_dir = str(tmp_path / "sa3-inpaint")
    save_stable_audio3_folder(inpaint_dir, SA3_TINY, seed=0, inpaint=True)
    m = load_stable_audio3(inpaint_dir, max_text_tokens=TOKENS)
    window = (0.1 * np.random.default_rng(0).standard_normal((2, 10000))).astype(np.float32)
    out = native_infill(m, window, (3000, 6000), steps=3, seed=0)
    assert out.shape == (2, 10000) and np.isfinite(out).all()
    with pytest.raises(ValueError, match="inpainting checkpoint"):
        native_infill(model, window, (3000, 6000), steps=3)


def test_text_prompt_and_cfg_match_the_pipeline(tmp_path) -> None:
    pytest.importorskip("transformers")
    from diffusers import StableAudio3Pipeline

    path = str(tmp_path / "sa3-text")
    save_stable_audio3_folder(path, SA3_TINY, seed=0, text_encoder=True)
    m = load_stable_audio3(path)
    assert m.info["text"] is True and m.denoiser.max_text_tokens == 6
    duration = FRAMES * m.hop / 44100
    noise = torch.randn(1, SA3_TINY.latent_dim, FRAMES, generator=torch.Generator().manual_seed(5))
    pipe = StableAudio3Pipeline.from_pretrained(path)
    pipe.set_progress_bar_config(disable=True)
    ref = pipe("calm piano", duration=duration, num_inference_steps=6, guidance_scale=3.0, latents=noise.clone(),
               output_type="latent").audios
    sigmas = logsnr_sigmas(6)
    ours = sample_ddim(m.denoiser, _start(noise, sigmas), sigmas,
                       cond=m.denoiser.conditioning("calm piano", duration_s=duration, cfg_scale=3.0))
    assert float((ours - ref).abs().max()) < 1e-4
    other = sample_ddim(m.denoiser, _start(noise, sigmas), sigmas,
                        cond=m.denoiser.conditioning("dark techno", duration_s=duration, cfg_scale=3.0))
    assert float((other - ref).abs().max()) > 1e-3
