"""The shipped `builtin` model: loads, has the right geometry, is exact where it should be, and denoises.

No corpus and no GPU: the audio is synthesised here (engine.training.synth) and
the weights are the ones committed in engine/models/weights/.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.errors import ModelNotFound
from engine.models import available_models, load_model
from engine.models.builtin import WEIGHTS_DIR, load_builtin
from engine.training.synth import synth_music

RATE = 44100


@pytest.fixture(scope="module")
def model():
    return load_builtin()


def _music(seconds: float, seed: int) -> torch.Tensor:
    audio = synth_music(int(seconds * RATE), np.random.default_rng(seed))
    return torch.from_numpy(audio)[None]


def test_registered_and_loadable_by_name():
    assert "builtin" in available_models()
    assert load_model("builtin").name == "builtin"


def test_weights_are_small_safetensors_with_a_model_card():
    weights = WEIGHTS_DIR / "builtin.safetensors"
    assert weights.stat().st_size <= 50 * 2 ** 20
    assert (WEIGHTS_DIR / "MODEL_CARD.md").read_text().count("engine.training.train") >= 1


def test_geometry(model):
    assert model.sample_rate == 44100 and model.denoiser.sample_rate == 44100
    assert model.hop == 512 and model.autoencoder.latent_channels == 2052
    assert model.denoiser.channels == model.autoencoder.latent_channels
    assert model.denoiser.sigma_data == 1.0
    # Frame k is centred on sample k * hop: 6 s -> 1 + 264600 // 512 frames.
    z = model.encode(_music(6.0, 0))
    assert z.shape == (1, 2052, 517)
    # Any length works (the U-Net pads internally): 517 and 61 frames are not multiples of 16.
    assert model.denoiser(z, torch.tensor([0.5])).shape == z.shape
    short = z[..., :61]
    assert model.denoiser(short, torch.tensor([0.5])).shape == short.shape


def test_encode_decode_round_trip_is_exact(model):
    audio = _music(2.0, 1) + 0.01 * torch.randn(1, 2, 2 * RATE, generator=torch.Generator().manual_seed(0))
    back = model.decode(model.encode(audio), length=audio.shape[-1])
    assert back.shape == audio.shape
    assert float((back - audio).abs().max()) < 1e-5
    # Latents are normalised per bin: music has roughly unit latent variance (sigma_data = 1).
    assert 0.1 < float(model.encode(_music(6.0, 2)).std()) < 3.0


def test_denoiser_is_differentiable_in_x(model):
    z = model.encode(_music(1.0, 3)).requires_grad_(True)
    x = z + 0.5 * torch.randn_like(z)
    out = model.denoiser(x, torch.tensor([0.5]))
    out.abs().mean().backward()
    grad = z.grad
    assert grad is not None and bool(torch.isfinite(grad).all()) and float(grad.abs().sum()) > 0
    # The autoencoder's decoder is differentiable too (style guidance goes through it).
    zz = z.detach().requires_grad_(True)
    model.decode(zz).pow(2).mean().backward()
    assert zz.grad is not None and float(zz.grad.abs().sum()) > 0


def test_missing_weights_raise_model_not_found_naming_path_and_command(tmp_path):
    with pytest.raises(ModelNotFound) as err:
        load_builtin(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere" / "builtin.safetensors") in str(err.value)
    assert "python -m engine.training.train" in str(err.value)
    assert err.value.code == "model_not_found"


@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.0])
def test_denoising_beats_identity_zero_and_the_best_blind_shrinkage(model, sigma):
    """A real check that the weights learned music: compare with estimators that know nothing of it.

    Baselines in latent space: the noisy input (identity), zero, and the best scalar
    Wiener shrinkage x * P / (P + sigma^2) given the clip's true latent power P (an
    oracle no denoiser has; an untrained network returns x / (1 + sigma^2)).
    """
    z = torch.cat([model.encode(_music(6.0, seed)) for seed in (10, 11)])
    noise = torch.randn(z.shape, generator=torch.Generator().manual_seed(1))
    x = z + sigma * noise
    with torch.no_grad():
        den = model.denoiser(x, torch.full((z.shape[0],), sigma))

    def mse(a):
        return float(((a - z) ** 2).mean())

    power = float((z ** 2).mean())
    identity, zero, wiener = mse(x), mse(torch.zeros_like(z)), mse(x * power / (power + sigma ** 2))
    best = min(identity, zero, wiener)
    assert mse(den) < 0.8 * best, dict(model=mse(den), identity=identity, zero=zero, wiener=wiener)
