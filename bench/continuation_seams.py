"""Continuation seam flux, paired window by window: the retrieval prior against the naive copies.

`bench/quality.py` reports means; this says whether a difference of means is more than
noise. The prior alone (continuation ships unrefined) is built with the engine's own
settings on `bench/quality.py`'s held-out windows and geometry; the copies are its
`similarity_fill` (may copy from later in the track) and the past-only variant.

    python bench/continuation_seams.py [--windows 16]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from _common import ROOT  # noqa: E402  (the checkout on sys.path: bench/_common.py)

import quality as Q  # noqa: E402
from engine.metrics import seam_continuity  # noqa: E402
from engine.prior.edits import continuation_prior, make_sources  # noqa: E402
from engine.tasks import PRIOR_CONTEXT_S  # noqa: E402

RATE = Q.RATE

s = Q.s


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT / "data")
    ap.add_argument("--windows", type=int, default=16)
    args = ap.parse_args(argv)
    cut, total = s(Q.CONT_CTX_S), s(Q.WIN_S)
    flux = {"prior": [], "copy": [], "past-only copy": []}
    for w in Q.held_out_windows(args.data, args.windows):
        track = w.track_audio[:, :w.start + cut]
        stream, _ = continuation_prior(make_sources(["a"], [track], RATE), track.shape[1], total - cut,
                                       context_s=PRIOR_CONTEXT_S, seam=s(Q.SEAM_MS / 1000))
        flux["prior"].append(seam_continuity(stream[:, w.start:w.start + total], w.audio, [cut], RATE)["flux"])
        for name, kw in (("copy", {}), ("past-only copy", {"end_by": w.start + cut})):
            edited = w.audio.copy()
            edited[:, cut:] = Q.similarity_fill(w, cut, total, need_after=False, **kw)
            flux[name].append(seam_continuity(edited, w.audio, [cut], RATE)["flux"])
    ours = np.array(flux["prior"])
    print(f"prior: mean seam flux {ours.mean():.3f} over {len(ours)} windows")
    for name in ("copy", "past-only copy"):
        d = ours - np.array(flux[name])
        print(f"minus {name} ({np.mean(flux[name]):.3f}): {d.mean():+.3f} +- {d.std(ddof=1) / np.sqrt(len(d)):.3f} "
              f"(one standard error); the prior smoother on {(d < 0).sum()} of {len(d)} windows")


if __name__ == "__main__":
    main()
