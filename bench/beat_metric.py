"""How far the transition benchmark's beat-offset measure can be trusted on real music.

On every held-out track, at the place bench/quality.py would join (3 s into the window
30 % into the track), with its geometry (period from the 20 s before, 4 s each side of a
2.5 s crossfade span): the offset the measure reports on the untouched track (its floor,
ideally 0), and the change it reports when the material after the span is moved 100 ms
earlier (ideally exactly -100 ms, modulo the beat period).

Run: python bench/beat_metric.py [--data data]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from _common import ROOT  # noqa: E402  (the checkout on sys.path: bench/_common.py)

from quality import (WIN_S, XF_S, beat_offset_across_ms, beat_period_before_s,  # noqa: E402
                     held_out_windows, s)

SHIFT_S = 0.1


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=ROOT / "data")
    p.add_argument("--windows", type=int, default=16)
    args = p.parse_args(argv)
    floors, errors = [], []
    print("| track | period s | untouched offset ms | 100 ms earlier: change ms |")
    print("|---|---|---|---|")
    for w in held_out_windows(args.data, args.windows):
        track = w.track_audio
        g0 = w.start + s(WIN_S / 2) - s(XF_S) // 2
        g1 = g0 + s(XF_S)
        period = beat_period_before_s(track, g0)
        floor = beat_offset_across_ms(track, g0, g1, period)
        moved = np.concatenate([track[:, :g1], track[:, g1 + s(SHIFT_S):]], axis=1)
        change = beat_offset_across_ms(moved, g0, g1, period) - floor
        change = (change / 1000 + period / 2) % period * 1000 - period * 500  # wrapped to +-period/2
        floors.append(floor)
        errors.append(change + 1000 * SHIFT_S)
        print(f"| {w.track} | {period:.3f} | {floor:+.1f} | {change:+.1f} |")
    floors, errors = np.abs(floors), np.abs(errors)
    print(f"\nuntouched: {np.mean(floors <= 10):.0%} within 10 ms (median |offset| {np.median(floors):.1f} ms); "
          f"a 100 ms move measured within 2 ms of it on {np.mean(errors <= 2):.0%}, within 10 ms on "
          f"{np.mean(errors <= 10):.0%} of {len(floors)} tracks")


if __name__ == "__main__":
    main()
