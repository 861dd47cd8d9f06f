"""Style presets on held-out music: how far each moves the colour, how much music it keeps, how fast.

For every style preset, on excerpts of the corpus's *test* split (whole tracks the
model never saw), through the real render path (`engine.render.render_audio`):
- embedding distance to the preset's reference before and after (DSP embedder, the
  groups weighted by the preset's `[style] weights`), and the share of the way moved;
- long-term spectral centroid and the share of energy above 8 kHz, before and after;
- chroma and onset-envelope correlation of the output with its input;
- compute seconds per second of audio.
Runs the chain alone (texture_iterations 0) and the chain + texture match
(`--texture`, iterations) at strength 0.5 and 1.0 (or each preset's own, `--shipped`),
the model's low-strength refinement on a subset (`--refine`, chain only), and times one
whole track (`--track-s`, with each `--texture` setting). Writes JSON to bench/results/style.json and spectrogram
PNGs before/after to bench/results/style/.

Run: python bench/style.py [--clips 16] [--clip-s 10] [--texture 0 60] [--shipped] [--refine 0.1 0.3]
                           [--refine-clips 2] [--threads 2]
     python bench/style.py --references-only --out bench/results/style_references.json
     python bench/style.py --references-only --music-references 3 --clips 8 --texture 0 60 \
         --out bench/results/style_music_references.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from _common import ROOT  # noqa: E402  (the checkout on sys.path: bench/_common.py)

from engine import features as F  # noqa: E402
from engine.embedders import load_embedder  # noqa: E402
from engine.presets import apply_preset, embed, load_preset  # noqa: E402
from engine.render import render_audio  # noqa: E402
from engine.request import PCMAudio, request_from_mapping  # noqa: E402
from engine.training.corpus import load_index, load_split  # noqa: E402

RATE = 44100
STYLES = ["lofi-warm", "bright-synth", "dark-ambient", "percussive", "strings-pad", "piano-clean"]


def held_out(data_dir: Path, n: int, seconds: float) -> list[tuple[str, np.ndarray]]:
    """`seconds` from 40 % into each test-split track (at most n tracks, one per group)."""
    return split_clips(data_dir, n, seconds, "test")


def split_clips(data_dir: Path, n: int, seconds: float, split: str) -> list[tuple[str, np.ndarray]]:
    """`seconds` from 40 % into each track of `split` (at most n tracks, one per group)."""
    tracks, seen = [], set()
    for t in load_index(data_dir):
        if t.split == split and t.group not in seen and t.duration_s >= seconds + 2:
            seen.add(t.group)
            tracks.append(t)
    pcm = load_split(data_dir, split)
    out = []
    for t in tracks[:n]:
        a = t.offset + int(0.4 * (t.frames - seconds * RATE))
        clip = np.asarray(pcm[a:a + int(seconds * RATE)], dtype=np.float32).T / 32768.0
        out.append((t.name, np.ascontiguousarray(clip)))
    return out


def whole_track(data_dir: Path, seconds: float) -> tuple[str, np.ndarray]:
    """The first `seconds` of the longest test track that lasts at least that long."""
    t = max((t for t in load_index(data_dir) if t.split == "test"), key=lambda t: t.frames)
    pcm = load_split(data_dir, "test")
    n = min(t.frames, int(seconds * RATE))
    return t.name, np.ascontiguousarray(np.asarray(pcm[t.offset:t.offset + n], dtype=np.float32).T / 32768.0)


def weights_vector(embedder, name: str) -> np.ndarray:
    w = np.ones(embedder.dim)
    for g, sl in embedder.slices.items():
        w[sl] = load_preset(name).style.weights[g] ** 0.5
    return w


def style_once(name: str, clip: np.ndarray, with_info: bool = False, **extra):
    """(audio, seconds) of one render through the real path; with_info adds the task's record (sidecar "prior")."""
    req = request_from_mapping(apply_preset({"task": "style", "audio": [PCMAudio(clip, RATE)], **extra}, name))
    t0 = time.perf_counter()
    rendered = render_audio(req)
    secs = time.perf_counter() - t0
    return (rendered.audio, secs, rendered.info) if with_info else (rendered.audio, secs)


