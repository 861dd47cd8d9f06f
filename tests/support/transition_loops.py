"""Two-clip transitions whose joins the engine moves, for the DAW tests: drum loops of known tempo.

`loops("moved")` gives A and B at 120 BPM with their beats out of phase, so the retrieval prior
moves both joins onto beats; `loops("stretched")` gives B at 100 BPM, so it is also stretched to
A's 120. `b_at_clip_end_s` is what a DAW must play of B's file at the clip's end, computed
here from the sidecar's own fields (an independent reading of the engine's record).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from test_prior import drum_loop

CASES = {"moved": 120.0, "stretched": 100.0}


def loops(case: str, seconds: float = 8.0, rate: int = 44100) -> tuple[np.ndarray, np.ndarray]:
    """(A, B), stereo float32 at `rate`: A at 120 BPM from 0.1 s, B at CASES[case] BPM from 0.23 s."""
    a = drum_loop(120.0, seconds, chords=True)
    b = drum_loop(CASES[case], seconds, offset=0.23, seed=1, chords=True)
    if rate != 44100:
        from support.daw_support import fft_resample
        a, b = fft_resample(a, 44100, rate), fft_resample(b, 44100, rate)
    return a, b


def sidecar_of(path: str | Path) -> dict:
    return json.loads(Path(path).with_suffix(".json").read_text())


def b_at_clip_end_s(sidecar: dict) -> float:
    """The second of B's file that the clip's end has reached: B's join (its own time) plus the clip's
    B part, stretched back to B's time."""
    prior = sidecar["prior"]
    clip_end = sidecar["offset_s"] + sidecar["duration_s"]
    return prior["segments"][1]["source_start_s"] + (clip_end - prior["join_a_s"]) * prior["stretch_factor"]


def engine_moved(sidecar: dict, requested_a_s: float, requested_b_s: float) -> bool:
    """Whether the engine's joins differ from the requested ones by more than 10 ms (or B was stretched)."""
    p = sidecar["prior"]
    return (abs(p["join_a_s"] - requested_a_s) > 0.01 or abs(p["segments"][1]["source_start_s"] - requested_b_s) > 0.01
            or abs(p["stretch_factor"] - 1.0) > 0.01)
