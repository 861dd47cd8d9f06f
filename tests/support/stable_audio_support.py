"""Shared pieces of the Stable Audio backend tests: a tiny saved folder and the context error."""
from __future__ import annotations

from typing import Any, Callable

import torch


def save_tiny_folder(tmp_path_factory: Any, name: str, save: Callable[..., None], size: Any) -> str:
    """Random weights (seed 0) saved in diffusers layout, once per module; diffusers' loading chatter off."""
    from diffusers.utils import logging

    logging.set_verbosity_error()
    path = str(tmp_path_factory.mktemp(name) / f"{name}-tiny")
    save(path, size, seed=0)
    return path


def known_error(out: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean absolute latent error over the kept frames (mask 1) and channels: 0.0 when the context is exact."""
    return float(((out - y).abs() * mask).sum() / (mask.sum() * y.shape[1]))
