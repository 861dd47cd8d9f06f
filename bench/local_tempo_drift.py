"""How far a clip stretched to each estimate of A's tempo would drift from A's own hits.

For each track whose beat the metric can read (its own continuation across the crossfade
span within 10 ms of its own grid, as in `bench/transition_beats.py`), A's untouched track
is folded at a candidate period over the 4 s before and after bench/quality.py's crossfade.
The offset it reads is how far a B running at that period would land from A's hits there:
0 when the period is A's true one. Candidates: the grid's slope over the whole clip (the
engine's tempo before the seventh session), and `local_tempo_bpm` over the 30 s before the
join with 4 harmonics (the engine's now) and with 1.

    python bench/local_tempo_drift.py [--split train|test] [--windows 93]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from _common import ROOT  # noqa: E402  (the checkout on sys.path: bench/_common.py)

import quality as Q  # noqa: E402
from engine.prior.analysis import analyse, local_tempo_bpm, metre_alternative  # noqa: E402

MEASURABLE_MS = 10.0


def drifts_ms(w: Q.Window) -> dict[str, float] | None:
    """Each candidate period's drift (ms) for one window's A, or None where the metric cannot read A."""
    a_in, _, join_a, _, xf = Q.transition_inputs(w, w)
    g0 = join_a - xf // 2
    g1 = g0 + xf
    track = w.track_audio
    if g0 - Q.s(Q.BEAT_SIDE_S) < 0 or g1 + Q.s(Q.BEAT_SIDE_S) > track.shape[1]:
        return None
    if abs(Q.beat_offset_across_ms(track, g0, g1, Q.beat_period_before_s(a_in, g0))) > MEASURABLE_MS:
        return None
    an = analyse(a_in, Q.RATE)
    if (alt := metre_alternative(an)) is not None:      # the reading a transition follows
        an = analyse(a_in, Q.RATE, bpm_hint=alt)
    if not an.has_beat:
        return None
    bpms = {"grid slope, whole clip": an.tempo_bpm,
            "comb, 30 s, 4 harmonics": local_tempo_bpm(an, join_a),
            "comb, 30 s, 1 harmonic": local_tempo_bpm(an, join_a, harmonics=1)}
    return {name: Q.beat_offset_across_ms(track, g0, g1, 60.0 / (bpm or an.tempo_bpm)) for name, bpm in bpms.items()}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT / "data")
    ap.add_argument("--split", choices=("test", "train"), default="train")
    ap.add_argument("--windows", type=int, default=93)
    args = ap.parse_args(argv)
    ws = (Q.training_windows if args.split == "train" else Q.held_out_windows)(args.data, args.windows)
    rows = {}
    for w in ws:
        if (d := drifts_ms(w)) is not None:
            rows[w.track] = d
            print(w.track + ": " + ", ".join(f"{k} {v:+.1f} ms" for k, v in d.items()), flush=True)
    for name in next(iter(rows.values()), {}):
        v = np.abs([d[name] for d in rows.values()])
        print(f"{name}: {len(v)} tracks, within 10 ms {np.mean(v <= 10.0):.0%}, median {np.median(v):.1f} ms")


if __name__ == "__main__":
    main()
