"""Local diffusers folders: the checks and loading steps every diffusers backend shares.

Segue never downloads weights, so a folder that lacks a part must say exactly which part
and how to get it; each backend names its required parts and its classes, and this module
does the rest the same way for all of them.
"""
from __future__ import annotations

import json
import os
from typing import Any, Callable, Mapping

import torch

from ..errors import ModelNotFound

WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin", "model.safetensors",
                "pytorch_model.bin", "diffusion_pytorch_model.safetensors.index.json",
                "model.safetensors.index.json", "pytorch_model.bin.index.json")


def check_folder(folder: str, *, label: str, required: tuple[str, ...], how_to: str) -> dict[str, bool]:
    """Which optional parts exist; raises ModelNotFound naming every missing required part.

    `label` names the backend in messages ("Stable Audio"); `required` are the sub-folders that
    need a config and weights; a text encoder counts only with its tokenizer, and vice versa.
    """
    if not os.path.isdir(folder):
        raise ModelNotFound(f"{label} folder not found: {folder!r}; {how_to}")
    missing = []
    for part in required:
        sub = os.path.join(folder, part)
        if not os.path.isfile(os.path.join(sub, "config.json")):
            missing.append(f"{part}/config.json")
        if not any(os.path.isfile(os.path.join(sub, w)) for w in WEIGHT_FILES):
            missing.append(f"{part}/ weights (one of {', '.join(WEIGHT_FILES[:2])})")
    if not os.path.isfile(os.path.join(folder, "scheduler", "scheduler_config.json")):
        missing.append("scheduler/scheduler_config.json")
    has_text = os.path.isdir(os.path.join(folder, "text_encoder"))
    has_tok = os.path.isdir(os.path.join(folder, "tokenizer"))
    if has_text != has_tok:
        missing.append("tokenizer/" if has_text else "text_encoder/")
    if missing:
        raise ModelNotFound(f"{label} folder {folder!r} is incomplete; missing: {'; '.join(missing)}. {how_to}")
    return {"text": has_text and has_tok}


def scheduler_config(folder: str) -> dict:
    with open(os.path.join(folder, "scheduler", "scheduler_config.json")) as f:
        return json.load(f)


def load_parts(folder: str, loaders: Mapping[str, Callable[[str], Any]], *, label: str) -> dict[str, Any]:
    """Each part from its sub-folder (`loaders[part](folder/part)`, in order); a bad file is ModelNotFound."""
    loaded: dict[str, Any] = {}
    try:
        for part, load in loaders.items():
            loaded[part] = load(os.path.join(folder, part))
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise ModelNotFound(f"cannot load {label} weights from {folder!r}: {exc}") from exc
    return loaded


def freeze_for_inference(components: Mapping[str, Any], *, device: str | torch.device,
                         dtype: torch.dtype) -> None:
    """Move modules to `device`, eval, no grads; only the transformer takes `dtype` (the rest stays float32)."""
    for part, m in components.items():
        if isinstance(m, torch.nn.Module):
            m.to(device=device, dtype=dtype if part == "transformer" else torch.float32).eval().requires_grad_(False)
