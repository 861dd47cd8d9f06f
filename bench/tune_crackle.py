"""lofi-warm's surface noise (the `Crackle` effect), where it sits and how loud, on the TRAINING split.

Runs lofi-warm's chain with its `Crackle` entry moved (before the bit and rate reduction and
the low-passes, where the preset has it, or last) and at several levels, on 10 s excerpts of
the corpus's training split (one per group), and prints the share of the way to the
preset's reference moved, chroma and onset correlation with the input, and the share of
energy above 8 kHz. `bench/style.py` then reports the shipped preset on held-out music.

    python bench/tune_crackle.py [--clips 12]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from _common import ROOT  # noqa: E402  (the checkout on sys.path: bench/_common.py)

import style as S  # noqa: E402
from engine import effects as E, features as F  # noqa: E402
from engine.embedders import load_embedder  # noqa: E402
from engine.presets import embed, load_preset  # noqa: E402

RATE = 44100


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT / "data" / "corpus")
    ap.add_argument("--clips", type=int, default=12)
    args = ap.parse_args(argv)
    embedder = load_embedder("dsp")
    clips = S.split_clips(args.data, args.clips, 10.0, "train")
    preset = load_preset("lofi-warm")
    ref, w = np.asarray(preset.reference.vector), S.weights_vector(embedder, "lofi-warm")
    chain = [e for e in preset.style.effects if e.effect != "Crackle"]
    early = [e.effect for e in chain].index("Bitcrush")
    before = [float(np.linalg.norm(w * (embed(embedder, x) - ref))) for _, x in clips]
    print(f"{len(clips)} training clips\n")
    print("| crackle | hiss dB, click dB, clicks/s | moved | chroma corr (min) | onset corr | >8 kHz dB |")
    print("|---|---|---|---|---|---|")
    for where, levels in (("none", [None]), ("before the bit reduction", [(-45, -20, 10), (-40, -15, 10), (-33, -10, 20)]),
                          ("last", [(-45, -20, 10), (-40, -15, 10), (-33, -10, 20)])):
        for lv in levels:
            fx = list(chain)
            if lv is not None:
                spec = E.EffectSpec("Crackle", (("hiss_db", float(lv[0])), ("crackle_db", float(lv[1])),
                                                ("clicks_per_second", float(lv[2]))))
                fx.insert(early if where != "last" else len(fx), spec)
            moved, chroma, onset, hf = [], [], [], []
            for (_, x), d0 in zip(clips, before):
                y = E.apply_chain(tuple(fx), x, RATE, 1.0)
                moved.append(1 - float(np.linalg.norm(w * (embed(embedder, y) - ref))) / d0)
                chroma.append(F.chroma_correlation(y, x, RATE))
                onset.append(F.onset_correlation(y, x, RATE))
                hf.append(F.hf_share_db(y, RATE))
            print(f"| {where} | {'-' if lv is None else ', '.join(str(v) for v in lv)} | {100 * np.mean(moved):.1f} % | "
                  f"{np.mean(chroma):.3f} ({np.min(chroma):.3f}) | {np.mean(onset):.3f} | {np.mean(hf):.1f} |", flush=True)


if __name__ == "__main__":
    main()
