"""Variations: does one batched pass of N takes through the built-in model beat N single renders?

Run: python bench/variations.py [--takes 4] [--threads 2] [--repeats 3]

A guided sampling step is one forward and one backward pass of the denoiser (engine.guidance).
This times that step on the latent of a 6 s window (the DAW scripts' infill: 2 s gap, 2 s context
each side) for a batch of N latents, against N steps at batch 1, and prints the ratio
(batched time / N single-take time; below 1 means batching pays). Both run in this one process,
interleaved, so machine load affects them alike. Then one whole render_takes job is timed
against N renders, to show what the sampling share is of a take.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

import _common  # noqa: E402,F401  (the checkout on sys.path: bench/_common.py)

from engine.render import get_model, render_audio  # noqa: E402
from engine.request import PCMAudio, RenderRequest  # noqa: E402
from engine.training.synth import synth_music  # noqa: E402


def guided_step(model, z: torch.Tensor, sigma: float) -> None:
    """One forward + backward through the denoiser, as a guided sampling step does."""
    xg = z.detach().requires_grad_(True)
    x0 = model.denoiser(xg, torch.full((z.shape[0],), sigma))
    (x0.abs().mean() * z.shape[0]).backward()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--takes", type=int, default=4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps", type=int, default=8, help="sampling steps of the whole-render comparison")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = get_model("builtin")
    rate = model.sample_rate
    audio = synth_music(6 * rate, np.random.default_rng(0))
    with torch.no_grad():
        z1 = model.encode(torch.from_numpy(audio)[None].float())
    n = args.takes
    zn = z1.repeat(n, 1, 1, *([1] * (z1.dim() - 3)))
    guided_step(model, z1, 1.0)
    guided_step(model, zn, 1.0)   # warm-up both shapes
    single, batched = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        for _ in range(n):
            guided_step(model, z1, 1.0)
        single.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        guided_step(model, zn, 1.0)
        batched.append(time.perf_counter() - t0)
    s, b = float(np.median(single)), float(np.median(batched))
    print(f"guided step, latent {tuple(z1.shape)}, {args.threads} threads, load {os.getloadavg()[0]:.1f}: "
          f"{n} x batch 1 = {s:.3f} s, batch {n} = {b:.3f} s, ratio batched/single {b / s:.2f}")

    req = RenderRequest(task="infill", audio=(PCMAudio(audio, rate),), start_s=2.0, end_s=4.0, span="region",
                        steps=args.steps, seed=0)
    render_audio(req, model=model)
    t0 = time.perf_counter()
    render_audio(req, model=model)
    one = time.perf_counter() - t0
    verdict = (f"batching would save at most {(1 - b / s) * 100:.0f}% of the sampling time" if b < s
               else f"batching would make the sampling {(b / s - 1) * 100:.0f}% slower")
    print(f"one whole infill render ({args.steps} steps): {one:.2f} s; {n} takes as separate renders "
          f"~{n * one:.2f} s; {verdict}")


if __name__ == "__main__":
    main()
