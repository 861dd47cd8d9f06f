"""Quality benchmark of guided editing with a model on held-out music, against simple baselines.

Windows: one 6 s window per held-out track of the corpus (data/corpus, built by
engine.training.corpus), starting 30% into the track. Tasks (the method's geometry):
infill and regeneration of the middle 2 s, continuation 2.4 s -> 6 s, and a 2.5 s
transition between windows of two different tracks. Every task runs through
`engine.render.render_audio`, exactly as the CLI and the daemon run it.

Metrics (engine.metrics): multi-resolution log-mel L1 of the generated region against
the original; Fréchet distance between generated and real regions in the DSP
embedder's space (FD-DSP); seam continuity (spectral flux and level jump at the
region's boundaries, next to the original audio's values at the same places).

Baselines on the same windows: silence; an equal-power crossfade (infill/regenerate:
the 2 s before the gap fading into the 2 s after it; continuation: the context
repeated; transition: the plain crossfade); a similarity fill copying the span of the
same track whose surroundings best match the gap's (log-mel distance).

Run: python bench/quality.py [--windows 16] [--steps N] [--xi X] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.embedders.dsp import DSPEmbedder  # noqa: E402
from engine.metrics import frechet_distance, log_mel, multires_log_mel_l1, seam_continuity  # noqa: E402
from engine.regions import equal_power_curves, splice  # noqa: E402
from engine.render import get_model, render_audio  # noqa: E402
from engine.request import PCMAudio, RenderRequest  # noqa: E402
from engine.training.corpus import load_index, load_split  # noqa: E402

RATE = 44100
WIN_S, GAP = 6.0, (2.0, 4.0)
CONT_CTX_S = 2.4
XF_S = 2.5
SEAM_MS = 50.0


@dataclass
class Window:
    track: str
    group: str
    audio: np.ndarray        # (2, 6 s)
    track_audio: np.ndarray  # the whole track, for the similarity fill
    start: int               # window start in the track


def held_out_windows(data_dir: Path, n: int) -> list[Window]:
    corpus = data_dir / "corpus"
    tracks = [t for t in load_index(corpus) if t.split == "test" and t.duration_s >= 3 * WIN_S]
    pcm = load_split(corpus, "test")
    out = []
    for t in tracks[:n]:
        audio = np.asarray(pcm[t.offset:t.offset + t.frames], dtype=np.float32).T / 32768.0
        start = int(0.3 * t.frames)
        out.append(Window(t.name, t.group, audio[:, start:start + int(WIN_S * RATE)].copy(), audio, start))
    return out


def s(x: float) -> int:
    return int(round(x * RATE))


# ---------------------------------------------------------------- baselines

def crossfade_fill(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    fo, fi = equal_power_curves(before.shape[1])
    return before * fo + after * fi


def similarity_fill(w: Window, gap_start: int, gap_stop: int, *, need_after: bool, ctx_s: float = 0.5) -> np.ndarray:
    """Copy the span of the same track (outside the window) whose context best matches the gap's."""
    hop = 512
    mel = log_mel(w.track_audio, RATE, n_fft=2048, n_mels=64)  # frame f starts at sample f * hop
    ctx = s(ctx_s) // hop
    gap_frames = (gap_stop - gap_start) // hop
    win_mel = log_mel(w.audio, RATE, n_fft=2048, n_mels=64)
    g0 = gap_start // hop
    pre = win_mel[:, g0 - ctx:g0]
    post = win_mel[:, g0 + gap_frames:g0 + gap_frames + ctx] if need_after else None
    best, best_pos = np.inf, None
    lo_excl, hi_excl = w.start - s(WIN_S), w.start + s(2 * WIN_S)  # never copy the window itself
    for f in range(ctx, mel.shape[1] - gap_frames - ctx):
        pos = f * hop
        if lo_excl <= pos <= hi_excl:
            continue
        d = np.abs(mel[:, f - ctx:f] - pre).mean()
        if post is not None and post.shape[1] == ctx:
            d += np.abs(mel[:, f + gap_frames:f + gap_frames + ctx] - post).mean()
        if d < best:
            best, best_pos = d, pos
    n = gap_stop - gap_start
    return w.track_audio[:, best_pos:best_pos + n]


# ---------------------------------------------------------------- tasks

MODEL = None  # set in main: the model under test


def run_model(req: RenderRequest, model_name: str) -> tuple[np.ndarray, float]:
    r = render_audio(req, model=MODEL if MODEL is not None else get_model(model_name))
    return r.audio, r.elapsed_s


