"""Where the style distance lies, and how near real music ever comes to each preset's reference.

issue 13 asks a preset to halve the embedding distance to its reference while keeping the
music. This says what that target asks for, per preset:
- the weighted DSP-embedding distance to the reference split by group (`mel_mean`,
  `mel_std`, `contrast`, `texture`; chroma is weighted 0), as shares of the squared
  distance, for held-out clips before and after the shipped render;
- the floor set by real music: the distance to the reference of every clip of the
  corpus's *training* split (one 10 s excerpt per group, untouched). If the nearest real
  piece is farther than half the held-out clips' starting distance, halving means moving
  the music to where no piece of the corpus sits.

    python bench/style_distance_parts.py [--clips 16] [--floor-clips 200] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from _common import ROOT  # noqa: E402  (the checkout on sys.path: bench/_common.py)

import style as S  # noqa: E402
from engine.embedders import load_embedder  # noqa: E402
from engine.presets import embed, load_preset  # noqa: E402


def parts(embedder, w: np.ndarray, e: np.ndarray, ref: np.ndarray) -> tuple[float, dict[str, float]]:
    """(weighted distance, each group's weighted squared distance) of embedding `e` to `ref`."""
    d = w * (e - ref)
    return float(np.linalg.norm(d)), {g: float(np.sum(d[sl] ** 2)) for g, sl in embedder.slices.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT / "data" / "corpus")
    ap.add_argument("--clips", type=int, default=16)
    ap.add_argument("--clip-s", type=float, default=10.0)
    ap.add_argument("--floor-clips", type=int, default=200, help="training-split excerpts for the real-music floor")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    embedder = load_embedder("dsp")
    held = S.held_out(args.data, args.clips, args.clip_s)
    floor = S.split_clips(args.data, args.floor_clips, args.clip_s, "train")
    floor_emb = [embed(embedder, x) for _, x in floor]
    held_emb = [embed(embedder, x) for _, x in held]
    groups = [g for g in embedder.slices]
    report = {"held_out_clips": len(held), "floor_clips": len(floor), "presets": {}}
    print(f"{len(held)} held-out clips, {len(floor)} training clips for the floor\n")
    print("| preset | before: distance (shares " + " / ".join(groups) + ") | after the shipped render | half of before "
          "| nearest real clip (10th percentile) | real clips under half |")
    print("|---|---|---|---|---|---|")
    for name in S.STYLES:
        preset = load_preset(name)
        ref = np.asarray(preset.reference.vector)
        w = S.weights_vector(embedder, name)
        before = [parts(embedder, w, e, ref) for e in held_emb]
        after = [parts(embedder, w, embed(embedder, S.style_once(name, x)[0]), ref) for _, x in held]
        real = np.array([parts(embedder, w, e, ref)[0] for e in floor_emb])

        def summary(rows):
            total = sum(sum(p.values()) for _, p in rows)
            return float(np.mean([d for d, _ in rows])), {g: sum(p[g] for _, p in rows) / total for g in groups}

        d0, s0 = summary(before)
        d1, s1 = summary(after)
        half = d0 / 2
        row = {"before": d0, "before_shares": s0, "after": d1, "after_shares": s1, "half": half,
               "real_min": float(real.min()), "real_p10": float(np.percentile(real, 10)),
               "real_under_half": int((real < half).sum()),
               "nearest_real": floor[int(real.argmin())][0]}
        report["presets"][name] = row
        fmt = lambda s: " / ".join(f"{100 * s[g]:.0f}" for g in groups)  # noqa: E731
        print(f"| {name} | {d0:.2f} ({fmt(s0)} %) | {d1:.2f} ({fmt(s1)} %) | {half:.2f} | "
              f"{row['real_min']:.2f} ({row['real_p10']:.2f}; {row['nearest_real']}) | "
              f"{row['real_under_half']} of {len(floor)} |", flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
