"""Stable Audio Open single-file layout (stable-audio-tools: `model.safetensors` + `model_config.json`).

The released checkpoint keeps the DiT (`model.model.*`), the Oobleck VAE
(`pretransform.model.*`) and the seconds conditioners (`conditioner.conditioners.*`) in
one file; the T5 text encoder is not in it (stable-audio-tools fetches it by name), so a
single-file model runs without prompts unless a T5 folder is given. Keys are renamed
to diffusers' modules here, the same renaming diffusers' conversion script applies:
fused qkv / kv projections are split, LayerNorm gamma/beta become weight/bias, and
Snake parameters gain their broadcast axes.
"""
from __future__ import annotations

import json
import os
import re
from typing import Any, Optional

import torch

from ..errors import ModelNotFound

DIT_RENAMES = (("transformer.", ""), ("layers", "transformer_blocks"), ("self_attn", "attn1"),
               ("cross_attn", "attn2"), ("ff.ff", "ff.net"), ("pre_norm", "norm1"), ("cross_attend_norm", "norm2"),
               ("ff_norm", "norm3"), ("to_out", "to_out.0"), ("gamma", "weight"), ("beta", "bias"),
               ("project", "proj"), ("to_timestep_embed", "timestep_proj"), ("to_global_embed", "global_proj"),
               ("to_cond_embed", "cross_attention_proj"))
RES_UNIT_RENAMES = (("layers.0.beta", "snake1.beta"), ("layers.0.alpha", "snake1.alpha"),
                    ("layers.2.beta", "snake2.beta"), ("layers.2.alpha", "snake2.alpha"),
                    ("layers.1.bias", "conv1.bias"), ("layers.1.weight_", "conv1.weight_"),
                    ("layers.3.bias", "conv2.bias"), ("layers.3.weight_", "conv2.weight_"))


def _rename(key: str, pairs) -> str:
    for old, new in pairs:
        key = key.replace(old, new)
    return key