def region_task(w: Window, task: str, args) -> dict[str, np.ndarray]:
    """infill / regenerate: edited 6 s windows (full timeline) per method."""
    a, b = s(GAP[0]), s(GAP[1])
    seam = s(SEAM_MS / 1000)
    n = b - a
    x = w.audio
    req = RenderRequest(task=task, audio=(PCMAudio(x, RATE),), start_s=GAP[0], end_s=GAP[1], span="full",
                        steps=args.steps, seed=args.seed, guidance_scale=args.xi, model=args.model,
                        step_mode=args.step_mode, sampler=args.sampler,
                        context_s=2.0, seam_ms=SEAM_MS)
    full, elapsed = run_model(req, args.model)
    out = {"model": full}
    for name, fill in (("silence", np.zeros((2, n), np.float32)),
                       ("crossfade", crossfade_fill(x[:, a - n:a], x[:, b:b + n])),
                       ("similarity", similarity_fill(w, a, b, need_after=True))):
        gen = x.copy()
        gen[:, a:b] = fill
        edited = x.copy()
        edited[:, a:b] = splice(x, gen, a, b, seam)
        out[name] = edited
    out["_elapsed"] = elapsed
    return out


def continuation_task(w: Window, args) -> dict[str, np.ndarray]:
    cut = s(CONT_CTX_S)
    total = s(WIN_S)
    x = w.audio
    req = RenderRequest(task="continue", audio=(PCMAudio(x[:, :cut], RATE),), duration_s=WIN_S - CONT_CTX_S,
                        span="full", steps=args.steps, seed=args.seed, guidance_scale=args.xi, model=args.model,
                        step_mode=args.step_mode, sampler=args.sampler,
                        context_s=CONT_CTX_S, seam_ms=SEAM_MS)
    full, elapsed = run_model(req, args.model)
    out = {"model": full[:, :total]}
    n = total - cut
    reps = int(np.ceil(n / cut))
    seam = s(SEAM_MS / 1000)
    for name, fill in (("silence", np.zeros((2, n), np.float32)),
                       ("crossfade", np.tile(x[:, :cut], (1, reps))[:, :n]),
                       ("similarity", similarity_fill(w, cut, total, need_after=False))):
        gen = x.copy()
        gen[:, cut:] = fill
        edited = x.copy()
        edited[:, cut:] = splice(x, gen, cut, total, seam)[:, :]
        out[name] = edited
    out["_elapsed"] = elapsed
    return out


def transition_task(wa: Window, wb: Window, args) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """A on the left, B on the right, joined at 3 s with a 2.5 s crossfade; returns (edits, plain mix)."""
    join = s(WIN_S / 2)
    req = RenderRequest(task="transition", audio=(PCMAudio(wa.audio, RATE), PCMAudio(wb.audio, RATE)),
                        start_s=WIN_S / 2, b_start_s=WIN_S / 2, crossfade_s=XF_S, span="full", steps=args.steps,
                        seed=args.seed, guidance_scale=args.xi, model=args.model,
                        step_mode=args.step_mode, sampler=args.sampler, context_s=2.0, seam_ms=SEAM_MS)
    full, elapsed = run_model(req, args.model)
    mix = np.concatenate([wa.audio[:, :join], wb.audio[:, join:]], axis=1)
    g0, g1 = join - s(XF_S) // 2, join + s(XF_S) - s(XF_S) // 2
    xfade = mix.copy()
    fo, fi = equal_power_curves(g1 - g0)
    xfade[:, g0:g1] = wa.audio[:, g0:g1] * fo + wb.audio[:, g0:g1] * fi
    silence = mix.copy()
    silence[:, g0:g1] = splice(mix, np.zeros_like(mix), g0, g1, s(SEAM_MS / 1000))
    return {"model": full, "crossfade": xfade, "silence": silence, "_elapsed": elapsed}, mix


# ---------------------------------------------------------------- scoring

