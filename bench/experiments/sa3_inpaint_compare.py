"""Guided infill with Stable Audio 3 against its *trained* inpainting model, on the same windows.

"guided": the base SA3 model through `engine.render.render_audio` (the engine's guided
infill: reconstruction guidance on the context + data consistency), exactly as the CLI
runs it. "native": the SA3 inpainting checkpoint with its mask and masked latents in
`local_add_cond`, no guidance, same steps, its own log-SNR schedule. Both fill the middle
2 s of 6 s windows (the method's geometry) and are spliced with the same seams; scores are
bench/quality.py's (multi-resolution log-mel L1 to the original, Fréchet distance in the
DSP embedder's space, seam continuity), and the report says by how much guidance loses
(or wins) on each.

    python bench/experiments/sa3_inpaint_compare.py --base /models/sa3-small --inpaint /models/sa3-small-inpaint
    python bench/experiments/sa3_inpaint_compare.py --tiny --synthetic 3 --steps 4     # smoke run, random weights

Windows come from the held-out corpus (`--data`, as bench/quality.py) or, with
`--synthetic N`, from N seeded synthetic clips (chords + noise drums) when no corpus exists.
"""
from __future__ import annotations

import argparse
import json
import math
import tempfile
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # bench/, for bench/_common.py
from _common import ROOT  # noqa: E402  (the checkout on sys.path)

from engine.embedders.dsp import DSPEmbedder  # noqa: E402
from engine.models.base import Model, load_model  # noqa: E402
from engine.models.stable_audio3 import native_infill  # noqa: E402
from engine.regions import splice  # noqa: E402
from engine.render import render_audio  # noqa: E402
from engine.request import PCMAudio, RenderRequest  # noqa: E402

import quality  # noqa: E402  (bench/quality.py: windows and scores shared with the built-in model's benchmark)

RATE = 44100
WIN_S, GAP = 6.0, (2.0, 4.0)
SEAM_MS = 50.0


def synthetic_windows(n: int) -> list["quality.Window"]:
    """Seeded 6 s clips: a chord progression of saw tones over noise-burst drums."""
    out = []
    t = np.arange(int(WIN_S * RATE)) / RATE
    for i in range(n):
        rng = np.random.default_rng(100 + i)
        x = np.zeros_like(t)
        for bar in range(3):
            root = 110 * 2 ** (rng.integers(0, 12) / 12)
            seg = (t >= 2 * bar) & (t < 2 * bar + 2)
            for ratio in (1, 5 / 4, 3 / 2):
                x[seg] += 0.08 * (2 * ((root * ratio * t[seg]) % 1) - 1)
        for beat in np.arange(0, WIN_S, 0.5):
            k = int(beat * RATE)
            burst = rng.standard_normal(2000) * np.exp(-np.arange(2000) / 300)
            x[k:k + 2000] += 0.2 * burst[: len(x[k:k + 2000])]
        audio = np.stack([x, x]).astype(np.float32)
        out.append(quality.Window(track=f"synthetic-{i}", group=f"synthetic-{i}", audio=audio, track_audio=audio,
                                  start=0))
    return out


def native_inpaint(model: Model, window: np.ndarray, steps: int, seed: int) -> np.ndarray:
    """The trained inpainting path (engine.models.stable_audio3.native_infill), spliced like the engine's."""
    a, b = quality.s(GAP[0]), quality.s(GAP[1])
    wav = native_infill(model, window, (a, b), steps=steps, seed=seed)
    edited = window.copy()
    edited[:, a:b] = splice(window, wav, a, b, quality.s(SEAM_MS / 1000))
    return edited


def guided_infill(model: Model, name: str, window: np.ndarray, steps: int, seed: int, xi) -> np.ndarray:
    req = RenderRequest(task="infill", audio=(PCMAudio(window, RATE),), start_s=GAP[0], end_s=GAP[1], span="full",
                        steps=steps, seed=seed, guidance_scale=xi, model=name, context_s=2.0, seam_ms=SEAM_MS)
    return render_audio(req, model=model).audio


def compare(results: dict) -> list[str]:
    """One line per metric: how much worse (+) or better (-) guided is than native, lower being better."""
    lines = []
    g, nat = results["guided"], results["native"]
    for k in g:
        if k.startswith("_") or not isinstance(g[k], float) or "orig" in k:
            continue
        diff = g[k] - nat[k]
        rel = diff / abs(nat[k]) if nat[k] else math.inf
        verdict = "guidance loses" if diff > 0 else "guidance wins"
        lines.append(f"- {k}: guided {g[k]:.4g} vs native {nat[k]:.4g} ({verdict} by {abs(diff):.3g}, "
                     f"{abs(rel) * 100:.0f}%)")
    return lines


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", help="SA3 base model folder (diffusers layout)")
    p.add_argument("--inpaint", help="SA3 inpainting model folder (diffusers layout)")
    p.add_argument("--tiny", action="store_true", help="random tiny folders instead (smoke run; scores mean nothing)")
    p.add_argument("--data", type=Path, default=ROOT / "data")
    p.add_argument("--windows", type=int, default=16)
    p.add_argument("--synthetic", type=int, default=0, help="use N synthetic windows instead of the corpus")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--xi", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.tiny:
        from tests.support.random_init import save_stable_audio3_folder

        tmp = Path(tempfile.mkdtemp(prefix="sa3-tiny-"))
        save_stable_audio3_folder(str(tmp / "base"), seed=0)
        save_stable_audio3_folder(str(tmp / "inpaint"), seed=0, inpaint=True)
        args.base, args.inpaint = str(tmp / "base"), str(tmp / "inpaint")
    if not (args.base and args.inpaint):
        raise SystemExit("give --base and --inpaint folders (or --tiny for a smoke run)")
    base_name = f"stable-audio-3:{args.base}"
    base, inpaint = load_model(base_name), load_model(f"stable-audio-3:{args.inpaint}")
    if not inpaint.info.get("native_inpaint"):
        raise SystemExit(f"{args.inpaint} is not an SA3 inpainting checkpoint (model_index.json)")
    windows = synthetic_windows(args.synthetic) if args.synthetic else quality.held_out_windows(args.data, args.windows)
    edits = []
    for w in windows:
        edits.append({"guided": guided_infill(base, base_name, w.audio, args.steps, args.seed, args.xi),
                      "native": native_inpaint(inpaint, w.audio, args.steps, args.seed)})
    originals = [w.audio for w in windows]
    span = (quality.s(GAP[0]), quality.s(GAP[1]))
    results = quality.score(edits, originals, span, [o[:, span[0]:span[1]] for o in originals], DSPEmbedder())
    report = {"base": args.base, "inpaint": args.inpaint, "tiny_random": args.tiny, "windows": len(windows),
              "synthetic": bool(args.synthetic), "steps": args.steps, "results": results}
    print(json.dumps(report, indent=1))
    print("\n".join(compare(results)))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
