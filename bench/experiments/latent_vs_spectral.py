"""Latent or spectral? What the first stage of a latent model costs at this project's CPU budget.

A latent diffusion model (the method's latent model: an autoencoder, then diffusion on
its latents) can generate no better than its decoder reconstructs: every sample it
renders passes through that decoder. The spectral model's "autoencoder" is an exact,
invertible STFT (reconstruction error ~1e-7) and costs no training. So the question
"which gives better quality per CPU second" can be bounded without training a second
diffusion model: train the latent route's autoencoder for a CPU budget, then score its
reconstructions of held-out music with the same metrics and windows as
bench/quality.py (the middle 2 s of one 6 s window per held-out track). If the
autoencoder's reconstructions already score worse than the spectral model's
*generated* regions, the latent route loses at that budget whatever its diffusion
stage does; if they score better, this bound decides nothing and the second stage has
to be trained and compared.

The autoencoder is a small convolutional one over the same compressed-STFT frames
(the representation every learned audio codec front end starts from, and the cheapest
to train on a CPU): 2052 channels + per-bin log power at 86 frames/s ->
`--latent-channels` channels at 43 frames/s (16x fewer numbers than the waveform with
128 channels) -> back. Loss: MSE in the normalised spectral space plus an L1 on log
power per bin (MSE alone would leave the phase-random high bins near zero).

Run: python bench/experiments/latent_vs_spectral.py --minutes 25 [--threads 1] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # bench/, for bench/_common.py
from _common import ROOT  # noqa: E402  (the checkout on sys.path)

from engine.embedders.dsp import DSPEmbedder  # noqa: E402
from engine.metrics import frechet_distance, multires_log_mel_l1  # noqa: E402
from engine.models.builtin import load_builtin  # noqa: E402
from engine.models.builtin_net import bin_log_power  # noqa: E402
from engine.training.train import CONFIGS, CropSource  # noqa: E402

from quality import GAP, held_out_windows  # noqa: E402

RATE = 44100


class SpectralAutoencoder(nn.Module):
    """Compressed-STFT frames (B, 4 bins, T) -> latents (B, C, T / 2) -> frames."""

    def __init__(self, bins: int = 513, latent: int = 128, width: int = 512) -> None:
        super().__init__()
        self.bins = bins
        self.enc = nn.Sequential(
            nn.Conv1d(6 * bins, width, 1), nn.SiLU(),
            nn.Conv1d(width, width, 3, padding=1), nn.SiLU(),
            nn.Conv1d(width, width, 4, stride=2, padding=1), nn.SiLU(),
            nn.Conv1d(width, latent, 3, padding=1))
        self.dec = nn.Sequential(
            nn.Conv1d(latent, width, 3, padding=1), nn.SiLU(),
            nn.ConvTranspose1d(width, width, 4, stride=2, padding=1), nn.SiLU(),
            nn.Conv1d(width, width, 3, padding=1), nn.SiLU(),
            nn.Conv1d(width, 4 * bins, 1))

    def encode(self, z: torch.Tensor) -> torch.Tensor:
        logp = bin_log_power(z, self.bins).flatten(1, 2)
        return self.enc(torch.cat([z, 0.5 * logp], dim=1))

    def decode(self, h: torch.Tensor) -> torch.Tensor:
        return self.dec(h)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Encode and decode; an odd frame count is padded by one frame and cropped back."""
        frames = z.shape[-1]
        return self.decode(self.encode(F.pad(z, (0, frames % 2))))[..., :frames]


def ae_loss(out: torch.Tensor, z: torch.Tensor, bins: int, logpow_weight: float = 0.1) -> torch.Tensor:
    b, _, n = z.shape

    def logp(x: torch.Tensor) -> torch.Tensor:
        return torch.log(x.reshape(b, 2, 2, bins, n).pow(2).sum(dim=2) + 1e-4)

    return F.mse_loss(out, z) + logpow_weight * (logp(out) - logp(z)).abs().mean()