def score(edits: list[dict], originals: list[np.ndarray], span: tuple[int, int], real_regions: list[np.ndarray],
          embed: DSPEmbedder, *, l1: bool = True) -> dict[str, dict[str, float]]:
    a, b = span
    methods = [k for k in edits[0] if not k.startswith("_")]
    with torch.no_grad():
        real = embed(torch.from_numpy(np.stack(real_regions))).double().numpy()
    results = {}
    for m in methods:
        regions = [e[m][:, a:b] for e in edits]
        row = {}
        if l1:
            row["log_mel_l1"] = float(np.mean([multires_log_mel_l1(r, o[:, a:b], RATE) for r, o in zip(regions, originals)]))
        with torch.no_grad():
            emb = embed(torch.from_numpy(np.stack(regions).astype(np.float32))).double().numpy()
        row["fd_dsp"] = frechet_distance(emb, real)
        seams = [seam_continuity(e[m], o, [p for p in (a, b) if p < e[m].shape[1] - s(0.05)], RATE)
                 for e, o in zip(edits, originals)]
        for k in seams[0]:
            row[k] = float(np.mean([x[k] for x in seams]))
        results[m] = row
    return results


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=ROOT / "data")
    p.add_argument("--windows", type=int, default=16)
    p.add_argument("--model", default="builtin")
    p.add_argument("--steps", type=int, default=None, help="default: the model's")
    p.add_argument("--xi", type=float, default=None, help="guidance scale; default: the model's")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--step-mode", default=None, help="guidance step mode (default: the model's)")
    p.add_argument("--sampler", default="ddim")
    p.add_argument("--tasks", default="infill,regenerate,continue,transition")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--weights", type=Path, default=None, help="builtin weights folder (default: the shipped one)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    windows = held_out_windows(args.data, args.windows)
    embed = DSPEmbedder()
    global MODEL
    if args.weights is not None:
        from engine.models.builtin import load_builtin

        MODEL = load_builtin(args.weights)
    model = MODEL if MODEL is not None else get_model(args.model)
    report = {"model": args.model, "windows": len(windows), "steps": args.steps or model.default_steps,
              "xi": args.xi if args.xi is not None else model.guidance_scale,
              "machine": f"{platform.processor() or platform.machine()}, torch threads {args.threads}",
              "tasks": {}}
    t_all = time.time()
    for task in args.tasks.split(","):
        t0 = time.time()
        if task in ("infill", "regenerate"):
            edits = [region_task(w, task, args) for w in windows]
            originals = [w.audio for w in windows]
            span = (s(GAP[0]), s(GAP[1]))
            res = score(edits, originals, span, [o[:, span[0]:span[1]] for o in originals], embed)
        elif task == "continue":
            edits = [continuation_task(w, args) for w in windows]
            originals = [w.audio for w in windows]
            span = (s(CONT_CTX_S), s(WIN_S))
            res = score(edits, originals, span, [o[:, span[0]:span[1]] for o in originals], embed)
        elif task == "transition":
            # Pair each window with one from a different piece, a third of the list away.
            k = max(1, len(windows) // 3)
            pairs = [(wa, windows[(i + k) % len(windows)]) for i, wa in enumerate(windows)]
            pairs = [(wa, wb) for wa, wb in pairs if wa.group != wb.group]
            outs = [transition_task(wa, wb, args) for wa, wb in pairs]
            edits, mixes = [o[0] for o in outs], [o[1] for o in outs]
            join = s(WIN_S / 2)
            span = (join - s(XF_S) // 2, join + s(XF_S) - s(XF_S) // 2)
            # Real reference: the same spans of the two tracks (A's half and B's half, unmixed).
            real = [wa.audio[:, span[0]:span[1]] for wa, _ in pairs] + [wb.audio[:, span[0]:span[1]] for _, wb in pairs]
            res = score(edits, mixes, span, real, embed, l1=False)
        else:
            raise SystemExit(f"unknown task {task!r}")
        res["_seconds_per_render"] = float(np.mean([e["_elapsed"] for e in edits]))
        report["tasks"][task] = res
        print(f"{task}: {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
        print(json.dumps({task: res}, indent=1), file=sys.stderr, flush=True)
    report["wall_s"] = time.time() - t_all
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1))
    print(markdown(report))


def markdown(report: dict) -> str:
    lines = [f"model `{report['model']}`, {report['windows']} held-out windows, {report['steps']} steps, "
             f"xi = {report['xi']}", ""]
    for task, res in report["tasks"].items():
        lines.append(f"**{task}** (model: {res['_seconds_per_render']:.1f} s per render)")
        lines.append("")
        lines.append("| method | log-mel L1 | FD-DSP | seam flux (orig) | seam level jump dB (orig) |")
        lines.append("|---|---|---|---|---|")
        for m, r in res.items():
            if m.startswith("_"):
                continue
            l1 = f"{r['log_mel_l1']:.3f}" if "log_mel_l1" in r else "n/a"
            lines.append(f"| {m} | {l1} | {r['fd_dsp']:.2f} | {r['flux']:.3f} ({r['flux_original']:.3f}) | "
                         f"{r['level_jump_db']:.2f} ({r['level_jump_db_original']:.2f}) |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
