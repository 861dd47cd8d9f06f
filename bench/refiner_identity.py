"""The refiner's identity bound: refining the original audio in place should leave it nearly alone.

A 2 s region of an 8 s window of each held-out track (40 % in) is refined from the
original itself as x_bar, exactly as a task refines a prior, and scored by multi-resolution
log-mel L1 against the original (the bar for the default strength: <= 0.1) and level (dB).

Run: python bench/refiner_identity.py [--windows 6] [--strengths 0.1,0.2] [--spans seams,gap]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from energy_bound import held_out_clips  # noqa: E402  (bench/ is on the path when run as a script)

from engine.metrics import multires_log_mel_l1  # noqa: E402
from engine.prior.edits import PriorInfo  # noqa: E402
from engine.progress import ProgressTracker  # noqa: E402
from engine.render import get_model  # noqa: E402
from engine.request import PCMAudio, RenderRequest  # noqa: E402
from engine.tasks import _refine  # noqa: E402

RATE = 44100


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--windows", type=int, default=6)
    ap.add_argument("--strengths", default="0.1,0.2")
    ap.add_argument("--spans", default="seams,gap")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = get_model("builtin")
    clips = held_out_clips(args.windows, seconds=8.0)
    g0, g1 = 3 * RATE, 5 * RATE
    for strength in (float(x) for x in args.strengths.split(",")):
        for span in args.spans.split(","):
            changes, levels = [], []
            for clip in clips:
                req = RenderRequest(task="infill", audio=(PCMAudio(clip, RATE),), start_s=3.0, end_s=5.0,
                                    refine_strength=strength, refine_span=span, steps=model.default_steps)
                out = _refine(model, clip, clip, g0, g1, [g0, g1], req, torch.Generator().manual_seed(0),
                              ProgressTracker(1000), PriorInfo("similarity"))
                changes.append(multires_log_mel_l1(out.region, clip[:, g0:g1], RATE))
                levels.append(10 * np.log10(np.mean(out.region ** 2) / np.mean(clip[:, g0:g1] ** 2)))
            print(f"strength {strength} {span}: log-mel L1 change mean {np.mean(changes):.3f} "
                  f"(worst {max(changes):.3f}); level {np.mean(levels):+.2f} dB (worst {max(levels, key=abs):+.2f})",
                  flush=True)


if __name__ == "__main__":
    main()