def held_out_regions(data_dir: Path, n: int) -> list[np.ndarray]:
    """bench/quality.py's windows: the middle 2 s of a 6 s window 30 % into each held-out track."""
    return [w.audio[:, int(GAP[0] * RATE):int(GAP[1] * RATE)] for w in held_out_windows(data_dir, n)]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=ROOT / "data")
    p.add_argument("--minutes", type=float, default=25.0, help="CPU wall-clock budget for the autoencoder")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--latent-channels", type=int, default=128)
    p.add_argument("--windows", type=int, default=16)
    p.add_argument("--logpow-weight", type=float, default=0.1, help="weight of the log-power L1 in the loss")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    if args.minutes <= 0 or args.windows < 2:
        p.error("--minutes must be > 0 and --windows >= 2 (a Frechet distance needs two items)")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    spectral = load_builtin()
    transform = spectral.autoencoder  # the exact STFT with the corpus's bin scale
    cfg = CONFIGS["cpu"]
    source = CropSource(cfg, "train", args.data)
    regions = held_out_regions(args.data, args.windows)
    ae = SpectralAutoencoder(latent=args.latent_channels)
    opt = torch.optim.AdamW(ae.parameters(), lr=1e-3, weight_decay=0.0)
    params = sum(q.numel() for q in ae.parameters())
    print(f"autoencoder: {params / 1e6:.1f} M parameters, {args.latent_channels} latent channels at "
          f"{RATE / 1024:.1f} frames/s, budget {args.minutes} min on {args.threads} thread(s)", file=sys.stderr)
    t0, step, log = time.time(), 0, []
    deadline = t0 + 60 * args.minutes
    while time.time() < deadline:
        rng = np.random.default_rng([1, step])
        with torch.no_grad():
            z = transform.encode(source.batch(rng, 8, augment=True))
        for g in opt.param_groups:
            g["lr"] = 1e-3 * min(1.0, (step + 1) / 100) * (0.1 + 0.9 * max(0.0, 1 - (time.time() - t0) / (60 * args.minutes)))
        loss = ae_loss(ae(z), z, transform.bins, args.logpow_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(ae.parameters(), 1.0)
        opt.step()
        step += 1
        if step % 50 == 0:
            log.append((step, round(time.time() - t0, 1), float(loss)))
            print(f"step {step} loss {float(loss):.4f} {time.time() - t0:.0f}s", file=sys.stderr, flush=True)
    train_s = time.time() - t0

    ae.eval()
    with torch.no_grad():
        recon = []
        for r in regions:
            x = torch.from_numpy(np.ascontiguousarray(r))[None]
            z = transform.encode(x)
            recon.append(transform.decode(ae(z), length=x.shape[-1])[0].numpy())
        embed = DSPEmbedder()
        real = embed(torch.from_numpy(np.stack(regions))).double().numpy()
        fake = embed(torch.from_numpy(np.stack(recon).astype(np.float32))).double().numpy()
    l1 = float(np.mean([multires_log_mel_l1(a, b, RATE) for a, b in zip(recon, regions)]))
    fd = frechet_distance(fake, real)
    level = float(np.mean([10 * math.log10((a ** 2).mean() + 1e-12) - 10 * math.log10((b ** 2).mean() + 1e-12)
                           for a, b in zip(recon, regions)]))
    report = {"machine": f"{platform.processor() or platform.machine()}, {args.threads} torch thread(s)",
              "autoencoder_parameters": params, "latent_channels": args.latent_channels,
              "logpow_weight": args.logpow_weight, "train_steps": step,
              "train_seconds": round(train_s), "final_loss": log[-1][2] if log else None,
              "reconstruction": {"log_mel_l1": l1, "fd_dsp": fd, "level_error_db": level},
              "windows": len(regions), "log": log}
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1))
    print(f"autoencoder after {step} steps ({train_s / 60:.1f} min): reconstruction of {len(regions)} held-out "
          f"2 s regions: multi-resolution log-mel L1 {l1:.3f}, FD-DSP {fd:.2f}, level error {level:+.1f} dB")


if __name__ == "__main__":
    main()
