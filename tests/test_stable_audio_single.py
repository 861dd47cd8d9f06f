"""Single-file Stable Audio Open checkpoints (stable-audio-tools layout) convert to the diffusers modules.

The tiny components are written out under stable-audio-tools' key names (the inverse of
the documented renaming: fused qkv/kv, gamma/beta, Snake shapes, nested `layers.N`), and
loading that file must give back exactly the same network outputs.
"""
from __future__ import annotations

import json
import re

import pytest
import torch

pytest.importorskip("diffusers")

from engine.errors import ModelNotFound  # noqa: E402
from support.random_init import StableAudioSize, build_stable_audio_components  # noqa: E402
from engine.models.stable_audio import load_stable_audio, model_from_components  # noqa: E402

# the stable-audio-tools config derives key/value heads as cond_dim // head_dim
SIZE = StableAudioSize(dit_kv_heads=2)


def _sat_dit(sd: dict) -> dict:
    out = {}
    for k, v in sd.items():
        if k == "time_proj.weight":
            out["model.model.timestep_features.weight"] = v[:, None]
            continue
        m = re.match(r"transformer_blocks\.(\d+)\.(.*)", k)
        if m:
            n, rest = m.groups()
            rest = (rest.replace("norm1.weight", "pre_norm.gamma").replace("norm1.bias", "pre_norm.beta")
                    .replace("norm2.weight", "cross_attend_norm.gamma").replace("norm2.bias", "cross_attend_norm.beta")
                    .replace("norm3.weight", "ff_norm.gamma").replace("norm3.bias", "ff_norm.beta")
                    .replace("attn1.", "self_attn.").replace("attn2.", "cross_attn.")
                    .replace("to_out.0", "to_out").replace("ff.net", "ff.ff"))
            key = f"model.model.transformer.layers.{n}.{rest}"
            if "self_attn.to_q." in key:
                out[key.replace("to_q", "to_qkv")] = torch.cat(
                    [v, sd[k.replace("to_q", "to_k")], sd[k.replace("to_q", "to_v")]])
            elif "cross_attn.to_k." in key:
                out[key.replace("to_k", "to_kv")] = torch.cat([v, sd[k.replace("to_k", "to_v")]])
            elif "self_attn.to_k." in key or "self_attn.to_v." in key or "cross_attn.to_v." in key:
                pass
            else:
                out[key] = v
            continue
        key = (k.replace("timestep_proj", "to_timestep_embed").replace("global_proj", "to_global_embed")
               .replace("cross_attention_proj", "to_cond_embed"))
        key = key.replace("proj_in", "transformer.project_in").replace("proj_out", "transformer.project_out")
        out["model.model." + key] = v
    out["model.model.transformer.rotary_pos_emb.inv_freq"] = torch.ones(4)  # present in real files, unused
    return out


def _sat_vae(sd: dict, n: int = 5) -> dict:
    unit = {"snake1": "layers.0", "conv1": "layers.1", "snake2": "layers.2", "conv2": "layers.3"}
    out = {}
    for k, v in sd.items():
        side, rest = k.split(".", 1)
        if rest.startswith("conv1."):
            key = f"{side}.layers.0.{rest[6:]}"
        elif rest.startswith("snake1."):
            key = f"{side}.layers.{n + 1}.{rest[7:]}"
        elif rest.startswith("conv2."):
            key = f"{side}.layers.{n + 2}.{rest[6:]}"
        else:
            b, part, tail = re.match(r"block\.(\d+)\.([a-z_0-9]+)\.(.*)", rest).groups()
            if part.startswith("res_unit"):
                r = int(part[-1])
                inner, param = tail.split(".", 1)
                idx = r - 1 if side == "encoder" else r + 1
                key = f"{side}.layers.{int(b) + 1}.layers.{idx}.{unit[inner]}.{param}"
            else:
                pos = {"encoder": {"snake1": 3, "conv1": 4}, "decoder": {"snake1": 0, "conv_t1": 1}}[side][part]
                key = f"{side}.layers.{int(b) + 1}.layers.{pos}.{tail}"
        out["pretransform.model." + key] = v.reshape(-1) if ("alpha" in key or "beta" in key) else v
    return out


