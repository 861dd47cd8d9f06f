"""Beat alignment of the prior's transitions on every pair of tracks where it can be measured.

`bench/quality.py` joins each window to one other (16 pairs), and on real music the
beat metric cannot measure half of them: where a track has no steady beat, its own
untouched continuation already reads tens of milliseconds off. Too few pairs remain to
choose anything by. Here every window is joined to `--per-track` windows of other groups, at
bench/quality.py's geometry, and a pair counts only where the metric can read both
tracks: A's untouched track runs on across the crossfade within 10 ms of its own grid,
and so does B's around its join. Which pairs count depends on the music alone, not on
the method measured. A stricter subset is reported as well: pairs whose tracks the metric
also reads as one grid 1 and 2 s either side of the join (a track without a beat it can
follow passes the single 10 ms check now and then by chance).

    python bench/transition_beats.py [--split train|test] [--windows 24] [--json out.json]
    python bench/transition_beats.py --split test --windows 16 --plot win_theme.ogg,hr3-graveyard.ogg
    python bench/transition_beats.py --split test --windows 16 --plot-tempo Compost.ogg,Halloween.ogg

Each pair's offset is read two ways: against the grid of A's 4 s before the crossfade run
on at the metric's period (`offset_ms`, the issue's measure), and against A's own track
running on untouched over the same span (`vs_own_ms`). The metric's period, from 20 s
of A, is itself a few tenths of a percent off on some tracks; that error moves A's own
hits as much as B's, so the second reading is B against where A's hits really fall.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from _common import ROOT  # noqa: E402  (the checkout on sys.path: bench/_common.py)

import quality as Q  # noqa: E402
from engine.prior.edits import make_sources, transition_prior  # noqa: E402
from engine.tasks import transition_mix  # noqa: E402

RATE = Q.RATE
s = Q.s
MEASURABLE_MS = 10.0


def own_floor_ms(track: np.ndarray, join: int) -> float:
    """A track's own beats after a crossfade span at `join` against those before it (inf where it has too little room)."""
    g0 = join - s(Q.XF_S) // 2
    g1 = g0 + s(Q.XF_S)
    if g0 - s(Q.BEAT_SIDE_S) < 0 or g1 + s(Q.BEAT_SIDE_S) > track.shape[1]:
        return float("inf")
    return Q.beat_offset_across_ms(track, g0, g1, Q.beat_period_before_s(track, g0))


def reads_one_grid(track: np.ndarray, join: int, moves_s: tuple[float, ...] = (-2.0, -1.0, 1.0, 2.0)) -> bool:
    """Whether the metric reads the same grid in a track at joins 1 and 2 s either side of `join`.

    Its own continuation within a quarter beat at all four: a track with no beat the metric
    can follow reads at random there (a chance of about 1 in 16), even where the one
    reading at `join` came out within 10 ms.
    """
    g0 = join - s(Q.XF_S) // 2
    quarter_ms = 250.0 * Q.beat_period_before_s(track, g0)
    return all(abs(own_floor_ms(track, join + s(m))) < quarter_ms for m in moves_s)


def read_offsets(wa: Q.Window, a_in: np.ndarray, mix: np.ndarray, g0: int, g1: int) -> tuple[float, float, float | None]:
    """(the metric's period s, B's offset ms against its grid, B's offset ms against A's own hits there).

    A's own hits are A's track running on untouched over the same span, read the same way:
    the metric's period error moves both alike, so their difference (wrapped to +-half a
    beat) is B against A's real continuation. None where A's track ends too soon.
    """
    period = Q.beat_period_before_s(a_in, g0)
    offset = Q.beat_offset_across_ms(mix, g0, g1, period)
    if g1 + s(Q.BEAT_SIDE_S) > wa.frames:
        return period, offset, None
    beat = 1000.0 * period
    own = Q.beat_offset_across_ms(wa.track_audio, g0, g1, period)
    return period, offset, (offset - own + 0.5 * beat) % beat - 0.5 * beat


def pair_offset_ms(wa: Q.Window, wb: Q.Window) -> dict:
    """The prior's transition from A into B: B's beats after the crossfade against A's grid before it."""
    a_in, b_in, join_a, join_b, xf = Q.transition_inputs(wa, wb)
    src = make_sources(["a"], [a_in], RATE)[0]
    b2, _, ja, jb, info = transition_prior(src, b_in, "b", join_a, join_b, xf)
    mix, g0, g1 = transition_mix(a_in, b2, ja, jb, xf)
    period, offset, vs_own = read_offsets(wa, a_in, mix, g0, g1)
    return {"a": wa.track, "b": wb.track, "offset_ms": offset, "vs_own_ms": vs_own,
            "period_ms": 1000.0 * period, "beat_tracked": info.beat_tracked,
            "stretch_factor": info.extra.get("stretch_factor", 1.0), "phase_shift_ms": info.extra.get("phase_shift_ms", 0.0),
            "tempo_a_bpm": info.tempo_bpm, "tempo_a_clip_bpm": info.extra.get("tempo_a_clip_bpm"),
            "tempo_a_other_reading_bpm": info.extra.get("tempo_a_other_reading_bpm")}


