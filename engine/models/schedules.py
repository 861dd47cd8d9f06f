"""Each backend's native noise schedule, so a render can sample on the levels the model was trained on.

`model.info["schedule"]` names it (set by the loaders); models without one use the
method's cosine schedule. All return n + 1 VE sigmas ending in 0.
"""
from __future__ import annotations

import torch

from ..schedule import get_sigmas_cosine
from .base import Model


def native_sigmas(model: Model, steps: int) -> torch.Tensor:
    """Stable Audio Open: exponential 0.3..500; Stable Audio 3: log-SNR flow times; otherwise cosine."""
    kind = model.info.get("schedule", "cosine")
    if kind == "exponential":
        from ..samplers_dpm import get_sigmas_exponential

        return get_sigmas_exponential(steps, float(model.info["sigma_min"]), float(model.info["sigma_max"])).double()
    if kind == "logsnr":
        from .stable_audio3 import logsnr_sigmas

        return logsnr_sigmas(steps)
    return get_sigmas_cosine(steps)
