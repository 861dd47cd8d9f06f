"""Choose the texture match's settings on the corpus's TRAINING split (never the held-out clips).

Each `--settings` entry overrides `engine.style_texture.TextureSettings` fields (e.g.
`bound_db=12,chroma_weight=16`; an empty entry is the defaults). For every entry and preset,
style renders with the texture match (60 iterations, strength 1) of one 10 s clip per
training group are scored by `bench/style.py`'s `measure`. Each line gives: the embedding
distance moved, chroma correlation with the input (mean, worst clip), onset correlation, the
share above 8 kHz, the centroid ratio, the render's `drift_db` (worst clip), and the EQ's
ripple (mean absolute second difference across bands, dB). `bench/style.py` then reports the
chosen defaults on held-out music.

    python bench/tune_texture.py [--clips 6] [--presets bright-synth,percussive,dark-ambient]
                                 [--settings "smooth_freq=0.03;smooth_freq=0.3;smooth_freq=1.0"]
"""
from __future__ import annotations

import argparse
import functools

import numpy as np
import torch

from _common import ROOT  # noqa: E402  (the checkout on sys.path: bench/_common.py)

import style as S  # noqa: E402
import engine.style_task as style_task  # noqa: E402
from engine.embedders import load_embedder  # noqa: E402
from engine.style_texture import TextureSettings  # noqa: E402


def parse_settings(entry: str) -> dict[str, float]:
    """`a=1,b=2.5` -> {"a": 1.0, "b": 2.5}; unknown fields are refused by TextureSettings itself."""
    pairs = [kv.split("=", 1) for kv in entry.split(",") if kv.strip()]
    return {k.strip(): float(v) for k, v in pairs}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT / "data" / "corpus"))
    ap.add_argument("--clips", type=int, default=6)
    ap.add_argument("--presets", default="bright-synth,percussive,dark-ambient")
    ap.add_argument("--settings", default="smooth_freq=0.03;smooth_freq=0.3;smooth_freq=1.0")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    embedder = load_embedder("dsp")
    clips = S.split_clips(S.Path(args.data), args.clips, 10.0, "train")
    print(f"{len(clips)} training clips of 10 s: {', '.join(c for c, _ in clips)}", flush=True)
    default = style_task.TextureSettings
    try:
        for entry in args.settings.split(";"):
            overrides = parse_settings(entry)
            TextureSettings(**overrides)                     # refuse a misspelt field before rendering
            style_task.TextureSettings = functools.partial(TextureSettings, **overrides)
            for name in args.presets.split(","):
                r = S.measure(name, clips, embedder, strength=1.0, texture_iterations=60)
                tex = [row["texture_match"] for row in r["rows"]]
                ripple = np.mean([np.mean(np.abs(np.diff(t["eq_db"], 2))) for t in tex])
                print(f"{entry or 'defaults':32s} {name:13s} moved {100 * r['share_moved_mean']:5.1f} % "
                      f"chroma {r['chroma_corr_mean']:.3f} ({r['chroma_corr_min']:.3f}) "
                      f"onset {r['onset_corr_mean']:.3f} >8 kHz {r['hf_db_before']:.1f} -> {r['hf_db_after']:.1f} dB "
                      f"centroid x{r['centroid_ratio_mean']:.2f} drift {max(t['drift_db'] for t in tex):.1f} dB "
                      f"ripple {ripple:.2f} dB", flush=True)
    finally:
        style_task.TextureSettings = default


if __name__ == "__main__":
    main()