def plot_pair(wa: Q.Window, wb: Q.Window, path: Path) -> None:
    """The pair's transition with and without following A's stronger pulse: log-mel, and A's grid drawn on.

    The grid is the beat metric's: its period from the 20 s of A before the crossfade, its
    phase from the peak of A's onset pattern over the 4 s before it, run on across B.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from engine.metrics import beat_pattern, log_mel

    a_in, b_in, join_a, join_b, xf = Q.transition_inputs(wa, wb)
    src = make_sources(["a"], [a_in], RATE)[0]
    fig, axes = plt.subplots(2, 1, figsize=(10, 5.2), squeeze=False)
    for ax, follow in zip(axes[:, 0], (False, True)):
        b2, _, ja, jb, info = transition_prior(src, b_in, "b", join_a, join_b, xf, follow_stronger_pulse=follow)
        mix, g0, g1 = transition_mix(a_in, b2, ja, jb, xf)
        period = Q.beat_period_before_s(a_in, g0)
        lo, hi = g0 - s(Q.BEAT_SIDE_S), min(mix.shape[1], g1 + s(Q.BEAT_SIDE_S))
        pattern = beat_pattern(mix, lo, g0, period, RATE)
        t0 = (int(np.argmax(pattern)) + 0.5) / len(pattern) * period     # a beat's phase on the timeline
        mel = log_mel(mix[:, lo:hi], RATE, n_fft=2048, n_mels=96)
        top = float(mel.max())
        ax.imshow(mel, origin="lower", aspect="auto", cmap="magma", vmin=top - 12.0, vmax=top,
                  extent=(0, (hi - lo) / RATE, 0, mel.shape[0]))
        k0 = int(np.ceil((lo / RATE - t0) / period))
        for k in range(k0, k0 + int((hi - lo) / RATE / period) + 2):
            x = t0 + k * period - lo / RATE
            if 0 <= x <= (hi - lo) / RATE:
                ax.axvline(x, color="white", lw=0.6, alpha=0.6)
        for g in (g0, g1):
            ax.axvline((g - lo) / RATE, color="cyan", lw=1.0, ls="--")
        offset = Q.beat_offset_across_ms(mix, g0, g1, period)
        name = "follows A's stronger pulse (the default)" if follow else "the tracker's reading (as with --bpm)"
        ax.set_title(f"{wa.track} -> {wb.track}, {name}: A at {info.tempo_bpm:.1f} BPM, B stretched "
                     f"x{info.extra.get('stretch_factor', 1.0):.3f}, B's beats {offset:+.1f} ms off A's grid", fontsize=8)
        ax.set_yticks([])
        ax.tick_params(labelsize=7)
    axes[-1, 0].set_xlabel("s (dashed: the crossfade; white: A's beat grid, run on across B)", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_tempo(wa: Q.Window, wb: Q.Window, path: Path, show_s: float = 2.0) -> None:
    """B's hits against A's own, with B stretched to A's whole-clip tempo and to its tempo before the join.

    Fine onset envelopes (2.9 ms frames) of the last `show_s` of the BEAT_SIDE_S after the
    crossfade, where drift is largest: grey, A's track running on untouched; colour, the
    transition. A few milliseconds show as a visible gap between the peaks.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from engine.prior.analysis import LOCAL_TEMPO_SPAN_S, fine_onset

    a_in, b_in, join_a, join_b, xf = Q.transition_inputs(wa, wb)
    src = make_sources(["a"], [a_in], RATE)[0]
    fig, axes = plt.subplots(2, 1, figsize=(10, 4.6), squeeze=False)
    spans = ((0.0, "A's whole-clip tempo"),
             (LOCAL_TEMPO_SPAN_S, f"A's tempo over the {LOCAL_TEMPO_SPAN_S:.0f} s before the join (the default)"))
    for ax, (span, name) in zip(axes[:, 0], spans):
        b2, _, ja, jb, info = transition_prior(src, b_in, "b", join_a, join_b, xf, tempo_span_s=span)
        mix, g0, g1 = transition_mix(a_in, b2, ja, jb, xf)
        hi = g1 + s(Q.BEAT_SIDE_S)
        lo = hi - s(show_s)
        for audio, style in ((wa.track_audio, dict(color="0.55", lw=1.6, label="A's own track, untouched")),
                             (mix, dict(color="tab:red", lw=1.0, label="the transition (B)"))):
            env, centres = fine_onset(audio.mean(axis=0), RATE, lo, hi)
            ax.plot((centres - g1) / RATE, env / max(float(env.max()), 1e-9), **style)
        _, offset, vs_own = read_offsets(wa, a_in, mix, g0, g1)
        ax.set_title(f"{wa.track} -> {wb.track}, {name}: {info.tempo_bpm:.2f} BPM; B's beats {vs_own:+.1f} ms off "
                     f"A's own ({offset:+.1f} ms off the metric's grid)", fontsize=8)
        ax.set_yticks([])
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7, loc="upper right")
    axes[-1, 0].set_xlabel("s after the crossfade", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def summarise(rows: list[dict]) -> dict:
    off = np.abs([r["offset_ms"] for r in rows])
    quarter = np.array([abs(r["offset_ms"]) > r["period_ms"] / 4 for r in rows])
    own = np.abs([r["vs_own_ms"] for r in rows if r.get("vs_own_ms") is not None])
    return {"pairs": len(rows), "within_10ms": float(np.mean(off <= 10.0)), "median_abs_ms": float(np.median(off)),
            "mean_abs_ms": float(np.mean(off)), "off_by_a_quarter_beat_or_more": float(np.mean(quarter)),
            "vs_own_pairs": len(own), "vs_own_within_10ms": float(np.mean(own <= 10.0)) if len(own) else None,
            "vs_own_median_abs_ms": float(np.median(own)) if len(own) else None}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT / "data")
    ap.add_argument("--split", choices=("test", "train"), default="train")
    ap.add_argument("--windows", type=int, default=24)
    ap.add_argument("--per-track", type=int, default=6, help="each A is joined to this many Bs (spread over the list)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--plot", metavar="A,B", help="only draw this pair of tracks (with and without following "
                    "A's stronger pulse) to --plot-out")
    ap.add_argument("--plot-out", type=Path, default=ROOT / "bench/results/spectrograms/transition_metre.png")
    ap.add_argument("--plot-tempo", metavar="A,B", help="only draw this pair's hits against A's own, with B stretched "
                    "to A's whole-clip tempo and to its local one, to --plot-tempo-out")
    ap.add_argument("--plot-tempo-out", type=Path, default=ROOT / "bench/results/spectrograms/transition_local_tempo.png")
    args = ap.parse_args(argv)
    ws = (Q.training_windows if args.split == "train" else Q.held_out_windows)(args.data, args.windows)
    for pair, draw, out in ((args.plot, plot_pair, args.plot_out), (args.plot_tempo, plot_tempo, args.plot_tempo_out)):
        if pair:
            by_name = {w.track: w for w in ws}
            a_name, b_name = pair.split(",")
            draw(by_name[a_name], by_name[b_name], out)
            print(f"wrote {out}")
            return
    joins = [w.start + s(Q.WIN_S / 2) for w in ws]
    floors = [own_floor_ms(w.track_audio, j) for w, j in zip(ws, joins)]
    ok = [w for w, f in zip(ws, floors) if abs(f) <= MEASURABLE_MS]
    print(f"{len(ok)} of {len(ws)} tracks have a beat the metric reads within {MEASURABLE_MS:.0f} ms of itself: "
          + ", ".join(w.track for w in ok), flush=True)
    steady = {w.track for w, j, f in zip(ws, joins, floors) if abs(f) <= MEASURABLE_MS and reads_one_grid(w.track_audio, j)}
    print(f"{len(steady)} of them read one grid 1 and 2 s either side too; not: "
          + ", ".join(w.track for w in ok if w.track not in steady), flush=True)
    rows = []
    for i, wa in enumerate(ok):
        others = [wb for wb in ok[i + 1:] + ok[:i] if wb.group != wa.group]
        step = max(1, len(others) // max(1, args.per_track))
        for wb in others[::step][:args.per_track]:
            rows.append({**pair_offset_ms(wa, wb), "one_grid": wa.track in steady and wb.track in steady})
            print(f"{wa.track} -> {wb.track}: {rows[-1]['offset_ms']:+.1f} ms", flush=True)
    if not rows:
        print("no measurable pair")
        return
    tracked = [r for r in rows if r["beat_tracked"]]
    one_grid = [r for r in rows if r["one_grid"]]
    summaries = {"summary": summarise(rows), "tracked": summarise(tracked) if tracked else None,
                 "one_grid": summarise(one_grid) if one_grid else None}
    for name, v in (("all measurable pairs", summaries["summary"]), ("both beat-tracked by the prior", summaries["tracked"]),
                    ("both read as one grid by the metric", summaries["one_grid"])):
        if v:
            print(f"{name}: {v['pairs']} pairs, within 10 ms {v['within_10ms']:.0%}, median |offset| "
                  f"{v['median_abs_ms']:.1f} ms, mean {v['mean_abs_ms']:.1f} ms, a quarter beat or more off "
                  f"{v['off_by_a_quarter_beat_or_more']:.0%}" + (
                      f"; against A's own hits there: within 10 ms {v['vs_own_within_10ms']:.0%} of "
                      f"{v['vs_own_pairs']}, median {v['vs_own_median_abs_ms']:.1f} ms" if v["vs_own_pairs"] else ""))
    if args.json:
        args.json.write_text(json.dumps({**summaries, "pairs": rows}, indent=1))

if __name__ == "__main__":
    main()
