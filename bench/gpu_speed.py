"""GPU speed of guided infill with the Stable Audio Open DiT (issue 6 targets).

Targets on one H100: 100-step guided infill of a 10 s window <= 1.5 s, of a 47 s window
<= 4.5 s, and a guided step <= 2.5x an unguided one. The network has the released
shapes (1.06 B-parameter DiT, 64-channel Oobleck VAE) with random weights: speed does
not depend on weight values, and nothing is downloaded. Pass --folder to time a real
local checkpoint instead.

    python bench/gpu_speed.py                         # CUDA, real size, bf16, CUDA graphs
    python bench/gpu_speed.py --eager                 # no compilation (the fallback path)
    python bench/gpu_speed.py --device cpu --size tiny --steps 4 --windows 1 2   # smoke run

What is timed per window (seconds, best of --repeat runs after one warm-up render of the same shape):
unguided sampling, guided sampling (latent-space L1 reconstruction guidance + data
consistency, the fast path), the full guided infill (encode + guided sampling + decode),
and the per-step ratio guided / unguided. Results go to stdout as JSON and, with
--markdown, to a section of BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from _common import ROOT  # noqa: E402  (the checkout on sys.path: bench/_common.py)

from engine.guidance import Guidance, LossTerm, masked_l1  # noqa: E402
from engine.models.base import Model  # noqa: E402
from engine.models.speed import optimise  # noqa: E402
from engine.samplers import DataConsistency, sample_ddim  # noqa: E402
from engine.schedule import get_sigmas_cosine  # noqa: E402

SECTION = "## GPU speed (Stable Audio Open DiT, guided infill)"


def build_model(size: str, folder: str | None) -> Model:
    if folder:
        from engine.models.stable_audio import load_stable_audio

        return load_stable_audio(folder)
    from tests.support.random_init import FULL, TINY, build_stable_audio_components
    from engine.models.stable_audio import model_from_components

    comps = build_stable_audio_components(FULL if size == "full" else TINY, seed=0, text_encoder=False)
    sched = dict(comps.pop("scheduler").config)
    return model_from_components(comps, sched, name=f"stable-audio-random-{size}")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device) -> tuple[float, object]:
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t0, out


def bench_window(model: Model, seconds: float, steps: int, device: torch.device, scale: float,
                 repeat: int = 3, space: str = "latent") -> dict:
    hop, rate = model.hop, model.sample_rate
    samples = int(seconds * rate)
    frames = model.latent_frames(samples)
    max_frames = int(model.info.get("max_frames", frames))
    if frames > max_frames:
        raise SystemExit(f"a {seconds} s window needs {frames} frames; this model takes at most {max_frames}")
    g = torch.Generator(device="cpu").manual_seed(0)
    audio = (0.1 * torch.randn(1, 2, samples, generator=g)).to(device)
    gap = slice(frames // 3, 2 * frames // 3)
    sigmas = get_sigmas_cosine(steps)
    cond = model.denoiser.default_cond(frames) if hasattr(model.denoiser, "default_cond") else None

    def render(guided: bool, full: bool):
        with torch.no_grad():
            y = model.encode(audio) if full else torch.zeros(1, model.denoiser.channels, frames, device=device)
        mask = torch.ones(1, 1, y.shape[-1], device=device)
        mask[..., gap] = 0
        x = y * mask + float(sigmas[0]) * torch.randn(y.shape, generator=torch.Generator().manual_seed(1)).to(device)
        if space == "audio":  # exact: the loss on decoded audio, its gradient back through the VAE decoder
            smask = torch.ones(1, 1, samples, device=device)
            smask[..., gap.start * hop:gap.stop * hop] = 0
            term = LossTerm("recon", masked_l1(audio, smask, lambda z: model.decode(z, samples)))
        else:
            term = LossTerm("recon", masked_l1(y, mask))
        guide = Guidance([term], scale=scale, step_mode="normalized") if guided else None
        cons = DataConsistency(known=y, mask=mask) if guided else None
        out = sample_ddim(model.denoiser, x, sigmas, guide=guide, consistency=cons, cond=cond,
                          generator=torch.Generator().manual_seed(2))
        if full:
            with torch.no_grad():
                out = model.decode(out, samples)
        return out

    result = {"window_s": seconds, "frames": frames, "steps": steps, "space": space}
    for key, guided, full in (("unguided_s", False, False), ("guided_s", True, False), ("guided_infill_s", True, True)):
        render(guided, full)  # warm-up: compilation, CUDA graph capture, allocator
        runs = [timed(lambda: render(guided, full), device) for _ in range(repeat)]
        result[key], out = min(runs, key=lambda r: r[0])  # best of `repeat`: least disturbed by other load
        if not torch.isfinite(out).all():
            raise SystemExit(f"non-finite output in {key}")
    result["guided_step_ratio"] = result["guided_s"] / result["unguided_s"]
    return result


def markdown(report: dict) -> str:
    lines = [SECTION, "", f"Command: `{report['command']}`", "",
             f"Device: {report['device_name']}; network dtype {report['setup']['dtype']}; attention "
             f"{', '.join(report['setup']['attention']) or 'n/a'}; CUDA graphs / compile: "
             f"{'on' if report['setup']['compiled'] else 'off'}"
             + (f" (fell back to eager: {report['setup']['fallback_reason']})" if report['setup']['fallback_reason']
                else ""), "",
             "| window | frames | steps | loss space | unguided (s) | guided sampling (s) | guided infill incl. VAE (s) | "
             "guided/unguided |", "|---|---|---|---|---|---|---|---|"]
    for r in report["windows"]:
        lines.append(f"| {r['window_s']} s | {r['frames']} | {r['steps']} | {r['space']} | {r['unguided_s']:.3f} | "
                     f"{r['guided_s']:.3f} | {r['guided_infill_s']:.3f} | {r['guided_step_ratio']:.2f} |")
    lines.append("")
    lines.append("Targets (H100): 10 s <= 1.5 s, 47 s <= 4.5 s, guided/unguided <= 2.5.")
    if report.get("note"):
        lines += ["", report["note"]]
    return "\n".join(lines) + "\n"


def write_section(path: Path, text: str) -> None:
    """Replace this benchmark's section of BENCHMARKS.md (or append it), leaving other sections alone."""
    old = path.read_text() if path.exists() else "# Benchmarks\n"
    start = old.find(SECTION)
    if start < 0:
        new = old.rstrip("\n") + "\n\n" + text
    else:
        nxt = old.find("\n## ", start + len(SECTION))
        new = old[:start] + text + ("\n" + old[nxt + 1:] if nxt >= 0 else "")
    path.write_text(new)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--size", choices=("full", "tiny"), default="full")
    p.add_argument("--folder", help="a local Stable Audio Open folder instead of random weights")
    p.add_argument("--dtype", choices=("bf16", "fp16", "fp32"), default=None,
                   help="network dtype (default bf16 on CUDA, fp32 on CPU)")
    p.add_argument("--eager", action="store_true", help="no torch.compile / CUDA graphs")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--windows", type=float, nargs="+", default=[10.0, 47.0])
    p.add_argument("--scale", type=float, default=1.0, help="guidance step (normalized mode)")
    p.add_argument("--space", choices=("latent", "audio"), default="latent",
                   help="reconstruction loss on latents (fast) or on decoded audio (exact, through the VAE)")
    p.add_argument("--repeat", type=int, default=3, help="timed runs per measurement; the best is reported")
    p.add_argument("--threads", type=int, default=1, help="CPU threads (the smoke run shares a small machine)")
    p.add_argument("--markdown", type=Path, help="write the result table into this BENCHMARKS.md")
    p.add_argument("--note", default="", help="a sentence written under the table (e.g. what was not measured)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype_name = args.dtype or ("bf16" if device.type == "cuda" else "fp32")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype_name]
    model = build_model(args.size, args.folder)
    setup = optimise(model, device=device, dtype=dtype, cuda_graphs=not args.eager,
                     probe_frames=model.latent_frames(int(args.windows[0] * model.sample_rate)))
    windows = [bench_window(model, w, args.steps, device, args.scale, args.repeat, args.space) for w in args.windows]
    shown = [a for a in (argv if argv is not None else sys.argv[1:])]
    if "--note" in shown:  # the note is printed under the table, not inside the command
        i = shown.index("--note")
        del shown[i:i + 2]
    report = {"command": "python bench/gpu_speed.py " + " ".join(shown),
              "device_name": torch.cuda.get_device_name(device) if device.type == "cuda"
              else f"CPU ({platform.processor() or platform.machine()}, {args.threads} thread(s))",
              "torch": torch.__version__, "model": model.name, "setup": setup.__dict__, "windows": windows,
              "note": args.note}
    print(json.dumps(report, indent=2))
    if args.markdown:
        write_section(args.markdown, markdown(report))
    return report


if __name__ == "__main__":
    main()