def measure(name: str, clips, embedder, **extra) -> dict:
    ref = np.asarray(load_preset(name).reference.vector)
    w = weights_vector(embedder, name)
    rows = []
    for clip_name, x in clips:
        y, secs, info = style_once(name, x, with_info=True, **extra)
        d0 = float(np.linalg.norm(w * (embed(embedder, x) - ref)))
        d1 = float(np.linalg.norm(w * (embed(embedder, y) - ref)))
        rows.append({"clip": clip_name, "dist_before": d0, "dist_after": d1,
                     "centroid_before": F.spectral_centroid(x, RATE), "centroid_after": F.spectral_centroid(y, RATE),
                     "hf_db_before": F.hf_share_db(x, RATE), "hf_db_after": F.hf_share_db(y, RATE),
                     "chroma_corr": F.chroma_correlation(y, x, RATE), "onset_corr": F.onset_correlation(y, x, RATE),
                     "s_per_s": secs / (x.shape[1] / RATE),
                     "texture_match": info.get("texture_match")})
    ratio = [r["centroid_after"] / r["centroid_before"] for r in rows]
    moved = [1 - r["dist_after"] / r["dist_before"] for r in rows]
    summary = {
        "preset": name, "tone": load_preset(name).style.tone, "settings": extra, "clips": len(rows),
        "centroid_ratio_mean": float(np.mean(ratio)), "centroid_ratio_min": float(np.min(ratio)),
        "centroid_ratio_max": float(np.max(ratio)),
        "centroid_before_hz": float(np.mean([r["centroid_before"] for r in rows])),
        "centroid_after_hz": float(np.mean([r["centroid_after"] for r in rows])),
        "hf_db_before": float(np.mean([r["hf_db_before"] for r in rows])),
        "hf_db_after": float(np.mean([r["hf_db_after"] for r in rows])),
        "chroma_corr_mean": float(np.mean([r["chroma_corr"] for r in rows])),
        "chroma_corr_min": float(np.min([r["chroma_corr"] for r in rows])),
        "onset_corr_mean": float(np.mean([r["onset_corr"] for r in rows])),
        "onset_corr_min": float(np.min([r["onset_corr"] for r in rows])),
        "dist_before": float(np.mean([r["dist_before"] for r in rows])),
        "dist_after": float(np.mean([r["dist_after"] for r in rows])),
        "share_moved_mean": float(np.mean(moved)),
        "s_per_s_median": float(np.median([r["s_per_s"] for r in rows])),
        "rows": rows,
    }
    return summary


