"""Why a transition's beats or seams score as they do, pair by pair (the windows of `bench/quality.py`).

For each held-out pair the retrieval prior's transition is built directly (no model:
transitions are not refined by default) and reported beside what the beat metric
itself can see:

- A's tempo as the prior tracks it and as the metric's period estimate has it, B's
  tempo before and after the stretch, the stretch factor and the phase shift applied;
- the beat offset of B after the crossfade against A's grid, and the metric's floor
  (A's own track running on across the same span): where the floor is off, the metric
  cannot measure that pair;
- seam flux at the crossfade's edges, for the prior's joins and for the plain crossfade
  at the requested joins, each next to the flux the material itself has at those
  positions (A's track at the first edge, B's at the second): the part of the seam
  flux the edit adds is the difference.

    python bench/transition_diagnostics.py [--windows 16] [--split test|train] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from _common import ROOT  # noqa: E402  (the checkout on sys.path: bench/_common.py)

import quality as Q  # noqa: E402
from engine.metrics import level_dip_db, seam_stats  # noqa: E402
from engine.prior.edits import make_sources, transition_prior  # noqa: E402
from engine.regions import equal_power_curves  # noqa: E402
from engine.tasks import transition_mix  # noqa: E402

RATE = Q.RATE

s = Q.s


def pair_report(wa: Q.Window, wb: Q.Window) -> dict:
    a_in, b_in, join_a, join_b, xf = Q.transition_inputs(wa, wb)
    src = make_sources(["a"], [a_in], RATE)[0]
    b2, an_b, ja, jb, info = transition_prior(src, b_in, "b", join_a, join_b, xf)
    mix, g0, g1 = transition_mix(a_in, b2, ja, jb, xf)
    plain, p0, p1 = transition_mix(a_in, b_in, join_a, join_b, xf, curves=equal_power_curves)
    period = Q.beat_period_before_s(a_in, g0)
    tail = xf - xf // 2

    def flux(x: np.ndarray, at: int) -> float:
        return seam_stats(x, at, RATE).flux

    return {
        "a": wa.track, "b": wb.track,
        "tempo_a_bpm": src.analysis.tempo_bpm, "metric_tempo_a_bpm": 60.0 / period,
        "tempo_b_bpm": info.extra["tempo_b_bpm"], "stretch_factor": info.extra["stretch_factor"],
        "tempo_b_stretched_bpm": an_b.tempo_bpm, "phase_shift_ms": info.extra.get("phase_shift_ms", 0.0),
        "beat_offset_ms": Q.beat_offset_across_ms(mix, g0, g1, period),
        "floor_offset_ms": Q.beat_offset_across_ms(wa.track_audio, g0, g1, period),
        "level_dip_db": level_dip_db(mix, g0, g1, s(Q.LEVEL_SIDE_S)),
        "plain_level_dip_db": level_dip_db(plain, p0, p1, s(Q.LEVEL_SIDE_S)),
        "seam_flux": float(np.mean([flux(mix, g0), flux(mix, g1)])),
        "seam_flux_material": float(np.mean([flux(wa.track_audio, g0), flux(b2, jb + tail)])),
        "plain_seam_flux": float(np.mean([flux(plain, p0), flux(plain, p1)])),
        "plain_seam_flux_material": float(np.mean([flux(wa.track_audio, p0), flux(b_in, join_b + tail)])),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT / "data")
    ap.add_argument("--windows", type=int, default=16)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--split", choices=("test", "train"), default="test",
                    help="test: bench/quality.py's held-out windows; train: one window per training group")
    args = ap.parse_args(argv)
    windows = Q.training_windows if args.split == "train" else Q.held_out_windows
    ws = windows(args.data, args.windows)
    pairs = Q.transition_pairs(ws)
    rows = []
    print("| A -> B | A BPM (metric's) | B BPM -> stretched (factor) | shift ms | beat offset ms | floor ms |")
    print("|---|---|---|---|---|---|")
    for wa, wb in pairs:
        r = pair_report(wa, wb)
        rows.append(r)
        bpm = lambda v: f"{v:.1f}" if v else "none"  # noqa: E731
        print(f"| {r['a']} -> {r['b']} | {bpm(r['tempo_a_bpm'])} ({r['metric_tempo_a_bpm']:.1f}) | "
              f"{bpm(r['tempo_b_bpm'])} -> {bpm(r['tempo_b_stretched_bpm'])} (x{r['stretch_factor']:.3f}) | "
              f"{r['phase_shift_ms']:+.1f} | {r['beat_offset_ms']:+.1f} | {r['floor_offset_ms']:+.1f} |", flush=True)
    off = np.array([abs(r["beat_offset_ms"]) for r in rows])
    floor_ok = np.array([abs(r["floor_offset_ms"]) <= 10.0 for r in rows])
    both = np.array([bool(r["tempo_a_bpm"] and r["tempo_b_bpm"]) for r in rows])
    summary = {
        "pairs": len(rows),
        "beat_offset_abs_ms": float(off.mean()), "within_10ms": float((off <= 10).mean()),
        "floor_within_10ms": float(floor_ok.mean()),
        "within_10ms_where_floor_within_10ms": float((off[floor_ok] <= 10).mean()) if floor_ok.any() else None,
        "within_10ms_where_both_tracked_and_floor_ok": (float((off[floor_ok & both] <= 10).mean())
                                                         if (floor_ok & both).any() else None),
        "pairs_both_tracked_and_floor_ok": int((floor_ok & both).sum()),
        "worst_level_dip_db": float(max(r["level_dip_db"] for r in rows)),
        "mean_level_dip_db": float(np.mean([r["level_dip_db"] for r in rows])),
        "plain_worst_level_dip_db": float(max(r["plain_level_dip_db"] for r in rows)),
        **{k: float(np.mean([r[k] for r in rows])) for k in
           ("seam_flux", "seam_flux_material", "plain_seam_flux", "plain_seam_flux_material")},
    }
    print()
    for k, v in summary.items():
        print(f"{k}: {v if not isinstance(v, float) else round(v, 3)}")
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "pairs": rows}, indent=1))


if __name__ == "__main__":
    main()
