"""The Jensen bound of the built-in denoiser: per-band energy of x0_hat against the clean signal's.

A posterior mean never carries more energy than the signal, so on held-out music the
ratio E|x0_hat|^2 / E|x0|^2 of every band must stay <= 1 (the bar is 1.1) at every
sigma. Reported for the network alone (`--raw`) and for the shipped refiner (the network with
the Jensen cap of engine/models/energy_cap.py, what refinement of the retrieval prior
runs), in the latent space where the bound holds exactly.

Run: python bench/energy_bound.py [--windows 8] [--sigmas 0.1,0.5,1,2,10] [--raw] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.models.builtin import load_builtin  # noqa: E402
from engine.models.energy_cap import band_edges, band_energy  # noqa: E402
from engine.training.corpus import load_index, load_split  # noqa: E402

RATE = 44100


def held_out_clips(n: int, seconds: float = 6.0) -> list[np.ndarray]:
    corpus = ROOT / "data" / "corpus"
    tracks = [t for t in load_index(corpus) if t.split == "test" and t.duration_s >= 3 * seconds]
    pcm = load_split(corpus, "test")
    out = []
    for t in tracks[:n]:
        at = t.offset + int(0.4 * t.frames)
        out.append(np.asarray(pcm[at:at + int(seconds * RATE)], dtype=np.float32).T / 32768.0)
    return out


def energy_ratios(model, clips: list[np.ndarray], sigmas: list[float], *, raw: bool, seed: int = 0) -> dict:
    """{sigma: per-band ratio list}: for each band the worst clip's energy of x0_hat over its energy of x0.

    Per clip, because a band a clip barely uses (a 22 kHz MP3 above 11 kHz, an OGG's
    cut-off) is where passed-through noise shows, and a sum over clips would hide it.
    Bands holding under 1e-4 of a clip's energy are skipped for that clip.
    """
    den = model.denoiser
    bins = model.autoencoder.bins
    edges = band_edges(bins)
    g = torch.Generator().manual_seed(seed)
    out = {}
    for sigma in sigmas:
        worst = torch.zeros(len(edges) - 1, dtype=torch.float64)
        for clip in clips:
            with torch.no_grad():
                y = model.encode(torch.from_numpy(clip)[None])
                pad = (-y.shape[-1]) % model.frame_multiple
                y = torch.nn.functional.pad(y, (0, pad))
                x = y + sigma * torch.randn(y.shape, generator=g)
                s = torch.full((1,), sigma)
                x0 = den(x, s) if raw or model.refiner is None else model.refiner(den)(x, s)
            e0, _ = band_energy(x0, bins, edges)
            ey, _ = band_energy(y, bins, edges)
            e0, ey = e0[0].double(), ey[0].double()
            used = ey > 1e-4 * ey.sum()
            ratio = torch.where(used, e0 / ey.clamp_min(1e-12), torch.zeros_like(e0))
            worst = torch.maximum(worst, ratio)
        out[sigma] = worst.tolist()
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--windows", type=int, default=16)
    ap.add_argument("--sigmas", default="0.05,0.1,0.2,0.5,1,2,5,10,50")
    ap.add_argument("--raw", action="store_true", help="the network alone, without the Jensen cap")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    model = load_builtin()
    clips = held_out_clips(args.windows)
    sigmas = [float(s) for s in args.sigmas.split(",")]
    edges = band_edges(model.autoencoder.bins)
    hz = [round((lo + hi) / 2 * RATE / model.autoencoder.n_fft) for lo, hi in zip(edges[:-1], edges[1:])]
    report = {"raw": args.raw, "windows": len(clips), "band_centre_hz": hz}
    for label, raw in (("network alone", True), ("shipped refiner", False)) if args.raw else (("shipped refiner", False),):
        ratios = energy_ratios(model, clips, sigmas, raw=raw)
        report[label] = {str(k): v for k, v in ratios.items()}
        print(f"## {label}: max over bands of E|x0_hat|^2 / E|x0|^2 ({len(clips)} held-out clips)")
        for sigma, r in ratios.items():
            worst = int(np.argmax(r))
            print(f"sigma {sigma:>6}: max {max(r):6.3f} at {hz[worst]} Hz; 9 kHz band {r[min(range(len(hz)), key=lambda i: abs(hz[i] - 9000))]:.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
