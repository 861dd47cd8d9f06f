"""The style task: push a region toward a reference embedding, keeping the context around it.

Kept apart from engine/tasks.py so the style path (effect chains, embedding
guidance) can grow without touching the retrieval-prior tasks.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .errors import InvalidRequest
from .models.base import Model
from .progress import ProgressTracker
from .regions import plan_window
from .request import RenderRequest
from .tasks import StyleTarget, TaskOutput, _place, generate_window, seconds


def style(model: Model, audios: Sequence[np.ndarray], request: RenderRequest, *, generator: torch.Generator,
          tracker: ProgressTracker, target: StyleTarget) -> TaskOutput:
    """Push [start, end) (default: all) toward the reference embedding, with the context around it kept."""
    audio = audios[0]
    rate = model.sample_rate
    start = 0 if request.start_s is None else seconds(request.start_s, rate)
    end = audio.shape[1] if request.end_s is None else seconds(request.end_s, rate)
    if end > audio.shape[1]:
        raise InvalidRequest(f"the region ends at {request.end_s:.3f} s but the audio lasts "
                             f"{audio.shape[1] / rate:.3f} s", code="region_out_of_range")
    if end - start < seconds(0.5, rate):
        raise InvalidRequest("style needs at least 0.5 s of audio")
    win = plan_window(audio.shape[1], start, end, seconds(request.context_s, rate))
    window_audio = audio[:, win.start:win.stop]
    gen, losses = generate_window(model, window_audio, win.known_mask(), request, generator=generator,
                                  tracker=tracker, style=target, style_span=(start - win.start, end - win.start),
                                  strength=request.strength)
    return _place(audio, gen, win, seconds(request.seam_ms / 1000.0, rate), losses)
