"""What the texture match costs: a style render with and without it, on one minute of a held-out track.

    python bench/texture_cost.py [--track Compost.ogg] [--seconds 60] [--presets dark-ambient,percussive]

Run it on a quiet machine: under load the optimiser's threads spin and the cost grows
tenfold (BENCHMARKS.md, "Style presets").
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from _common import ROOT  # noqa: E402  (the checkout on sys.path: bench/_common.py)

import quality as Q  # noqa: E402
from engine.presets import apply_preset  # noqa: E402
from engine.render import render_audio  # noqa: E402
from engine.request import PCMAudio, request_from_mapping  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT / "data")
    ap.add_argument("--track", default="Compost.ogg")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--presets", default="dark-ambient,percussive")
    ap.add_argument("--iterations", type=int, default=60)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    (w,) = Q.held_out_windows(args.data, 1, (args.track,))
    x = w.track_audio[:, :int(args.seconds * Q.RATE)]
    seconds = x.shape[1] / Q.RATE
    print(f"| preset | texture_iterations | wall s for {seconds:.0f} s | s per s of audio |\n|---|---|---|---|")
    for preset in args.presets.split(","):
        for iterations in (0, args.iterations):
            fields = apply_preset({"task": "style", "audio": [PCMAudio(x, Q.RATE)],
                                   "texture_iterations": iterations}, preset)
            t0 = time.perf_counter()
            render_audio(request_from_mapping(fields))
            dt = time.perf_counter() - t0
            print(f"| {preset} | {iterations} | {dt:.1f} | {dt / seconds:.3f} |", flush=True)


if __name__ == "__main__":
    main()
