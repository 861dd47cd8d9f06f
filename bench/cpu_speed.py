"""Speed of the built-in model on CPU: infill of a 2 s gap in a 6 s window at the default step count.

Run: python bench/cpu_speed.py [--threads 2] [--repeats 3] [--model builtin]
Prints seconds per render (median) and the real-time factor (seconds of compute
per second of generated audio; < 1 is faster than real time).
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.render import get_model, render_audio  # noqa: E402
from engine.request import PCMAudio, RenderRequest  # noqa: E402
from engine.training.synth import synth_music  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--model", default="builtin")
    p.add_argument("--steps", type=int, default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = get_model(args.model)
    audio = synth_music(6 * 44100, np.random.default_rng(0))
    req = RenderRequest(task="infill", audio=(PCMAudio(audio, 44100),), start_s=2.0, end_s=4.0, span="region",
                        steps=args.steps, model=args.model, seed=0)
    render_audio(req, model=model)  # warm-up (allocations, oneDNN kernels)
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        render_audio(req, model=model)
        times.append(time.perf_counter() - t0)
    med = float(np.median(times))
    steps = args.steps or model.default_steps
    print(f"{args.model}: infill 2 s gap in 6 s window, {steps} steps, {args.threads} threads on "
          f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores visible, load average "
          f"{os.getloadavg()[0]:.1f}): median {med:.2f} s over {args.repeats} (all: "
          f"{', '.join(f'{t:.2f}' for t in times)}), real-time factor {med / 2.0:.2f}")


if __name__ == "__main__":
    main()
