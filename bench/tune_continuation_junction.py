"""Choose the continuation's junction settings on the corpus's TRAINING split (never the held-out one).

`engine/prior/edits.py` lets a continuation jump prefer, among candidates whose context
score is within `JUNCTION_TIE` of the best, the one that meets the stream's last
`JUNCTION_S` seconds most smoothly (what precedes the landing point, and at weight
`JUNCTION_AFTER` what follows it). This sweep scores the prior alone (no model) on one
window per training group, with `bench/quality.py`'s continuation geometry (2.4 s of the
track before the cut, 3.6 s continued), by log-mel L1 of the continuation and seam flux at
the cut. `bench/quality.py` then reports the chosen setting on the held-out music.

    python bench/tune_continuation_junction.py [--windows 24]
"""
from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np

from _common import ROOT  # noqa: E402  (the checkout on sys.path: bench/_common.py)

import quality as Q  # noqa: E402
import engine.prior.edits as edits  # noqa: E402
from engine.metrics import multires_log_mel_l1, seam_continuity  # noqa: E402

RATE = Q.RATE

s = Q.s


def score(cases: list[tuple[Q.Window, np.ndarray, list]]) -> tuple[float, float]:
    """(mean log-mel L1 of the continuation, mean seam flux at the cut) with the module's current settings."""
    l1, flux = [], []
    cut, total = s(Q.CONT_CTX_S), s(Q.WIN_S)
    for w, track, sources in cases:
        stream, _ = edits.continuation_prior(sources, track.shape[1], total - cut, context_s=2.0,
                                             seam=s(Q.SEAM_MS / 1000))
        out = stream[:, w.start:w.start + total]
        flux.append(seam_continuity(out, w.audio, [cut], RATE)["flux"])
        l1.append(multires_log_mel_l1(out[:, cut:], w.audio[:, cut:], RATE))
    return float(np.mean(l1)), float(np.mean(flux))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT / "data")
    ap.add_argument("--windows", type=int, default=24)
    args = ap.parse_args(argv)
    ws = Q.training_windows(args.data, args.windows)
    cut = s(Q.CONT_CTX_S)
    cases = []
    for w in ws:
        track = w.track_audio[:, :w.start + cut]
        cases.append((w, track, edits.make_sources(["a"], [track], RATE)))
    print(f"{len(cases)} training windows")
    print("| tie | junction s | log-mel L1 | seam flux |\n|---|---|---|---|")
    for tie, js in itertools.product((0.0, 0.1, 0.15, 0.3, 0.5), (0.025, 0.05, 0.1)):
        if tie == 0.0 and js != 0.05:
            continue           # without a tie the junction length does not matter
        edits.JUNCTION_TIE, edits.JUNCTION_S, edits.JUNCTION_AFTER = tie, js, 0.0
        l1, flux = score(cases)
        print(f"| {tie} | {js} | {l1:.3f} | {flux:.3f} |", flush=True)
    # Second table: at the chosen tie and length, how much "what follows p sounds like the
    # stream's end" counts beside "what precedes p does".
    edits.JUNCTION_TIE, edits.JUNCTION_S = 0.3, 0.05
    print("\n| weight of what follows p | log-mel L1 | seam flux |\n|---|---|---|")
    for after in (0.0, 0.25, 0.5, 0.75, 1.0):
        edits.JUNCTION_AFTER = after
        l1, flux = score(cases)
        print(f"| {after} | {l1:.3f} | {flux:.3f} |", flush=True)


if __name__ == "__main__":
    main()