def measure_reference(name: str, clips, embedder, ref_dir: Path, strength: float = 1.0,
                      texture_iterations: int = 0, audio: np.ndarray | None = None) -> dict:
    """`--reference` instead of a preset: a reference clip as a file, matched by EQ and loudness.

    The clip is the preset `name`'s own reference (synthesised by presets/build_references.py),
    or `audio` (real music) under that name.
    """
    import pedalboard

    if audio is None:
        sys.path.insert(0, str(ROOT / "presets"))
        import build_references

        audio = build_references.render_style(name)
    path = ref_dir / f"{name}.wav"
    ref_dir.mkdir(parents=True, exist_ok=True)
    with pedalboard.io.AudioFile(str(path), "w", RATE, 2, bit_depth=24) as f:
        f.write(audio)
    ref = embed(embedder, audio)
    w = np.ones(embedder.dim)
    w[embedder.slices["chroma"]] = 0.0   # the default weights (chroma off), as the task guides with
    rows = []
    for clip_name, x in clips:
        req = request_from_mapping({"task": "style", "audio": [PCMAudio(x, RATE)], "reference": str(path),
                                    "strength": strength, "texture_iterations": texture_iterations})
        t0 = time.perf_counter()
        y = render_audio(req).audio
        secs = time.perf_counter() - t0
        rows.append({"clip": clip_name, "dist_before": float(np.linalg.norm(w * (embed(embedder, x) - ref))),
                     "dist_after": float(np.linalg.norm(w * (embed(embedder, y) - ref))),
                     "centroid_before": F.spectral_centroid(x, RATE), "centroid_after": F.spectral_centroid(y, RATE),
                     "centroid_ref": F.spectral_centroid(audio, RATE),
                     "chroma_corr": F.chroma_correlation(y, x, RATE), "onset_corr": F.onset_correlation(y, x, RATE),
                     "s_per_s": secs / (x.shape[1] / RATE)})
    return {"reference_clip": name, "strength": strength, "texture_iterations": texture_iterations, "clips": len(rows),
            "centroid_ref_hz": rows[0]["centroid_ref"],
            "centroid_before_hz": float(np.mean([r["centroid_before"] for r in rows])),
            "centroid_after_hz": float(np.mean([r["centroid_after"] for r in rows])),
            "chroma_corr_mean": float(np.mean([r["chroma_corr"] for r in rows])),
            "chroma_corr_min": float(np.min([r["chroma_corr"] for r in rows])),
            "onset_corr_mean": float(np.mean([r["onset_corr"] for r in rows])),
            "dist_before": float(np.mean([r["dist_before"] for r in rows])),
            "dist_after": float(np.mean([r["dist_after"] for r in rows])),
            "share_moved_mean": float(np.mean([1 - r["dist_after"] / r["dist_before"] for r in rows])),
            "s_per_s_median": float(np.median([r["s_per_s"] for r in rows])), "rows": rows}