def convert_dit(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        if not key.startswith("model.model.") or key.endswith("rotary_pos_emb.inv_freq"):
            continue
        new = _rename(key[len("model.model."):], DIT_RENAMES)
        if new == "timestep_features.weight":  # Fourier features: (half, 1) -> (half,), named time_proj
            new, value = "time_proj.weight", (value.squeeze(1) if value.ndim == 2 else value)
        if "to_qkv" in new:
            for name, part in zip("qkv", torch.chunk(value, 3, dim=0)):
                out[new.replace("qkv", name)] = part
        elif "to_kv" in new:
            for name, part in zip("kv", torch.chunk(value, 2, dim=0)):
                out[new.replace("kv", name)] = part
        else:
            out[new] = value
    return out


def convert_vae(sd: dict[str, torch.Tensor], n_blocks: int) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        if not key.startswith("pretransform.model."):
            continue
        new = key[len("pretransform.model."):].replace("coder.layers.0.", "coder.conv1.")
        m = re.search(r"coder\.layers\.(\d+)\.", new)
        if m:
            idx = int(m.group(1))
            new = new.replace(f"coder.layers.{idx}.", f"coder.block.{idx - 1}.")
            b = f"block.{idx - 1}"
            if new.startswith("encoder"):
                for i in range(3):
                    new = new.replace(f"{b}.layers.{i}.", f"{b}.res_unit{i + 1}.")
                new = new.replace(f"{b}.layers.3.", f"{b}.snake1.").replace(f"{b}.layers.4.", f"{b}.conv1.")
            else:
                for i in range(2, 5):
                    new = new.replace(f"{b}.layers.{i}.", f"{b}.res_unit{i - 1}.")
                new = new.replace(f"{b}.layers.0.", f"{b}.snake1.").replace(f"{b}.layers.1.", f"{b}.conv_t1.")
            new = _rename(new, RES_UNIT_RENAMES)
            if idx == n_blocks + 1:
                new = new.replace(f"{b}.", "snake1.")
            elif idx == n_blocks + 2:
                new = new.replace(f"{b}.", "conv2.")
        if "snake" in new and value.ndim == 1:
            value = value[None, :, None]
        if new in out:
            raise ValueError(f"two checkpoint keys map to {new}")
        out[new] = value
    return out


def convert_projection(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        if not key.startswith("conditioner.conditioners.") or ".prompt." in key or key.startswith(
                "conditioner.conditioners.prompt"):
            continue
        new = key[len("conditioner.conditioners."):].replace("embedder.embedding", "time_positional_embedding")
        new = new.replace("seconds_start", "start_number_conditioner").replace("seconds_total", "end_number_conditioner")
        out[new] = value
    return out


def load_single_file_components(folder: str, *, text_folder: Optional[str] = None) -> tuple[dict[str, Any], dict, int]:
    """`model.safetensors` + `model_config.json` from `folder` as diffusers components.

    Returns (components, scheduler config, max text tokens); engine/models/stable_audio.py
    wraps them as a `Model`, so this module does not import that one (no import cycle).
    """
    ckpt, cfg_path = os.path.join(folder, "model.safetensors"), os.path.join(folder, "model_config.json")
    missing = [os.path.basename(p) for p in (ckpt, cfg_path) if not os.path.isfile(p)]
    if missing:
        raise ModelNotFound(f"single-file Stable Audio folder {folder!r} lacks {', '.join(missing)}")
    import diffusers
    from diffusers.pipelines.stable_audio.modeling_stable_audio import StableAudioProjectionModel
    from safetensors.torch import load_file

    with open(cfg_path) as f:
        config = json.load(f)
    try:
        model_cfg = config["model"]
        dit_cfg = model_cfg["diffusion"]["config"]
        ae_cfg = model_cfg["pretransform"]["config"]
        cond = {c["id"]: c["config"] for c in model_cfg["conditioning"]["configs"]}
        head_dim = dit_cfg["embed_dim"] // dit_cfg["num_heads"]
        sd = load_file(ckpt)
        dit = diffusers.StableAudioDiTModel(
            sample_size=int(config["sample_size"]) // int(ae_cfg["downsampling_ratio"]),
            in_channels=dit_cfg["io_channels"], num_layers=dit_cfg["depth"], attention_head_dim=head_dim,
            num_attention_heads=dit_cfg["num_heads"],
            num_key_value_attention_heads=dit_cfg["cond_token_dim"] // head_dim,
            out_channels=dit_cfg["io_channels"], cross_attention_dim=dit_cfg["cond_token_dim"], time_proj_dim=256,
            global_states_input_dim=dit_cfg["global_cond_dim"], cross_attention_input_dim=dit_cfg["cond_token_dim"])
        enc, dec = ae_cfg["encoder"]["config"], ae_cfg["decoder"]["config"]
        vae = diffusers.AutoencoderOobleck(
            encoder_hidden_size=enc["channels"], downsampling_ratios=enc["strides"], decoder_channels=dec["channels"],
            decoder_input_channels=dec["latent_dim"], audio_channels=ae_cfg["io_channels"],
            channel_multiples=enc["c_mults"], sampling_rate=config["sample_rate"])
        projection = StableAudioProjectionModel(
            text_encoder_dim=model_cfg["conditioning"]["cond_dim"], conditioning_dim=model_cfg["conditioning"]["cond_dim"],
            min_value=cond["seconds_start"]["min_val"], max_value=cond["seconds_start"]["max_val"])
        comps: dict[str, Any] = {"transformer": dit, "vae": vae, "projection_model": projection}
        for name, converted in (("transformer", convert_dit(sd)), ("vae", convert_vae(sd, len(enc["strides"]))),
                                ("projection_model", convert_projection(sd))):
            _load_strict(comps[name], converted, name, folder)
    except (KeyError, TypeError) as exc:
        raise ModelNotFound(f"{cfg_path} is not a Stable Audio Open model_config.json (missing {exc})") from exc
    max_tokens = int(cond.get("prompt", {}).get("max_length", 128))
    if text_folder:
        from transformers import AutoTokenizer, T5EncoderModel

        comps["text_encoder"] = T5EncoderModel.from_pretrained(text_folder)
        comps["tokenizer"] = AutoTokenizer.from_pretrained(text_folder)
    sched = {"sigma_min": 0.3, "sigma_max": 500.0, "sigma_data": 1.0}
    return comps, sched, max_tokens


def _load_strict(module: torch.nn.Module, sd: dict[str, torch.Tensor], name: str, folder: str) -> None:
    result = module.load_state_dict(sd, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ModelNotFound(f"{folder}/model.safetensors does not fit the {name}: missing "
                            f"{result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]}")
