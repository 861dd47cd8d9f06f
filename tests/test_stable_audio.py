"""Stable Audio Open backend: loads a local diffusers folder, equals the pipeline with guidance off,
and guided infill keeps the context. Tiny random-weight components, CPU, a few seconds."""
from __future__ import annotations

import os
import shutil
import warnings

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("torchsde")

from engine.errors import ModelNotFound  # noqa: E402
from engine.guidance import Guidance, LossTerm, masked_l1  # noqa: E402
from engine.models.base import load_model  # noqa: E402
from support.random_init import TINY, save_stable_audio_folder  # noqa: E402
from engine.models.stable_audio import load_stable_audio  # noqa: E402
from engine.samplers import DataConsistency  # noqa: E402
from engine.samplers_dpm import get_sigmas_exponential, sample_dpmpp_2m_sde  # noqa: E402
from support.stable_audio_support import known_error, save_tiny_folder  # noqa: E402

HOP = 2048


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> str:
    return save_tiny_folder(tmp_path_factory, "stable-audio", save_stable_audio_folder, TINY)


@pytest.fixture(scope="module")
def model(folder):
    return load_model(f"stable-audio:{folder}")


def _pipeline_latents(folder: str, noise: torch.Tensor, steps: int, cfg: float, seed: int, prompt: str = ""):
    from diffusers import StableAudioPipeline

    pipe = StableAudioPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    end = noise.shape[-1] * HOP / 44100
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchsde warns about the final (sigma_min -> 0) query, as in diffusers
        return pipe(prompt, num_inference_steps=steps, audio_end_in_s=end, guidance_scale=cfg,
                    generator=torch.Generator().manual_seed(seed), latents=noise.clone(),
                    output_type="latent").audios