def _panels_png(panels: list[tuple[str, np.ndarray]], path: Path, *, n_fft: int, hop: int, xlabel: str,
                width: float, panel_height: float, dpi: int) -> Path:
    """One log power spectrogram per (title, audio), stacked, on one colour scale (the first panel's peak)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(panels), 1, figsize=(width, panel_height * len(panels)), sharex=True)
    top = None
    for ax, (title, a) in zip(axes, panels):
        s = 10 * np.log10(F._power(a.mean(axis=0).astype(np.float64), n_fft, hop).T + 1e-10)
        top = s.max() if top is None else top
        ax.imshow(s, origin="lower", aspect="auto", vmin=top - 90, vmax=top, cmap="magma",
                  extent=(0, a.shape[1] / RATE, 0, RATE / 2000))
        ax.set_ylabel("kHz")
        ax.set_title(title, fontsize=9)
    axes[-1].set_xlabel(xlabel)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def spectrograms(clip_name: str, clip: np.ndarray, out_dir: Path, texture_iterations: int = 60) -> Path:
    """One PNG: the input's log spectrogram and each preset's output, chain alone and chain + texture match."""
    renders = [("input", clip)]
    for n in STYLES:
        renders += [(f"{n}, chain", style_once(n, clip, texture_iterations=0)[0]),
                    (f"{n}, chain + texture match", style_once(n, clip, texture_iterations=texture_iterations)[0])]
    panels = [(f"{title}: centroid {F.spectral_centroid(a, RATE):.0f} Hz, >8 kHz {F.hf_share_db(a, RATE):.1f} dB", a)
              for title, a in renders]
    return _panels_png(panels, out_dir / f"spectrograms_{Path(clip_name).stem}.png", n_fft=2048, hop=512,
                       xlabel=f"seconds ({clip_name}, held-out)", width=9, panel_height=1.8, dpi=60)


def closeup(clip_name: str, clip: np.ndarray, out_dir: Path, preset: str, seconds: float = 4.0,
            texture_iterations: int = 60) -> Path:
    """A finer spectrogram (1024-point, 5.8 ms hop) of the first seconds: input, chain, chain + texture match.

    For looking at what the texture match adds: zipper noise or musical noise would show as
    vertical stripes or isolated speckles in the last panel that the chain's panel lacks.
    """
    n = int(seconds * RATE)
    renders = [("input", clip), ("chain", style_once(preset, clip, texture_iterations=0)[0]),
               ("chain + texture match", style_once(preset, clip, texture_iterations=texture_iterations)[0])]
    return _panels_png([(f"{preset}: {title}", a[:, :n]) for title, a in renders],
                       out_dir / f"texture_{preset}_{Path(clip_name).stem}.png", n_fft=1024, hop=256,
                       xlabel=f"seconds ({clip_name}, held-out)", width=10, panel_height=2.6, dpi=80)


def line(s: dict) -> str:
    return (f"| {s['preset']} | {s['tone']} | {s['settings']} | {s['centroid_before_hz']:.0f} -> {s['centroid_after_hz']:.0f} "
            f"(x{s['centroid_ratio_mean']:.2f}, {s['centroid_ratio_min']:.2f}..{s['centroid_ratio_max']:.2f}) | "
            f"{s['hf_db_before']:.1f} -> {s['hf_db_after']:.1f} | {s['chroma_corr_mean']:.3f} ({s['chroma_corr_min']:.3f}) | "
            f"{s['onset_corr_mean']:.3f} ({s['onset_corr_min']:.3f}) | {s['dist_before']:.2f} -> {s['dist_after']:.2f} "
            f"({100 * s['share_moved_mean']:.0f} %) | {s['s_per_s_median']:.3f} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT / "data" / "corpus")
    ap.add_argument("--clips", type=int, default=16)
    ap.add_argument("--clip-s", type=float, default=10.0)
    ap.add_argument("--strengths", type=float, nargs="+", default=[0.5, 1.0])
    ap.add_argument("--shipped", action="store_true", help="each preset at its own strength instead of --strengths")
    ap.add_argument("--texture", type=int, nargs="+", default=[0, 60],
                    help="texture_iterations values to run (0: the chain alone)")
    ap.add_argument("--refine", type=float, nargs="+", default=[0.1, 0.3],
                    help="refine_strength values for the model runs (0: skip)")
    ap.add_argument("--refine-clips", type=int, default=2)
    ap.add_argument("--refine-steps", type=int, default=20)
    ap.add_argument("--track-s", type=float, default=240.0, help="whole-track timing length (0: skip)")
    ap.add_argument("--track-refine", type=float, default=0.0,
                    help="also time the whole track with this refine_strength (dark-ambient, --refine-steps)")
    ap.add_argument("--spectrogram-clips", type=int, default=1, help="how many clips get a spectrogram PNG")
    ap.add_argument("--closeups", nargs="*", default=["percussive", "dark-ambient"],
                    help="presets that get a close-up PNG (input, chain, chain + texture match)")
    ap.add_argument("--only-track", action="store_true", help="skip the clip tables (whole track and PNGs only)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "style.json")
    ap.add_argument("--references-only", action="store_true",
                    help="only the --reference runs (each preset's reference clip as a file), to --out")
    ap.add_argument("--music-references", type=int, default=0,
                    help="with --references-only: instead of the presets' synthetic clips, this many 10 s "
                         "excerpts of training-split tracks (real music, none of it held out) as references")
    ap.add_argument("--presets", default=",".join(STYLES), help="comma-separated style presets to measure")
    args = ap.parse_args(argv)
    presets = [p.strip() for p in args.presets.split(",") if p.strip()]
    torch.set_num_threads(args.threads)
    embedder = load_embedder("dsp")
    clips = held_out(args.data, args.clips, args.clip_s)
    print(f"{len(clips)} held-out clips of {args.clip_s:g} s: {', '.join(c for c, _ in clips)}", flush=True)
    if args.references_only:
        import tempfile

        print("| reference clip | texture iterations | centroid Hz: in -> out (reference) | chroma corr (min) | "
              "onset corr | distance to ref (moved) | s per s |\n|---|---|---|---|---|---|---|", flush=True)
        rows = []
        if args.music_references:
            train = split_clips(args.data, 10 ** 6, args.clip_s, "train")
            picks = np.linspace(0, len(train) - 1, args.music_references).round().astype(int)
            references = [(train[i][0], train[i][1]) for i in picks]
        else:
            references = [(n, None) for n in STYLES]
        with tempfile.TemporaryDirectory() as tmp:
            for (name, audio), it in ((ref, it) for ref in references for it in args.texture):
                r = measure_reference(name, clips, embedder, Path(tmp), texture_iterations=it, audio=audio)
                rows.append(r)
                print(f"| {name} | {it} | {r['centroid_before_hz']:.0f} -> {r['centroid_after_hz']:.0f} "
                      f"({r['centroid_ref_hz']:.0f}) | {r['chroma_corr_mean']:.3f} ({r['chroma_corr_min']:.3f}) | "
                      f"{r['onset_corr_mean']:.3f} | {r['dist_before']:.2f} -> {r['dist_after']:.2f} "
                      f"({100 * r['share_moved_mean']:.0f} %) | {r['s_per_s_median']:.3f} |", flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"threads": args.threads, "clip_s": args.clip_s, "references": rows}, indent=1))
        return 0
    print("| preset | tone | settings | centroid Hz (ratio, per-clip range) | >8 kHz dB | chroma corr (min) | "
          "onset corr (min) | distance to ref (moved) | s per s |", flush=True)
    print("|---|---|---|---|---|---|---|---|---|", flush=True)
    results = []
    for name in ([] if args.only_track else presets):
        strengths = [float(load_preset(name).settings.get("strength", 1.0))] if args.shipped else args.strengths
        for s in strengths:
            for it in args.texture:
                results.append(measure(name, clips, embedder, strength=s, texture_iterations=it))
                print(line(results[-1]), flush=True)
    levels = [] if args.only_track else [r for r in args.refine if r > 0]
    if levels:
        for name in presets:
            chain = measure(name, clips[:args.refine_clips], embedder, strength=1.0, texture_iterations=0)
            results.append(chain)
            print(line(chain) + " (the refined clips, chain only)", flush=True)
            for r in levels:
                results.append(measure(name, clips[:args.refine_clips], embedder, strength=1.0,
                                       refine_strength=r, steps=args.refine_steps, texture_iterations=0))
                print(line(results[-1]), flush=True)
    track = None
    if args.track_s > 0:
        tname, audio = whole_track(args.data, args.track_s)
        for name in ("lofi-warm", "dark-ambient"):
            for it in args.texture:
                _, secs = style_once(name, audio, texture_iterations=it)
                track = {"track": tname, "seconds": audio.shape[1] / RATE, "preset": name, "wall_s": secs,
                         "texture_iterations": it, "load_average": os.getloadavg()[0]}
                print(f"whole track {tname} ({track['seconds']:.0f} s), {name}, texture_iterations {it}: "
                      f"{secs:.1f} s wall (real-time factor {secs / track['seconds']:.3f}, load average "
                      f"{track['load_average']:.1f})", flush=True)
                results.append(track)
        if args.track_refine > 0:
            _, secs = style_once("dark-ambient", audio, refine_strength=args.track_refine, steps=args.refine_steps,
                                 texture_iterations=0)
            track = {"track": tname, "seconds": audio.shape[1] / RATE, "preset": "dark-ambient", "wall_s": secs,
                     "refine_strength": args.track_refine, "steps": args.refine_steps,
                     "load_average": os.getloadavg()[0]}
            print(f"whole track {tname} ({track['seconds']:.0f} s), dark-ambient, refine_strength "
                  f"{args.track_refine:g} ({args.refine_steps} steps): {secs:.1f} s wall (real-time factor "
                  f"{secs / track['seconds']:.3f}, load average {track['load_average']:.1f})", flush=True)
            results.append(track)
    for clip_name, clip in clips[:args.spectrogram_clips]:
        print(f"spectrograms: {spectrograms(clip_name, clip, args.out.parent / 'style')}", flush=True)
        for name in args.closeups:
            print(f"close-up: {closeup(clip_name, clip, args.out.parent / 'style', name)}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"threads": args.threads, "clip_s": args.clip_s, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
