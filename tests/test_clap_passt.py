"""PaSST and CLAP style embedders on random weights: frontends, rates, shapes, gradients, loading."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from engine.embedders import load_embedder
from engine.embedders.passt import PaSST, PasstEmbedder, PasstFrontend, kaldi_mel_banks, load_passt
from engine.errors import ModelNotFound

SR = 44100


def _tiny_passt(seed: int = 0) -> PaSST:
    torch.manual_seed(seed)
    m = PaSST(embed_dim=64, depth=2, heads=1,  # head width 64, as every PaSST (the loader assumes it)
              freq_patches=12, time_patches=20, num_classes=5)
    with torch.no_grad():
        for p in m.parameters():
            if p.abs().max() == 0:
                p.normal_(0, 0.02)
    return m


def _tone(hz: float, seconds: float) -> torch.Tensor:
    t = torch.arange(int(SR * seconds)) / SR
    x = 0.3 * torch.sin(2 * math.pi * hz * t)
    return torch.stack([x, x])[None]


def test_kaldi_mel_banks_are_unit_triangles_evenly_spaced_in_kaldi_mel() -> None:
    fb = kaldi_mel_banks(128, 1024, 32000, 0.0, 15500.0)
    assert fb.shape == (128, 513) and float(fb[:, -1].abs().max()) == 0.0
    peaks = fb.argmax(dim=1).double() * 32000 / 1024
    mel = 1127 * torch.log1p(peaks / 700)
    spacing = mel[64:].diff()
    assert float(spacing.std() / spacing.mean()) < 0.1          # even on the mel scale (high bands resolved)
    assert 0.75 < float(fb[60:].max(dim=1).values.min()) <= 1.0   # peak bins sit near the band centres
    assert float(fb.sum(dim=0)[400]) > 0 and float(fb[:, int(15600 / 31.25):].abs().max()) == 0.0  # nothing above f_max


def test_passt_frontend_peaks_at_the_tone() -> None:
    x = torch.sin(2 * math.pi * 1000 * torch.arange(32000) / 32000)[None]
    mel = PasstFrontend()(x)
    assert mel.shape == (1, 128, 100)   # pre-emphasis drops one sample: 1 + 31999 // 320 frames
    fb = kaldi_mel_banks(128, 1024, 32000, 0.0, 15500.0)
    assert int(mel[0, :, 50].argmax()) == int(fb[:, 32].argmax())      # 1 kHz = bin 32


def test_passt_embedder_shapes_rates_gradients_and_chunks(tmp_path) -> None:
    model = _tiny_passt()
    emb = PasstEmbedder(model, sample_rate=SR)
    assert emb.sample_rate == SR and emb.dim == 64 and model.max_frames == 206
    x = (0.1 * torch.randn(2, 2, SR, generator=torch.Generator().manual_seed(0))).requires_grad_(True)
    y = emb(x)
    assert y.shape == (2, 64) and torch.isfinite(y).all()
    y.pow(2).sum().backward()
    assert x.grad is not None and float(x.grad.abs().max()) > 0
    # batch items are independent, stereo is mid, and a long clip is the mean over its chunks
    with torch.no_grad():
        assert torch.allclose(emb(x[1:2]), y[1:2], atol=1e-5)
        long = 0.1 * torch.randn(1, 2, 3 * SR, generator=torch.Generator().manual_seed(1))
        whole = emb(long)
        mono32 = emb.resample(long.mean(dim=1))
        chunks = [emb.model.features(emb.frontend(mono32[:, s:s + emb.chunk])[:, None])
                  for s in range(0, mono32.shape[-1], emb.chunk)]
        assert len(chunks) == 2 and emb.chunk == 205 * 320
        assert torch.allclose(whole, torch.stack(chunks).mean(0), atol=1e-5)
    # finite-difference check of the gradient along a random direction
    emb64 = PasstEmbedder(_tiny_passt().double(), sample_rate=SR).double()
    a = (0.1 * torch.randn(1, 2, SR // 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64))
    assert torch.autograd.gradcheck(lambda t: emb64(t).sum(), (a.requires_grad_(True),), fast_mode=True,
                                    eps=1e-6, atol=1e-5, rtol=1e-3)


def test_load_passt_from_a_state_dict_file(tmp_path) -> None:
    model = _tiny_passt(seed=3)
    path = tmp_path / "passt.pt"
    torch.save({f"net.{k}": v for k, v in model.state_dict().items()}, path)   # a wrapper's prefix is stripped
    emb = load_embedder(f"passt:{path}")
    x = _tone(440, 0.5)
    with torch.no_grad():
        assert torch.allclose(emb(x), PasstEmbedder(model)(x), atol=1e-6)
    with pytest.raises(ModelNotFound, match="not found"):
        load_passt(str(tmp_path / "missing.pt"))
    torch.save({"cls_token": torch.zeros(1, 1, 8)}, tmp_path / "bad.pt")
    with pytest.raises(ModelNotFound, match="not a PaSST state dict"):
        load_passt(str(tmp_path / "bad.pt"))


def _tiny_clap_folder(path) -> None:
    from transformers import ClapAudioConfig, ClapConfig, ClapModel, ClapTextConfig

    torch.manual_seed(0)
    audio = ClapAudioConfig(depths=[1, 1, 1, 1], num_attention_heads=[1, 1, 1, 1], patch_embeds_hidden_size=8,
                            hidden_size=64, projection_dim=16, projection_hidden_size=16)
    text = ClapTextConfig(vocab_size=32, hidden_size=16, num_hidden_layers=1, num_attention_heads=1,
                          intermediate_size=16, projection_dim=16, projection_hidden_size=16)
    cfg = ClapConfig(text_config=text.to_dict(), audio_config=audio.to_dict(), projection_dim=16)
    ClapModel(cfg).save_pretrained(path)


def test_clap_frontend_matches_transformers_feature_extractor() -> None:
    pytest.importorskip("transformers")
    from transformers import ClapFeatureExtractor

    from engine.embedders.clap import ClapFrontend

    x = (0.1 * np.random.default_rng(0).standard_normal(3 * 48000)).astype(np.float32)
    for truncation, scale in (("rand_trunc", "slaney"), ("fusion", "htk")):
        ref = ClapFeatureExtractor(truncation=truncation, padding="repeatpad")(
            x, sampling_rate=48000, return_tensors="np")["input_features"][:, :1]
        ours = ClapFrontend(mel_scale=scale)(torch.from_numpy(x)[None]).numpy()
        assert ours.shape == ref.shape == (1, 1, 1001, 64)
        assert np.abs(ours - ref).max() < 1e-3     # dB


def test_clap_embedder_from_a_local_folder(tmp_path) -> None:
    pytest.importorskip("transformers")
    from engine.embedders.clap import ClapEmbedder

    _tiny_clap_folder(tmp_path / "clap")
    emb = load_embedder(f"clap:{tmp_path / 'clap'}")
    assert isinstance(emb, ClapEmbedder) and emb.sample_rate == SR and emb.dim == 16
    x = (0.1 * torch.randn(1, 2, SR, generator=torch.Generator().manual_seed(0))).requires_grad_(True)
    y = emb(x)
    assert y.shape == (1, 16) and abs(float(y.norm()) - 1.0) < 1e-5
    (y * torch.linspace(-1, 1, 16)).sum().backward()
    assert float(x.grad.abs().max()) > 0
    with pytest.raises(ModelNotFound, match="no config.json"):
        load_embedder(f"clap:{tmp_path / 'nothing'}")


def _as_laion(sd: dict) -> dict:
    """transformers' audio-tower keys written back in LAION-CLAP's naming (the file layout users have)."""
    out = {}
    for k, v in sd.items():
        if ".attention.self.key." in k or ".attention.self.value." in k:
            continue
        n = k.replace("audio_model.audio_encoder", "audio_branch")
        n = (n.replace("attention.output.dense", "attn.proj").replace("attention.self.", "attn.")
             .replace("intermediate.dense", "mlp.fc1").replace("output.dense", "mlp.fc2")
             .replace("layernorm_before", "norm1").replace("layernorm_after", "norm2").replace("batch_norm", "bn0")
             .replace("audio_projection.linear1", "audio_projection.0")
             .replace("audio_projection.linear2", "audio_projection.2"))
        if ".attn.query." in n:
            n = n.replace("query", "qkv")
            v = torch.cat([v, sd[k.replace("query", "key")], sd[k.replace("query", "value")]])
        out["module." + n] = v
    out["module.audio_branch.spectrogram_extractor.stft.conv_real.weight"] = torch.zeros(3, 1, 4)
    out["module.audio_branch.head.weight"] = torch.zeros(5, 64)
    out["module.audio_branch.layers.0.blocks.0.attn_mask"] = torch.zeros(4, 4)
    out["module.text_branch.embeddings.word_embeddings.weight"] = torch.zeros(3, 4)
    return {"state_dict": out, "epoch": 45}


def test_clap_from_an_original_laion_checkpoint_file(tmp_path) -> None:
    pytest.importorskip("transformers")
    from transformers import ClapAudioConfig, ClapAudioModelWithProjection

    from engine.embedders.clap import ClapEmbedder

    torch.manual_seed(0)
    cfg = ClapAudioConfig(depths=[1, 1, 2, 1], num_attention_heads=[1, 2, 1, 1], patch_embeds_hidden_size=8,
                          hidden_size=64, projection_dim=16, projection_hidden_size=24)
    ref = ClapAudioModelWithProjection(cfg).eval()
    torch.save(_as_laion(ref.state_dict()), tmp_path / "630k-tiny.pt")
    emb = load_embedder(f"clap:{tmp_path / '630k-tiny.pt'}")
    got = emb.model.config
    assert (list(got.depths), list(got.num_attention_heads), got.hidden_size, got.projection_dim) == \
        ([1, 1, 2, 1], [1, 2, 1, 1], 64, 16)
    x = 0.1 * torch.randn(1, 2, SR // 2, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(emb(x), ClapEmbedder(ref)(x), atol=1e-6)
    torch.save({"state_dict": {"module.audio_branch.norm.weight": torch.ones(4)}}, tmp_path / "bad.pt")
    with pytest.raises(ModelNotFound, match="not a LAION-CLAP audio checkpoint"):
        load_embedder(f"clap:{tmp_path / 'bad.pt'}")