def _ours(model, noise: torch.Tensor, steps: int, cfg: float, seed: int, prompt: str = "", noise_kind="brownian"):
    end = noise.shape[-1] * HOP / 44100
    cond = model.denoiser.make_cond(prompt, seconds_start=0.0, seconds_end=end, cfg_scale=cfg)
    x = noise * model.info["init_noise_scale"]
    sigmas = get_sigmas_exponential(steps, model.info["sigma_min"], model.info["sigma_max"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sample_dpmpp_2m_sde(model.denoiser, x, sigmas, cond=cond, generator=torch.Generator().manual_seed(seed),
                                   noise=noise_kind, brownian_range=model.info["sampler_kwargs"]["brownian_range"])


@pytest.mark.parametrize("cfg", [1.0, 7.0])
def test_sampler_and_wrapper_reproduce_the_diffusers_pipeline(folder, model, cfg) -> None:
    noise = torch.randn(1, TINY.latent_channels, TINY.sample_size, generator=torch.Generator().manual_seed(5))
    ref = _pipeline_latents(folder, noise, steps=8, cfg=cfg, seed=1234)
    ours = _ours(model, noise, steps=8, cfg=cfg, seed=1234)
    assert ours.shape == ref.shape == (1, 4, 32)
    assert float(ref.abs().max()) > 0.5
    assert float((ours - ref).abs().max()) < 2e-5
    # the comparison is sharp: another noise source or another CFG scale is far off
    other = _ours(model, noise, steps=8, cfg=cfg, seed=1234, noise_kind="gaussian")
    assert float((other - ref).abs().max()) > 1e-2
    if cfg > 1:
        plain = _pipeline_latents(folder, noise, steps=8, cfg=1.0, seed=1234)
        assert float((plain - ref).abs().max()) > 1e-3


def test_autoencoder_maps_samples_to_frames_by_the_hop(model) -> None:
    ae = model.autoencoder
    assert (ae.hop, ae.latent_channels, ae.sample_rate) == (2048, 4, 44100)
    audio = 0.1 * torch.randn(1, 2, 5 * HOP + 100, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        z = model.encode(audio)
        assert z.shape == (1, 4, 6) and model.latent_frames(audio.shape[-1]) == 6
        assert model.decode(z).shape == (1, 2, 6 * HOP)
        assert model.decode(z, audio.shape[-1]).shape == audio.shape
        assert torch.equal(model.encode(audio), z)  # posterior mean: deterministic


def test_missing_or_partial_folder_is_a_clear_error(folder, tmp_path) -> None:
    with pytest.raises(ModelNotFound, match="not found: .*nowhere") as err:
        load_model(f"stable-audio:{tmp_path / 'nowhere'}")
    assert err.value.code == "model_not_found"
    partial = tmp_path / "partial"
    shutil.copytree(folder, partial)
    os.remove(partial / "vae" / "diffusion_pytorch_model.safetensors")
    shutil.rmtree(partial / "tokenizer")
    with pytest.raises(ModelNotFound) as err:
        load_stable_audio(str(partial))
    msg = str(err.value)
    assert "vae/ weights" in msg and "tokenizer/" in msg and "transformer" not in msg


def test_prompts_are_optional(tmp_path, model) -> None:
    bare = str(tmp_path / "no-text")
    save_stable_audio_folder(bare, TINY, seed=0, text_encoder=False)
    m = load_stable_audio(bare, max_text_tokens=TINY.max_tokens)
    assert m.info["text"] is False
    with pytest.raises(ModelNotFound, match="no text_encoder"):
        m.denoiser.make_cond("piano")
    x = torch.randn(1, 4, 16, generator=torch.Generator().manual_seed(1))
    s = torch.tensor([2.0])
    with torch.no_grad():
        # same weights (seed 0): no prompt == the full folder's default (empty-text) conditioning
        assert torch.allclose(m.denoiser(x, s), model.denoiser(x, s), atol=1e-6)
        # with a text encoder, a prompt changes the CFG prediction
        c1 = model.denoiser.make_cond("piano", seconds_end=16 * HOP / 44100, cfg_scale=5.0)
        c0 = model.denoiser.make_cond("", seconds_end=16 * HOP / 44100, cfg_scale=5.0)
        assert float((model.denoiser(x, s, c1) - model.denoiser(x, s, c0)).abs().max()) > 1e-4
        # the backend-neutral entry point gives the same conditioning
        c2 = model.denoiser.conditioning("piano", duration_s=16 * HOP / 44100, cfg_scale=5.0)
        assert torch.equal(model.denoiser(x, s, c2), model.denoiser(x, s, c1))


def _infill_setup(model):
    frames = TINY.sample_size
    audio = 0.3 * torch.randn(1, 2, frames * HOP, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = model.encode(audio)
    mask = torch.ones(1, 1, frames)
    mask[..., 10:22] = 0
    noise = torch.randn(y.shape, generator=torch.Generator().manual_seed(3))
    return y, mask, noise


def test_guided_infill_in_latent_space_preserves_context(model) -> None:
    y, mask, noise = _infill_setup(model)
    sigmas = get_sigmas_exponential(20, 0.3, 500)
    x = y * mask + float(sigmas[0]) * noise

    def run(**kw):
        return sample_dpmpp_2m_sde(model.denoiser, x, sigmas, generator=torch.Generator().manual_seed(7), **kw)

    free = known_error(run(), y, mask)
    guide = Guidance([LossTerm("recon", masked_l1(y, mask))], scale=1.0, step_mode="normalized")
    guided = known_error(run(guide=guide), y, mask)
    assert free > 0.5
    assert guided < 0.5 * free
    out = run(guide=guide, consistency=DataConsistency(known=y, mask=mask))
    assert known_error(out, y, mask) == 0.0
    assert float(((out - y).abs() * (1 - mask)).mean()) > 0.1  # the gap is generated, not copied


def test_guided_infill_in_waveform_space_through_the_decoder(model) -> None:
    frames = 16
    truth = torch.randn(1, 4, frames, generator=torch.Generator().manual_seed(11))
    with torch.no_grad():
        target = model.decode(truth)  # a context the decoder can reach
    smask = torch.ones(1, 1, frames * HOP)
    smask[..., 5 * HOP:11 * HOP] = 0
    mask = torch.ones(1, 1, frames)
    mask[..., 5:11] = 0
    noise = torch.randn(truth.shape, generator=torch.Generator().manual_seed(3))
    sigmas = get_sigmas_exponential(16, 0.3, 500)
    x = truth * mask + float(sigmas[0]) * noise
    guide = Guidance([LossTerm("recon_audio", masked_l1(target, smask, model.decode))], scale=1.0,
                     step_mode="normalized")
    outs = [sample_dpmpp_2m_sde(model.denoiser, x, sigmas, guide=g, generator=torch.Generator().manual_seed(7))
            for g in (None, guide)]
    with torch.no_grad():
        free, guided = (float(((model.decode(o) - target).abs() * smask).sum() / smask.sum()) for o in outs)
    assert guided < 0.5 * free


def test_renders_an_infill_request_end_to_end(folder) -> None:
    import numpy as np

    from engine.render import render_audio
    from engine.request import PCMAudio, RenderRequest

    audio = (0.2 * np.random.default_rng(0).standard_normal((2, 44100))).astype(np.float32)
    m = load_model(f"stable-audio:{folder}")
    req = RenderRequest(task="infill", audio=(PCMAudio(audio, 44100),), start_s=0.4, end_s=0.6,
                        model=f"stable-audio:{folder}", steps=4)
    out = render_audio(req, model=m)
    assert out.audio.shape == (2, 44100) and out.sample_rate == 44100
    changed = np.nonzero(np.abs(out.audio - audio).max(axis=0) > 1e-6)[0]
    assert changed.min() >= int(0.4 * 44100) and changed.max() < int(0.6 * 44100)   # only the region is new
    assert len(changed) > 0.9 * 0.2 * 44100
    assert np.isfinite(out.audio).all() and "recon_l1" in out.losses
