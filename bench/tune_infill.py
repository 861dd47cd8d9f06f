"""Choose the infill's level match and seam refinement on the corpus's TRAINING split (never the held-out one).

`engine/prior/edits.py` scales the copied span so its surroundings, read over
`LEVEL_CONTEXT_S` each side, are as loud as the region's, within +-`MAX_LEVEL_GAIN_DB`
(continuation jumps share both settings). This scores
the prior alone (no model) on one window per training group, with `bench/quality.py`'s
infill geometry (the middle 2 s of a 6 s window, its interior silenced, the whole track
as input): seam level jump and flux at both edges, log-mel L1 and |level error| of the
gap, beside the naive similarity copy (the benchmark's floor). A second table runs the whole render path (prior + the built-in model regenerating
the zones around the seams, `refine_strength` k) on the same windows, k = 0 being the prior
alone. `bench/quality.py` then reports the chosen settings on the held-out music.

    python bench/tune_infill.py [--windows 24] [--strengths 0,0.1,0.2,0.3]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from _common import ROOT  # noqa: E402  (the checkout on sys.path: bench/_common.py)

import quality as Q  # noqa: E402
import engine.prior.edits as edits  # noqa: E402
from engine.metrics import level_error_db, multires_log_mel_l1, seam_continuity, waveform_correlation  # noqa: E402
from engine.regions import splice  # noqa: E402
from engine.request import PCMAudio  # noqa: E402

RATE = Q.RATE
s = Q.s


def cases(windows: list[Q.Window], silence_gap: bool = True) -> list[tuple[Q.Window, np.ndarray, list]]:
    """Each window's track (infill: the gap's interior silenced, its outer seams kept), analysed once."""
    a, b, seam = s(Q.GAP[0]), s(Q.GAP[1]), s(Q.SEAM_MS / 1000)
    out = []
    for w in windows:
        track = w.track_audio
        if silence_gap:
            track[:, w.start + a + seam:w.start + b - seam] = 0.0
        out.append((w, track, edits.make_sources(["a"], [track], RATE)))
    return out


def prior_alone(w: Q.Window, track: np.ndarray, sources: list) -> np.ndarray | None:
    """The prior's timeline for the window's gap, with the module's current settings."""
    a, b, seam = s(Q.GAP[0]), s(Q.GAP[1]), s(Q.SEAM_MS / 1000)
    timeline, _ = edits.infill_prior(sources, w.start + a, w.start + b, context_s=2.0, seam=seam)
    return timeline


def similarity_copy(w: Q.Window, track: np.ndarray, sources: list) -> np.ndarray:
    """bench/quality.py's floor, the naive similarity copy, spliced into the track as `score` expects."""
    a, b, seam = s(Q.GAP[0]), s(Q.GAP[1]), s(Q.SEAM_MS / 1000)
    gen = w.audio.copy()
    gen[:, a:b] = Q.similarity_fill(w, a, b, need_after=True)
    full = track.copy()
    full[:, w.start:w.start + w.audio.shape[1]] = w.audio
    full[:, w.start + a:w.start + b] = splice(w.audio, gen, a, b, seam)
    return full


# bench/quality.py's engine settings at their defaults (its --steps, --seed, --xi, ... unset)
ENGINE_ARGS = argparse.Namespace(steps=None, seed=0, xi=None, model="builtin", step_mode=None, sampler="ddim")


def rendered(strength: float, task: str = "infill"):
    """The shipped render path at refine_strength `strength` (seams), through bench/quality.py's own call."""
    method = Q.EngineMethod(f"k={strength:g} seams", "similarity", strength, "seams")

    def run(w: Q.Window, track: np.ndarray, sources: list) -> np.ndarray:
        a, b = s(Q.GAP[0]), s(Q.GAP[1])
        audio, _ = Q._render(method, ENGINE_ARGS, task=task, audio=(PCMAudio(track, RATE),),
                             start_s=(w.start + a) / RATE, end_s=(w.start + b) / RATE, context_s=2.0)
        return audio
    return run


