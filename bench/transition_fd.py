"""Is the transitions' FD-DSP gap to a plain crossfade more than noise? A paired bootstrap over pairs.

`bench/quality.py` reports one Fréchet distance per method, between the DSP embeddings
(274 dimensions) of 16 transition regions and 16 real spans. With fewer items than
dimensions the fitted covariances are mostly estimation noise, so a difference of two
such numbers needs an error bar. This rebuilds the same pairs and regions (the same
geometry, the plain crossfade and the engine's default transition), then resamples the
pairs with replacement, the same draw for both methods and for the real spans, and
reports the FD of each and their difference with a 90 % interval.

`--ablate` also builds the retrieval prior's transitions directly (no model: transitions
are unrefined by default) with one part of it turned off at a time (the smooth fade, B's
tempo stretch, B's onset phase shift) and prints each one's FD-DSP.

    python bench/transition_fd.py [--windows 16] [--draws 500] [--ablate]
"""
from __future__ import annotations

import argparse
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from _common import ROOT  # noqa: E402  (the checkout on sys.path: bench/_common.py)

import quality as Q  # noqa: E402
import engine.prior.edits as edits  # noqa: E402
from engine.embedders.dsp import DSPEmbedder  # noqa: E402
from engine.metrics import frechet_distance  # noqa: E402
from engine.regions import equal_power_curves  # noqa: E402
from engine.tasks import transition_mix  # noqa: E402


def ablation(pairs, embed, real_emb: np.ndarray) -> None:
    """FD-DSP of the prior's transitions with one part switched off at a time."""
    tempo_match, phase_shift = edits.tempo_match, edits.onset_phase_shift
    variants = [("the prior, as shipped", {}), ("sine-law fade instead of the smooth one", {"curves": equal_power_curves}),
                ("no tempo stretch of B", {"stretch": False}), ("no onset phase shift of B", {"phase": False}),
                ("neither stretch nor phase shift", {"stretch": False, "phase": False})]
    try:
        for name, v in variants:
            edits.tempo_match = tempo_match if v.get("stretch", True) else (lambda a, b, max_ratio=1.5: 1.0)
            edits.onset_phase_shift = phase_shift if v.get("phase", True) else (lambda *a, **kw: 0)
            regions = []
            for wa, wb in pairs:
                a_in, b_in, join_a, join_b, xf = Q.transition_inputs(wa, wb)
                src = edits.make_sources(["a"], [a_in], Q.RATE)[0]
                b2, _, ja, jb, _ = edits.transition_prior(src, b_in, "b", join_a, join_b, xf)
                kw = {"curves": v["curves"]} if "curves" in v else {}
                mix, g0, g1 = transition_mix(a_in, b2, ja, jb, xf, **kw)
                regions.append(mix[:, g0:g1])
            with torch.no_grad():
                e = embed(torch.from_numpy(np.stack(regions).astype(np.float32))).double().numpy()
            print(f"ablation: {name}: FD-DSP {frechet_distance(e, real_emb):.2f}", flush=True)
    finally:
        edits.tempo_match, edits.onset_phase_shift = tempo_match, phase_shift


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT / "data")
    ap.add_argument("--windows", type=int, default=16)
    ap.add_argument("--draws", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ablate", action="store_true", help="also the prior with one part switched off at a time")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    windows = Q.held_out_windows(args.data, args.windows)
    pairs = Q.transition_pairs(windows)
    engine_args = SimpleNamespace(steps=None, seed=0, xi=None, model="builtin", step_mode=None, sampler="ddim",
                                  fail_fast=True)
    segue = Q.EngineMethod("segue", None)                # the request defaults, as a producer gets them
    xf = Q.s(Q.XF_S)
    regions: dict[str, list[np.ndarray]] = {"crossfade": [], "segue": []}
    for wa, wb in pairs:
        edits, _, _ = Q.transition_task(wa, wb, [segue], engine_args)
        for name in regions:
            e = edits[name]
            regions[name].append(e.full[:, e.g0:e.g0 + xf])
    real = [(wa if i % 2 == 0 else wb).real_span(xf) for i, (wa, wb) in enumerate(pairs)]
    embed = DSPEmbedder()
    with torch.no_grad():
        emb = {name: embed(torch.from_numpy(np.stack(r).astype(np.float32))).double().numpy()
               for name, r in {**regions, "real": real}.items()}
    full = {name: frechet_distance(emb[name], emb["real"]) for name in regions}
    rng = np.random.default_rng(args.seed)
    n = len(pairs)
    draws = {name: [] for name in regions}
    for _ in range(args.draws):
        idx = rng.integers(0, n, n)
        if len(set(idx.tolist())) < 3:
            continue
        for name in regions:
            draws[name].append(frechet_distance(emb[name][idx], emb["real"][idx]))
    diff = np.array(draws["segue"]) - np.array(draws["crossfade"])
    lo, hi = np.percentile(diff, [5, 95])
    print(f"{n} pairs, {len(diff)} paired bootstrap draws, DSP embedding of {emb['real'].shape[1]} dimensions")
    for name in regions:
        d = np.array(draws[name])
        print(f"FD-DSP {name}: {full[name]:.2f} (bootstrap median {np.median(d):.2f}, 90 % {np.percentile(d, 5):.2f}"
              f"..{np.percentile(d, 95):.2f})")
    print(f"segue minus crossfade: {full['segue'] - full['crossfade']:+.2f} (90 % interval {lo:+.2f}..{hi:+.2f}; "
          f"segue higher in {100 * np.mean(diff > 0):.0f} % of draws)")
    if args.ablate:
        ablation(pairs, embed, emb["real"])


if __name__ == "__main__":
    main()
