"""Why a transition misses A's beat by a quarter beat or more: the engine's own reading of it.

For each pair in a `bench/transition_beats.py --json` result that the metric reads a quarter
beat or more off, with both clips beat-tracked, the prior's transition is rendered again and
the engine's own phase measure (`onset_phase_shift`, folded on two beats at A's tempo) is
applied to the finished transition: A's span before the crossfade against B's after it.

- The engine reads B within a quarter beat: the engine and the metric disagree about the
  beat itself (the metric folds on one beat at its own period, which may be a 2:1 or 3:2
  reading of the engine's, or a few percent off it). No phase shift the engine can choose
  changes its own reading there.
- The engine reads B a quarter beat or more off too: the shift took one of two near-equal
  peaks, and read again where it put B, it takes the other. The phase of B's pattern is
  ambiguous to the measure itself.

    python bench/transition_misses.py --split train --windows 93 --pairs bench/results/transition_beats_train.json
"""
from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from _common import ROOT  # noqa: E402  (the checkout on sys.path: bench/_common.py)

import quality as Q  # noqa: E402
from engine.prior.edits import make_sources, onset_phase_shift, transition_prior  # noqa: E402
from engine.tasks import transition_mix  # noqa: E402

RATE = Q.RATE


def engine_reading_ms(wa: Q.Window, wb: Q.Window) -> tuple[float, float, float, float]:
    """(the metric's offset, the engine's own residual reading, the metric's period, the engine's beat), ms."""
    a_in, b_in, join_a, join_b, xf = Q.transition_inputs(wa, wb)
    src = make_sources(["a"], [a_in], RATE)[0]
    b2, _, ja, jb, info = transition_prior(src, b_in, "b", join_a, join_b, xf)
    mix, g0, g1 = transition_mix(a_in, b2, ja, jb, xf)
    period = Q.beat_period_before_s(a_in, g0)
    an_a = replace(src.analysis, tempo_bpm=info.tempo_bpm)   # the measure reads only A's tempo (the one B followed)
    m = mix.mean(axis=0)
    residual = onset_phase_shift(m, an_a, ja, m, ja, xf)   # the finished transition, read as one track
    return (Q.beat_offset_across_ms(mix, g0, g1, period), 1000.0 * residual / RATE, 1000.0 * period,
            60000.0 / info.tempo_bpm)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT / "data")
    ap.add_argument("--split", choices=("test", "train"), default="train")
    ap.add_argument("--windows", type=int, default=93)
    ap.add_argument("--pairs", type=Path, required=True, help="a bench/transition_beats.py --json result")
    args = ap.parse_args(argv)
    ws = {w.track: w for w in (Q.training_windows if args.split == "train" else Q.held_out_windows)(args.data, args.windows)}
    result = json.loads(args.pairs.read_text())
    misses = [r for r in result["pairs"] if abs(r["offset_ms"]) > r["period_ms"] / 4]
    tracked = [r for r in misses if r["beat_tracked"]]
    print(f"{len(misses)} of {len(result['pairs'])} pairs a quarter beat or more off; {len(tracked)} with both clips "
          "beat-tracked", flush=True)
    agree, ambiguous = [], []
    for r in tracked:
        offset, residual, period, beat = engine_reading_ms(ws[r["a"]], ws[r["b"]])
        off_itself = abs(residual) > beat / 4
        (ambiguous if off_itself else agree).append(r)
        kind = "ambiguous" if off_itself else "the beat read differently"
        print(f"{r['a']} -> {r['b']}: metric {offset:+.1f} ms (its period {period:.0f} ms), engine {residual:+.1f} ms "
              f"(its beat {beat:.0f} ms): {kind}", flush=True)
    print(f"the engine reads B within a quarter beat (the beat read differently): {len(agree)}; "
          f"a quarter beat or more off itself (the phase ambiguous): {len(ambiguous)}")


if __name__ == "__main__":
    main()