def _sat_projection(sd: dict) -> dict:
    return {"conditioner.conditioners." + k.replace("start_number_conditioner", "seconds_start")
            .replace("end_number_conditioner", "seconds_total").replace("time_positional_embedding", "embedder.embedding"): v
            for k, v in sd.items()}


def _write_single_file(path, comps) -> None:
    from safetensors.torch import save_file

    sd = {**_sat_dit(comps["transformer"].state_dict()), **_sat_vae(comps["vae"].state_dict()),
          **_sat_projection(comps["projection_model"].state_dict())}
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path / "model.safetensors"))
    config = {"sample_size": SIZE.sample_size * 2048, "sample_rate": 44100, "model": {
        "pretransform": {"config": {"io_channels": 2, "downsampling_ratio": 2048,
                                    "encoder": {"config": {"channels": 2 * SIZE.latent_channels,
                                                           "strides": [2, 4, 4, 8, 8],
                                                           "c_mults": list(SIZE.vae_channel_multiples)}},
                                    "decoder": {"config": {"channels": SIZE.vae_decoder_channels,
                                                           "latent_dim": SIZE.latent_channels}}}},
        "diffusion": {"config": {"embed_dim": SIZE.dit_heads * SIZE.dit_head_dim, "num_heads": SIZE.dit_heads,
                                 "depth": SIZE.dit_layers, "io_channels": SIZE.latent_channels,
                                 "cond_token_dim": SIZE.cross_attention_dim,
                                 "global_cond_dim": 2 * SIZE.cross_attention_dim}},
        "conditioning": {"cond_dim": SIZE.cross_attention_dim, "configs": [
            {"id": "prompt", "config": {"t5_model_name": "t5-base", "max_length": SIZE.max_tokens}},
            {"id": "seconds_start", "config": {"min_val": 0, "max_val": 512}},
            {"id": "seconds_total", "config": {"min_val": 0, "max_val": 512}}]}}}
    (path / "model_config.json").write_text(json.dumps(config))


def test_single_file_checkpoint_loads_to_the_same_networks(tmp_path) -> None:
    comps = build_stable_audio_components(SIZE, seed=3, text_encoder=False)
    sched = dict(comps.pop("scheduler").config)
    _write_single_file(tmp_path, comps)
    ref = model_from_components(comps, sched, name="ref", max_text_tokens=SIZE.max_tokens)
    m = load_stable_audio(str(tmp_path))
    assert m.info["layout"] == "single-file" and m.info["text"] is False
    x = torch.randn(1, SIZE.latent_channels, 12, generator=torch.Generator().manual_seed(0)) * 2
    audio = 0.1 * torch.randn(1, 2, 12 * 2048, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(m.denoiser(x, torch.tensor([1.5])), ref.denoiser(x, torch.tensor([1.5])))
        assert torch.equal(m.encode(audio), ref.encode(audio))
        assert torch.equal(m.decode(x), ref.decode(x))


def test_single_file_that_does_not_fit_is_a_clear_error(tmp_path) -> None:
    comps = build_stable_audio_components(SIZE, seed=3, text_encoder=False)
    comps.pop("scheduler")
    _write_single_file(tmp_path, comps)
    config = json.loads((tmp_path / "model_config.json").read_text())
    config["model"]["diffusion"]["config"]["depth"] = 3          # one layer more than the file holds
    (tmp_path / "model_config.json").write_text(json.dumps(config))
    with pytest.raises(ModelNotFound, match="does not fit the transformer"):
        load_stable_audio(str(tmp_path))
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(ModelNotFound, match="lacks model.safetensors"):
        load_stable_audio(str(tmp_path))
