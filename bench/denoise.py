"""One-step denoising error of the built-in model on held-out music, against estimators that know nothing of music.

For each held-out track a 4 s excerpt (starting a third of the way in) is encoded,
noised at sigma, and denoised once. Baselines in latent space: identity (the noisy
input), zero, the scalar Wiener shrinkage with the clip's true latent power (an
oracle), and the per-bin Wiener shrinkage with each bin's true power in the clip
(a stronger oracle). Numbers are mean squared errors in the latent space (unit
variance on the training corpus).

Run: python bench/denoise.py [--weights DIR]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from _common import ROOT  # noqa: E402  (the checkout on sys.path: bench/_common.py)

from engine.models.builtin import load_builtin  # noqa: E402
from engine.training.corpus import load_index, load_split  # noqa: E402

SIGMAS = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 10.0)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", type=Path, default=None)
    p.add_argument("--data", type=Path, default=ROOT / "data")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    model = load_builtin(args.weights)
    corpus = args.data / "corpus"
    pcm = load_split(corpus, "test")
    clips = []
    for t in load_index(corpus):
        if t.split == "test":
            start = t.offset + t.frames // 3
            clips.append(np.asarray(pcm[start:start + 4 * 44100], dtype=np.float32).T / 32768.0)
    with torch.no_grad():
        z = torch.cat([model.encode(torch.from_numpy(c)[None]) for c in clips])
    b, ch, n = z.shape
    bins = ch // 4
    power = (z ** 2).mean(dim=(1, 2), keepdim=True)
    bin_power = (z ** 2).reshape(b, 4, bins, n).mean(dim=(1, 3), keepdim=True)
    print(f"{len(clips)} held-out clips of 4 s; weights step {model.info['training'].get('step')}\n")
    print("| sigma | model | identity | zero | scalar Wiener (oracle) | per-bin Wiener (oracle) | model / best baseline |")
    print("|---|---|---|---|---|---|---|")
    for sigma in SIGMAS:
        noise = torch.randn(z.shape, generator=torch.Generator().manual_seed(0))
        x = z + sigma * noise
        with torch.no_grad():
            den = model.denoiser(x, torch.full((b,), sigma))
        xb = x.reshape(b, 4, bins, n)

        def mse(a: torch.Tensor) -> float:
            return float(((a.reshape(z.shape) - z) ** 2).mean())

        errs = {"model": mse(den), "identity": mse(x), "zero": mse(torch.zeros_like(z)),
                "wiener": mse(x * power / (power + sigma ** 2)),
                "bin_wiener": mse(xb * bin_power / (bin_power + sigma ** 2))}
        best = min(v for k, v in errs.items() if k != "model")
        print(f"| {sigma} | {errs['model']:.4f} | {errs['identity']:.4f} | {errs['zero']:.4f} | {errs['wiener']:.4f} | "
              f"{errs['bin_wiener']:.4f} | {errs['model'] / best:.3f} |")


if __name__ == "__main__":
    main()
