"""Speed of Segue's default edits on CPU, analysis included, as real-time factors.

Measures, at the request defaults (the model's default prior, refinement and steps):
- infill of a 2 s gap in the middle of a 10 s clip: best of `--repeats` warm renders;
- continuation of the same 10 s clip by `--continue-s` seconds (default 3 minutes), once;
- cold start: a fresh Python process doing the imports, the model load and the first
  infill (so any JIT, kernel selection or first analysis is in it), reported apart.
The real-time factor is seconds of compute per second of generated audio (<= 1 is at
least real time). The clip is 10 s of the first held-out corpus track, 30% in, when
data/corpus exists, else synthetic music (say which in the output).

Run: python bench/cpu_speed.py [--threads 2] [--repeats 3] [--continue-s 180] [--model builtin]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

T_PROCESS = time.perf_counter()  # the cold-start clock starts before the heavy imports

import numpy as np  # noqa: E402
import torch  # noqa: E402

from _common import ROOT  # noqa: E402  (the checkout on sys.path: bench/_common.py)

import engine.prior.edits as edits  # noqa: E402
from engine.render import get_model, render_audio  # noqa: E402
from engine.request import PCMAudio, RenderRequest  # noqa: E402

RATE = 44100
CLIP_S, GAP = 10.0, (4.0, 6.0)


def test_clip(data_dir: Path) -> tuple[np.ndarray, str]:
    """(2, 10 s) float32 and where it came from."""
    corpus = data_dir / "corpus"
    if (corpus / "index.json").exists():
        from engine.training.corpus import load_index, load_split

        tracks = [t for t in load_index(corpus) if t.split == "test" and t.duration_s >= 3 * CLIP_S]
        if tracks:
            t = tracks[0]
            start = t.offset + int(0.3 * t.frames)
            pcm = load_split(corpus, "test")
            clip = np.asarray(pcm[start:start + int(CLIP_S * RATE)], dtype=np.float32).T / 32768.0
            return np.ascontiguousarray(clip), f"held-out track {t.name}, 30% in"
    from engine.training.synth import synth_music

    return synth_music(int(CLIP_S * RATE), np.random.default_rng(0)), "synthetic music (no corpus found)"


def infill_request(audio: np.ndarray, model: str, steps: int | None) -> RenderRequest:
    return RenderRequest(task="infill", audio=(PCMAudio(audio, RATE),), start_s=GAP[0], end_s=GAP[1], span="region",
                         steps=steps, model=model, seed=0)


def cold_child(args) -> None:
    """Run in a fresh process: time imports, model load and the first render; print them as JSON."""
    torch.set_num_threads(args.threads)
    t_imports = time.perf_counter() - T_PROCESS
    t0 = time.perf_counter()
    model = get_model(args.model)
    t_load = time.perf_counter() - t0
    audio, _ = test_clip(args.data)
    t0 = time.perf_counter()
    render_audio(infill_request(audio, args.model, args.steps), model=model)
    t_first = time.perf_counter() - t0
    t0 = time.perf_counter()
    render_audio(infill_request(audio, args.model, args.steps), model=model)
    t_second = time.perf_counter() - t0
    print(json.dumps({"imports_s": t_imports, "model_load_s": t_load, "first_render_s": t_first,
                      "second_render_s": t_second, "total_s": time.perf_counter() - T_PROCESS}))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--model", default="builtin")
    p.add_argument("--steps", type=int, default=None, help="default: the model's")
    p.add_argument("--continue-s", type=float, default=180.0, help="continuation length; 0 skips it")
    p.add_argument("--data", type=Path, default=ROOT / "data")
    p.add_argument("--no-cold", action="store_true", help="skip the cold-start process")
    p.add_argument("--cold-child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.cold_child:
        cold_child(args)
        return
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    cold = None
    if not args.no_cold:
        # First, before this process has loaded anything that could warm a cache for it.
        cmd = [sys.executable, str(Path(__file__).resolve()), "--cold-child", "--threads", str(args.threads),
               "--model", args.model, "--data", str(args.data)] + (["--steps", str(args.steps)] if args.steps else [])
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
        cold = json.loads(out.stdout.strip().splitlines()[-1])

    torch.set_num_threads(args.threads)
    model = get_model(args.model)
    audio, origin = test_clip(args.data)
    steps = args.steps or model.default_steps
    machine = (f"{args.threads} threads on {platform.processor() or platform.machine()} ({os.cpu_count()} cores "
               f"visible, load average {os.getloadavg()[0]:.1f})")
    print(f"{args.model}, {steps} steps, {machine}; clip: {origin}")
    if cold is not None:
        print(f"- cold start (fresh process): imports {cold['imports_s']:.2f} s, model load {cold['model_load_s']:.2f} s, "
              f"first infill {cold['first_render_s']:.2f} s (the second: {cold['second_render_s']:.2f} s), "
              f"total {cold['total_s']:.2f} s")
    req = infill_request(audio, args.model, args.steps)
    render_audio(req, model=model)  # warm-up (allocations, oneDNN kernels)
    times = []
    for _ in range(args.repeats):
        edits.clear_analysis_cache()   # "analysis included": a daemon remembers an analysis by content; this run may not
        t0 = time.perf_counter()
        render_audio(req, model=model)
        times.append(time.perf_counter() - t0)
    best = min(times)
    gap = GAP[1] - GAP[0]
    print(f"- infill {gap:g} s gap in a {CLIP_S:g} s clip, analysis included: best {best:.2f} s of {args.repeats} "
          f"(all: {', '.join(f'{t:.2f}' for t in times)}), real-time factor {best / gap:.2f}")
    if args.continue_s > 0:
        edits.clear_analysis_cache()
        creq = RenderRequest(task="continue", audio=(PCMAudio(audio, RATE),), duration_s=args.continue_s,
                             span="region", steps=args.steps, model=args.model, seed=0)
        t0 = time.perf_counter()
        out = render_audio(creq, model=model)
        took = time.perf_counter() - t0
        print(f"- continuation of the {CLIP_S:g} s clip by {args.continue_s:g} s ({out.duration_s:.1f} s rendered): "
              f"{took:.1f} s, real-time factor {took / args.continue_s:.2f}")


if __name__ == "__main__":
    main()