def score(cs: list[tuple[Q.Window, np.ndarray, list]], method=prior_alone) -> dict[str, np.ndarray]:
    """Per window: seam jump / flux (both edges), the gap's log-mel L1, |level error| and waveform correlation."""
    a, b = s(Q.GAP[0]), s(Q.GAP[1])
    rows = {"jump": [], "flux": [], "l1": [], "level": [], "corr": []}
    for w, track, sources in cs:
        timeline = method(w, track, sources)
        if timeline is None:
            continue
        out = timeline[:, w.start:w.start + w.audio.shape[1]]
        sc = seam_continuity(out, w.audio, [a, b], RATE)
        rows["jump"].append(sc["level_jump_db"])
        rows["flux"].append(sc["flux"])
        rows["l1"].append(multires_log_mel_l1(out[:, a:b], w.audio[:, a:b], RATE))
        rows["level"].append(abs(level_error_db(out[:, a:b], w.audio[:, a:b])))
        rows["corr"].append(waveform_correlation(out[:, a:b], w.audio[:, a:b]))
    return {k: np.asarray(v) for k, v in rows.items()}


def _row(first: str, r: dict[str, np.ndarray]) -> str:
    return (f"| {first} | {r['jump'].mean():.3f} | {r['flux'].mean():.3f} | {r['l1'].mean():.3f} "
            f"| {r['level'].mean():.2f} | {r['corr'].mean():.3f} |")


def _paired(r: dict[str, np.ndarray], base: dict[str, np.ndarray]) -> str:
    parts = []
    for k in ("l1", "jump", "level", "corr"):
        d = r[k] - base[k]
        parts.append(f"{k} {d.mean():+.4f} +- {d.std(ddof=1) / np.sqrt(len(d)):.4f} (lower on {(d < 0).sum()} of {len(d)})")
    return "; ".join(parts)


HEADER = "| {} | seam jump dB | seam flux | log-mel L1 | abs level err dB | waveform corr |\n|---|---|---|---|---|---|"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT / "data")
    ap.add_argument("--windows", type=int, default=24)
    ap.add_argument("--strengths", default="0,0.1,0.2,0.3", help="refine_strength values for the refinement tables")
    args = ap.parse_args(argv)
    windows = Q.training_windows(args.data, args.windows)
    cs = cases(windows)
    print(f"{len(cs)} training windows")
    bound0, ctx0 = edits.MAX_LEVEL_GAIN_DB, edits.LEVEL_CONTEXT_S
    print(HEADER.format("gain bound dB, context s"))
    for bound, ctx in ((3.0, 0.5), (4.5, 0.5), (6.0, 0.25), (6.0, 0.5), (6.0, 1.0), (9.0, 0.5)):
        edits.MAX_LEVEL_GAIN_DB, edits.LEVEL_CONTEXT_S = bound, ctx
        print(_row(f"{bound}, {ctx}", score(cs)), flush=True)
    edits.MAX_LEVEL_GAIN_DB, edits.LEVEL_CONTEXT_S = bound0, ctx0
    shipped, copy = score(cs), score(cs, similarity_copy)
    print(_row("the similarity copy (the floor)", copy))
    print(f"- the prior as shipped minus the copy, paired: {_paired(shipped, copy)}")
    strengths = [float(v) for v in args.strengths.split(",") if v.strip()]
    for task, task_cases in (("infill", cs), ("regenerate", cases(windows, silence_gap=False))):
        print("\n" + HEADER.format(f"{task}: refine strength (seams)"))
        results = {k: score(task_cases, rendered(k, task)) for k in strengths}
        for k, r in results.items():
            print(_row(f"{k:g}", r), flush=True)
        if 0.0 in results:
            for k, r in results.items():
                if k != 0.0:
                    print(f"- {task}, {k:g} minus 0, paired: {_paired(r, results[0.0])}")


if __name__ == "__main__":
    main()
