"""Quality benchmark of Segue's edits on held-out music, against simple baselines.

Windows: one 6 s window per held-out track of the corpus (data/corpus, built by
engine.training.corpus), starting 30% into the track. The engine gets the WHOLE track
(the retrieval prior analyses the whole input) with the region placed in it; only the
6 s window around the region is scored. Tasks (the method's geometry):
- infill: the middle 2 s of the window. The input has the gap's interior silenced
  (its outer `seam_ms` are kept for the splice), so no method can copy the answer.
- regenerate: the same 2 s, with the original audio in place (a variation of it).
- continue: the track up to 2.4 s into the window, continued for 3.6 s. The floor copy may
  copy from later in the track (kept as it was); "similarity (past)" copies only from before
  the cut, as the engine must.
- transition: track A up to the end of its window joined, 3 s into the window, to
  12 s of track B from the start of B's window, with a 2.5 s crossfade. The scored
  window is the 6 s around the crossfade the method produced (located where the
  output first leaves A, so a prior that moves the join is scored where it joined).
Every engine run goes through `engine.render.render_audio`, exactly as the CLI and
the daemon run it.

Methods: baselines silence, crossfade (infill/regenerate: the 2 s before the gap
fading into the 2 s after it; continuation: the context repeated; transition: the
plain equal-power crossfade) and the naive similarity copy (50 ms hop, 250 ms edges,
never copying from the window itself: the floor); engine runs `generative`
(prior="none": the model alone), `prior` (prior="similarity", refine_strength=0: the
retrieval prior alone), `segue` (prior="similarity", the model's default refinement)
and, with --strengths/--refine-span, one run per (strength, span).

Metrics (engine.metrics), on the generated region against the original's:
multi-resolution log-mel L1; FD-DSP; seam continuity (flux and level jump at the
region's boundaries, beside the original's at the same places); level error (dB,
signed and absolute); error of the energy share above 6 kHz (dB); onset-envelope
correlation; detectability (5-fold cross-validated accuracy of a logistic regression
on DSP features telling the generated regions from real spans of the same tracks, 65%
into each track; 0.5 = indistinguishable); regenerate: waveform correlation with the
original (1 = no variation). Transition: level dip over the crossfade against the 1 s
either side, HF share of the crossfade against those sides, and the beat offset (ms)
of the material after the crossfade against the grid of the material before it (the
period measured on the 20 s of A before the join).

Run: python bench/quality.py [--windows 16] [--tasks infill,regenerate,continue,transition]
     [--strengths 0,0.1,0.2,0.3 --refine-span seams,gap] [--json out.json] [--md out.md]
     [--plots bench/results/spectrograms] [--only Lava.ogg,frantic.ogg]
"""
from __future__ import annotations

import argparse
import io
import json
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from _common import ROOT  # noqa: E402  (the checkout on sys.path: bench/_common.py)

from engine.embedders.dsp import DSPEmbedder  # noqa: E402
from engine.metrics import (  # noqa: E402
    beat_offset_ms,
    beat_period_s,
    detectability,
    dsp_features,
    frechet_distance,
    hf_share_error_db,
    level_dip_db,
    level_error_db,
    log_mel,
    multires_log_mel_l1,
    onset_correlation,
    seam_continuity,
    waveform_correlation,
)
from engine.regions import equal_power_curves, splice  # noqa: E402
from engine.render import get_model, render_audio  # noqa: E402
from engine.request import PCMAudio, RenderRequest  # noqa: E402
from engine.tasks import transition_mix  # noqa: E402
from engine.training.corpus import load_index, load_split  # noqa: E402

RATE = 44100
WIN_S, GAP = 6.0, (2.0, 4.0)
CONT_CTX_S = 2.4
XF_S = 2.5
SEAM_MS = 50.0
REAL_AT = 0.65           # real spans for the detector: this far into each track (outside the window)
B_INPUT_S = 12.0         # transition: how much of track B the engine gets
BEAT_SIDE_S = 4.0        # transition: material each side of the crossfade for the beat phase
PERIOD_FROM_S = 20.0     # transition: A's beat period from this much of A before the crossfade
LEVEL_SIDE_S = 1.0       # transition: level dip against this much material each side


@dataclass
class Window:
    """A held-out track and the 6 s window of it that is scored."""

    track: str
    group: str
    pcm: np.ndarray          # the split's (N, 2) int16 memory map
    offset: int              # the track's first frame in it
    frames: int
    audio: np.ndarray        # (2, 6 s) the window
    start: int               # window start in the track

    @property
    def track_audio(self) -> np.ndarray:
        """The whole track as float32 (2, n), read on demand so 16 long tracks do not sit in memory."""
        return np.asarray(self.pcm[self.offset:self.offset + self.frames], dtype=np.float32).T / 32768.0

    def real_span(self, n: int) -> np.ndarray:
        at = int(REAL_AT * self.frames)
        return np.asarray(self.pcm[self.offset + at:self.offset + at + n], dtype=np.float32).T / 32768.0


def held_out_windows(data_dir: Path, n: int, only: tuple[str, ...] = ()) -> list[Window]:
    """The first `n` held-out tracks at least 18 s long (or only those named in `only`)."""
    corpus = data_dir / "corpus"
    tracks = [t for t in load_index(corpus) if t.split == "test" and t.duration_s >= 3 * WIN_S
              and (not only or t.name in only)]
    pcm = load_split(corpus, "test")
    return [_window(pcm, t) for t in tracks[:n]]


def _window(pcm: np.ndarray, t) -> Window:
    """Track `t`'s scored window: WIN_S seconds from 30 % into it."""
    start = int(0.3 * t.frames)
    audio = np.asarray(pcm[t.offset + start:t.offset + start + int(WIN_S * RATE)], dtype=np.float32).T / 32768.0
    return Window(t.name, t.group, pcm, t.offset, t.frames, audio.copy(), start)


def training_windows(data_dir: Path, n: int, min_s: float = 40.0) -> list[Window]:
    """The same window of the first track of each TRAINING group (at least `min_s` long): for choosing settings."""
    corpus = data_dir / "corpus"
    pcm = load_split(corpus, "train")
    seen, out = set(), []
    for t in load_index(corpus):
        if t.split != "train" or t.duration_s < min_s or t.group in seen:
            continue
        seen.add(t.group)
        out.append(_window(pcm, t))
        if len(out) == n:
            break
    return out


def s(x: float) -> int:
    return int(round(x * RATE))


# ---------------------------------------------------------------- baselines

def crossfade_fill(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    fo, fi = equal_power_curves(before.shape[1])
    return before * fo + after * fi


def similarity_fill(w: Window, gap_start: int, gap_stop: int, *, need_after: bool, ctx_s: float = 0.5,
                    end_by: Optional[int] = None) -> np.ndarray:
    """Copy the span of the same track (outside the window) whose context best matches the gap's.

    `end_by` (track samples): only spans that end by then, the window not excluded (a
    continuation that, like the engine, sees only the past). None: the floor as it was.
    """
    hop = 512
    track_audio = w.track_audio
    mel = log_mel(track_audio, RATE, n_fft=2048, n_mels=64)  # frame f starts at sample f * hop
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
        if end_by is None and lo_excl <= pos <= hi_excl:
            continue
        if end_by is not None and pos + (gap_stop - gap_start) > end_by:
            break
        d = np.abs(mel[:, f - ctx:f] - pre).mean()
        if post is not None and post.shape[1] == ctx:
            d += np.abs(mel[:, f + gap_frames:f + gap_frames + ctx] - post).mean()
        if d < best:
            best, best_pos = d, pos
    n = gap_stop - gap_start
    return track_audio[:, best_pos:best_pos + n]


# ---------------------------------------------------------------- engine methods

@dataclass(frozen=True)
class EngineMethod:
    """One engine configuration under test: the request's prior fields."""

    name: str
    prior: Optional[str]
    refine_strength: Optional[float] = None
    refine_span: Optional[str] = None


BASELINES = ("silence", "crossfade", "similarity")


def engine_methods(strengths: list[float], spans: list[str]) -> list[EngineMethod]:
    out = [EngineMethod("generative", "none"), EngineMethod("prior", "similarity", 0.0),
           EngineMethod("segue", "similarity")]
    out += [EngineMethod(f"k={k:g} {span}", "similarity", k, span) for k in strengths for span in spans]
    return out


MODEL = None  # set in main: the model under test


CHOICES: list[dict] = []  # per engine render: task, method, the plan's prior settings and the prior's choices


FAILURES: list[dict] = []  # engine renders that raised: scored as `fallback` (silence in the region), listed


def run_engine(method: EngineMethod, args, fallback: np.ndarray, **fields) -> tuple[np.ndarray, float]:
    """Render one request with the method's prior fields; returns (full timeline, seconds).

    A render that raises is recorded in FAILURES and scored as `fallback` (the timeline
    with silence in the region), so one failing window does not lose an hour's run;
    --fail-fast raises instead.
    """
    try:
        return _render(method, args, **fields)
    except Exception as e:  # noqa: BLE001 -- any engine error is a result to report here
        if args.fail_fast:
            raise
        FAILURES.append({"task": fields.get("task"), "method": method.name, "error": f"{type(e).__name__}: {e}"})
        print(f"{fields.get('task')} {method.name}: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        return fallback, float("nan")


def _render(method: EngineMethod, args, **fields) -> tuple[np.ndarray, float]:
    req = RenderRequest(span="full", steps=args.steps, seed=args.seed, guidance_scale=args.xi, model=args.model,
                        step_mode=args.step_mode, sampler=args.sampler, seam_ms=SEAM_MS, prior=method.prior,
                        refine_strength=method.refine_strength, refine_span=method.refine_span, **fields)
    r = render_audio(req, model=MODEL if MODEL is not None else get_model(args.model))
    plan = getattr(r, "plan", None)
    CHOICES.append({"task": fields.get("task"), "method": method.name,
                    "plan": {k: getattr(plan, k, None) for k in ("prior", "refine_strength", "refine_span")},
                    "info": getattr(r, "info", {}) or {}})
    return r.audio, r.elapsed_s


# ---------------------------------------------------------------- tasks
# Each returns, per method, the scored 6 s window, plus each engine method's seconds per render.

def region_task(w: Window, task: str, methods: list[EngineMethod], args) -> tuple[dict, dict]:
    """infill / regenerate of the window's middle 2 s, the whole track as input."""
    a, b = s(GAP[0]), s(GAP[1])
    seam = s(SEAM_MS / 1000)
    n = b - a
    x = w.audio
    track = w.track_audio
    ta, tb = w.start + a, w.start + b
    if task == "infill":
        track[:, ta + seam:tb - seam] = 0.0  # the answer is not in the input
    out, elapsed = {}, {}
    for name, fill in (("silence", np.zeros((2, n), np.float32)),
                       ("crossfade", crossfade_fill(x[:, a - n:a], x[:, b:b + n])),
                       ("similarity", similarity_fill(w, a, b, need_after=True))):
        gen = x.copy()
        gen[:, a:b] = fill
        edited = x.copy()
        edited[:, a:b] = splice(x, gen, a, b, seam)
        out[name] = edited
    silent = track.copy()
    silent[:, ta:tb] = 0.0
    for m in methods:
        full, elapsed[m.name] = run_engine(m, args, silent, task=task, audio=(PCMAudio(track, RATE),), start_s=ta / RATE,
                                           end_s=tb / RATE, context_s=2.0)
        out[m.name] = full[:, w.start:w.start + x.shape[1]]
    return out, elapsed


def continuation_task(w: Window, methods: list[EngineMethod], args) -> tuple[dict, dict]:
    """Continue the track from 2.4 s into the window for 3.6 s (the track before the cut as input)."""
    cut = s(CONT_CTX_S)
    total = s(WIN_S)
    x = w.audio
    n = total - cut
    reps = int(np.ceil(n / cut))
    out, elapsed = {}, {}
    for name, fill in (("silence", np.zeros((2, n), np.float32)),
                       ("crossfade", np.tile(x[:, :cut], (1, reps))[:, :n]),
                       ("similarity", similarity_fill(w, cut, total, need_after=False)),
                       ("similarity (past)", similarity_fill(w, cut, total, need_after=False, end_by=w.start + cut))):
        # A continuation cannot see past the cut, so neither may its baselines: the fill starts
        # at the cut directly, as the engine's does (a splice would fade from the true future).
        edited = x.copy()
        edited[:, cut:] = fill
        out[name] = edited
    track = w.track_audio[:, :w.start + cut]
    silent = np.concatenate([track, np.zeros((2, n), np.float32)], axis=1)
    for m in methods:
        full, elapsed[m.name] = run_engine(m, args, silent, task="continue", audio=(PCMAudio(track, RATE),),
                                           duration_s=WIN_S - CONT_CTX_S, context_s=CONT_CTX_S)
        out[m.name] = full[:, w.start:w.start + total]
    return out, elapsed


@dataclass
class TransitionEdit:
    """A transition's output timeline and where its crossfade starts on it."""

    full: np.ndarray
    g0: int


def first_change(full: np.ndarray, a: np.ndarray, expected: int) -> int:
    """Where the output first differs from clip A: the crossfade's start.

    `expected` if it never does, or if it does only within one seam after it (the
    seam's fade leaves its first samples almost equal to A's).
    """
    n = min(full.shape[1], a.shape[1])
    diff = np.flatnonzero(np.abs(full[:, :n] - a[:, :n]).max(axis=0) > 1e-4)
    if not len(diff) or expected <= diff[0] <= expected + s(SEAM_MS / 1000):
        return expected
    return int(diff[0])


def transition_pairs(windows: list[Window]) -> list[tuple[Window, Window]]:
    """Each window paired with one from a different piece, a third of the list away."""
    k = max(1, len(windows) // 3)
    pairs = [(wa, windows[(i + k) % len(windows)]) for i, wa in enumerate(windows)]
    return [(wa, wb) for wa, wb in pairs if wa.group != wb.group]


def transition_inputs(wa: Window, wb: Window) -> tuple[np.ndarray, np.ndarray, int, int, int]:
    """(A's track up to its window's end, 12 s of B, join in A 3 s into the window, join in B, crossfade)."""
    a_in = wa.track_audio[:, :wa.start + s(WIN_S)]
    b_in = wb.track_audio[:, wb.start:wb.start + s(B_INPUT_S)]
    return a_in, b_in, wa.start + s(WIN_S / 2), s(WIN_S / 2), s(XF_S)


def beat_period_before_s(audio: np.ndarray, g0: int) -> float:
    """The beat metric's period for a crossfade starting at `g0`: from the PERIOD_FROM_S of `audio` before it."""
    return beat_period_s(audio[:, max(0, g0 - s(PERIOD_FROM_S)):g0], RATE)


def beat_offset_across_ms(audio: np.ndarray, g0: int, g1: int, period_s: float) -> float:
    """The beats of the BEAT_SIDE_S after the crossfade [g0, g1) against the grid of the BEAT_SIDE_S before it."""
    side = s(BEAT_SIDE_S)
    return beat_offset_ms(audio, (g0 - side, g0), (g1, min(audio.shape[1], g1 + side)), period_s, RATE)


def transition_task(wa: Window, wb: Window, methods: list[EngineMethod], args) -> tuple[dict, dict, dict]:
    """A's track up to its window's end, joined 3 s into the window to 12 s of B; returns (edits, seconds, info)."""
    a_in, b_in, join_a, join_b, xf = transition_inputs(wa, wb)
    # The plain crossfade baseline: the sine-law equal-power fade at the requested joins.
    mix, g0, g1 = transition_mix(a_in, b_in, join_a, join_b, xf, curves=equal_power_curves)
    silence = mix.copy()
    silence[:, g0:g1] = splice(mix, np.zeros_like(mix), g0, g1, s(SEAM_MS / 1000))
    hard = np.concatenate([a_in[:, :join_a], b_in[:, join_b:]], axis=1)
    out = {"silence": TransitionEdit(silence, g0), "crossfade": TransitionEdit(mix, g0)}
    elapsed = {}
    for m in methods:
        full, elapsed[m.name] = run_engine(m, args, silence, task="transition", audio=(PCMAudio(a_in, RATE), PCMAudio(b_in, RATE)),
                                           start_s=join_a / RATE, b_start_s=join_b / RATE, crossfade_s=XF_S,
                                           context_s=2.0)
        out[m.name] = TransitionEdit(full, first_change(full, a_in, g0))
    period = beat_period_before_s(a_in, g0)
    # The beat-offset metric's own floor: A's track running on untouched across the same span.
    floor = beat_offset_across_ms(wa.track_audio, g0, g1, period)
    return out, elapsed, {"hard": hard, "g0": g0, "period_s": period, "floor_offset_ms": floor}


# ---------------------------------------------------------------- scoring

def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


def _detect(regions: list[np.ndarray], real: list[np.ndarray]) -> dict[str, float]:
    fake = np.stack([dsp_features(r, RATE) for r in regions])
    ref = np.stack([dsp_features(r, RATE) for r in real])
    groups = list(range(len(regions)))
    d = detectability(fake, ref, groups, groups)
    return {"detect_acc": d.accuracy, "detect_chance_se": d.chance_stderr}


def score_regions(edits: list[dict], originals: list[np.ndarray], span: tuple[int, int], real: list[np.ndarray],
                  embed: DSPEmbedder, task: str) -> dict[str, dict]:
    """Every metric per method on region `span` of the scored windows (and per window in `per_window`)."""
    a, b = span
    with torch.no_grad():
        real_emb = embed(torch.from_numpy(np.stack([o[:, a:b] for o in originals]))).double().numpy()
    results = {}
    for m in edits[0]:
        regions = [e[m][:, a:b] for e in edits]
        refs = [o[:, a:b] for o in originals]
        per = {
            "log_mel_l1": [multires_log_mel_l1(r, o, RATE) for r, o in zip(regions, refs)],
            "level_error_db": [level_error_db(r, o) for r, o in zip(regions, refs)],
            "hf_error_db": [hf_share_error_db(r, o, RATE) for r, o in zip(regions, refs)],
            "onset_corr": [onset_correlation(r, o, RATE) for r, o in zip(regions, refs)],
        }
        if task == "regenerate":
            per["waveform_corr"] = [waveform_correlation(r, o) for r, o in zip(regions, refs)]
        row = {k: _mean(v) for k, v in per.items()}
        row["level_error_abs_db"] = _mean([abs(v) for v in per["level_error_db"]])
        row["hf_error_abs_db"] = _mean([abs(v) for v in per["hf_error_db"]])
        with torch.no_grad():
            emb = embed(torch.from_numpy(np.stack(regions).astype(np.float32))).double().numpy()
        row["fd_dsp"] = frechet_distance(emb, real_emb)
        seams = [seam_continuity(e[m], o, [p for p in (a, b) if p < e[m].shape[1] - s(0.05)], RATE)
                 for e, o in zip(edits, originals)]
        for k in seams[0]:
            row[k] = _mean([x[k] for x in seams])
        per["seam_flux"] = [x["flux"] for x in seams]
        per["seam_jump_db"] = [x["level_jump_db"] for x in seams]
        row.update(_detect(regions, real))
        row["per_window"] = per
        results[m] = row
    return results


def score_transitions(edits: list[dict], infos: list[dict], real: list[np.ndarray],
                      embed: DSPEmbedder) -> dict[str, dict]:
    """Level dip, HF share against the joined material, seams, beat offset, FD-DSP and detectability."""
    xf, side = s(XF_S), s(LEVEL_SIDE_S)
    pre = s(WIN_S / 2) - xf // 2  # the scored window starts this far before the crossfade
    with torch.no_grad():
        real_emb = embed(torch.from_numpy(np.stack(real))).double().numpy()
    results = {}
    for m in edits[0]:
        per = {"level_dip_db": [], "hf_error_db": [], "beat_offset_ms": [], "join_moved_s": [], "period_s": []}
        regions, seams = [], []
        for e, info in zip(edits, infos):
            t = e[m]
            g0, g1 = t.g0, t.g0 + xf
            full = t.full
            regions.append(full[:, g0:g1])
            per["level_dip_db"].append(level_dip_db(full, g0, g1, side))
            sides = np.concatenate([full[:, g0 - side:g0], full[:, g1:g1 + side]], axis=1)
            per["hf_error_db"].append(hf_share_error_db(full[:, g0:g1], sides, RATE))
            per["beat_offset_ms"].append(beat_offset_across_ms(full, g0, g1, info["period_s"]))
            per["join_moved_s"].append((g0 - info["g0"]) / RATE)
            per["period_s"].append(info["period_s"])
            window = full[:, g0 - pre:g0 - pre + s(WIN_S)]
            hard = info["hard"][:, info["g0"] - pre:info["g0"] - pre + s(WIN_S)]
            seams.append(seam_continuity(window, hard, [pre, pre + xf], RATE))
        row = {k: _mean(v) for k, v in per.items()}
        row["beat_offset_abs_ms"] = _mean([abs(v) for v in per["beat_offset_ms"]])
        row["beats_within_10ms"] = _mean([float(abs(v) <= 10.0) for v in per["beat_offset_ms"]])
        with torch.no_grad():
            emb = embed(torch.from_numpy(np.stack(regions).astype(np.float32))).double().numpy()
        row["fd_dsp"] = frechet_distance(emb, real_emb)
        for k in seams[0]:
            row[k] = _mean([x[k] for x in seams])
        per["seam_flux"] = [x["flux"] for x in seams]
        per["seam_jump_db"] = [x["level_jump_db"] for x in seams]
        row.update(_detect(regions, real[:len(regions)]))
        row["per_window"] = per
        results[m] = row
    return results


# ---------------------------------------------------------------- plots

def plot_spectrograms(windows: dict[str, np.ndarray], bounds: tuple[int, int], title: str, path: Path) -> None:
    """One log-mel spectrogram per method of the same scored window, side by side, the region marked."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from PIL import Image

    from engine.metrics import _mel_fb

    mels = {k: log_mel(v, RATE, n_fft=2048, n_mels=96) for k, v in windows.items()}
    centres = _mel_fb(2048, RATE, 96).argmax(dim=1).numpy() * RATE / 2048
    ticks = [(int(np.searchsorted(centres, hz)), label) for hz, label in ((1000, "1k"), (6000, "6k"), (12000, "12k"))]
    hi = max(float(m.max()) for m in mels.values())
    cols = 4
    rows = int(np.ceil(len(mels) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.3 * rows), squeeze=False)
    for ax, (name, mel) in zip(axes.flat, mels.items()):
        dur = windows[name].shape[1] / RATE
        ax.imshow(mel, origin="lower", aspect="auto", cmap="magma", vmin=hi - 12.0, vmax=hi,
                  extent=(0, dur, 0, mel.shape[0]))
        for p in bounds:
            ax.axvline(p / RATE, color="cyan", lw=0.8, ls="--")
        ax.set_title(name, fontsize=8)
        ax.set_yticks([k for k, _ in ticks], [lab for _, lab in ticks])
        ax.tick_params(labelsize=6)
    for ax in list(axes.flat)[len(mels):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    fig.savefig(buf, dpi=72)
    plt.close(fig)
    buf.seek(0)
    # A 128-colour palette keeps the PNG small enough to commit; the colour map has no more than that to show.
    Image.open(buf).convert("RGB").quantize(128).save(path, optimize=True)


# ---------------------------------------------------------------- main

def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


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
    p.add_argument("--strengths", type=_floats, default=[], help="sweep refine_strength, e.g. 0,0.1,0.2,0.3")
    p.add_argument("--refine-span", default="", help="sweep refine_span, e.g. seams,gap (default: gap)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--weights", type=Path, default=None, help="builtin weights folder (default: the shipped one)")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--md", type=Path, default=None, help="also write the markdown tables here")
    p.add_argument("--plots", type=Path, default=None, help="folder for one spectrogram PNG per task")
    p.add_argument("--plot-track", default="Lava.ogg",
                   help="the track whose window (or transition from it) is plotted; the first window if absent")
    p.add_argument("--fail-fast", action="store_true", help="stop at the first engine error (default: record it)")
    p.add_argument("--only", default="", help="comma-separated held-out track names to use (default: all)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    spans = [v.strip() for v in args.refine_span.split(",") if v.strip()] or (["gap"] if args.strengths else [])
    if any(not 0.0 <= k <= 1.0 for k in args.strengths) or any(v not in ("seams", "gap") for v in spans):
        raise SystemExit(f"--strengths must lie in [0, 1] and --refine-span be seams and/or gap, got "
                         f"{args.strengths} and {spans}")
    methods = engine_methods(args.strengths, spans)

    windows = held_out_windows(args.data, args.windows, tuple(v for v in args.only.split(",") if v))
    if len(windows) < 2:
        raise SystemExit("the benchmark needs at least 2 held-out windows")
    embed = DSPEmbedder()
    global MODEL
    if args.weights is not None:
        from engine.models.builtin import load_builtin

        MODEL = load_builtin(args.weights)
    model = MODEL if MODEL is not None else get_model(args.model)
    report = {"model": args.model, "windows": len(windows), "steps": args.steps or model.default_steps,
              "xi": args.xi if args.xi is not None else model.default_scale(model.default_step_mode),
              "methods": {m.name: {"prior": m.prior, "refine_strength": m.refine_strength,
                                   "refine_span": m.refine_span} for m in methods},
              "machine": f"{platform.processor() or platform.machine()}, torch threads {args.threads}",
              "tracks": [w.track for w in windows], "tasks": {}}
    t_all = time.time()
    shown_at = next((i for i, w in enumerate(windows) if w.track == args.plot_track), 0)
    for task in args.tasks.split(","):
        t0 = time.time()
        if task in ("infill", "regenerate", "continue"):
            runs = [region_task(w, task, methods, args) if task != "continue" else continuation_task(w, methods, args)
                    for w in windows]
            edits, elapsed = [r[0] for r in runs], [r[1] for r in runs]
            originals = [w.audio for w in windows]
            span = (s(GAP[0]), s(GAP[1])) if task != "continue" else (s(CONT_CTX_S), s(WIN_S))
            real = [w.real_span(span[1] - span[0]) for w in windows]
            res = score_regions(edits, originals, span, real, embed, task)
            plot_windows = dict(original=originals[shown_at], **edits[shown_at])
            title = windows[shown_at].track
        elif task == "transition":
            pairs = transition_pairs(windows)
            runs = [transition_task(wa, wb, methods, args) for wa, wb in pairs]
            edits, elapsed, infos = [r[0] for r in runs], [r[1] for r in runs], [r[2] for r in runs]
            # Real reference: spans of the two tracks themselves, unmixed, alternating A and B.
            real = [(wa if i % 2 == 0 else wb).real_span(s(XF_S)) for i, (wa, wb) in enumerate(pairs)]
            res = score_transitions(edits, infos, real, embed)
            floor = [i["floor_offset_ms"] for i in infos]
            report["beat_metric_floor"] = {"offset_abs_ms": _mean([abs(v) for v in floor]),
                                           "within_10ms": _mean([float(abs(v) <= 10.0) for v in floor]),
                                           "per_pair_ms": floor, "period_s": [i["period_s"] for i in infos]}
            i = next((j for j, (wa, _) in enumerate(pairs) if wa is windows[shown_at]), 0)
            pre = s(WIN_S / 2) - s(XF_S) // 2
            plot_windows = {"original (hard cut)": infos[i]["hard"][:, infos[i]["g0"] - pre:infos[i]["g0"] - pre + s(WIN_S)]}
            plot_windows.update({m: e.full[:, e.g0 - pre:e.g0 - pre + s(WIN_S)] for m, e in edits[i].items()})
            title = f"{pairs[i][0].track} -> {pairs[i][1].track}"
            span = (pre, pre + s(XF_S))
        else:
            raise SystemExit(f"unknown task {task!r}")
        for m in methods:
            res[m.name]["seconds_per_render"] = _mean([e[m.name] for e in elapsed])
        report["tasks"][task] = res
        if args.plots is not None:
            shown = {k: v for k, v in plot_windows.items() if not k.startswith("k=")}
            plot_spectrograms(shown, span, f"{task}: {title}", args.plots / f"{task}.png")
        print(f"{task}: {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    report["wall_s"] = time.time() - t_all
    report["engine_choices"] = CHOICES
    report["failures"] = FAILURES
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1, default=str))
    text = markdown(report)
    if args.md is not None:
        args.md.parent.mkdir(parents=True, exist_ok=True)
        args.md.write_text(text + "\n")
    print(text)


def paired(row: dict, base: dict, key: str) -> str:
    """Mean per-window difference of `key` (row minus base) +- one standard error, and how often row is lower."""
    d = np.asarray(row["per_window"][key], float) - np.asarray(base["per_window"][key], float)
    se = d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else float("nan")
    return f"{d.mean():+.3f} +- {se:.3f} (one standard error), lower on {int((d < 0).sum())} of {len(d)} windows"


def targets(report: dict, method: str = "segue") -> list[str]:
    """Issue 14's quality targets, checked for `method` on this report: one line each, met or not."""
    out = []

    def check(task: str, what: str, value: float, bound: float, ok: bool) -> None:
        out.append(f"- {task}: {what} {value:.3g} vs {bound:.3g}: {'met' if ok else 'NOT met'}")

    for task, res in report["tasks"].items():
        if method not in res:
            continue
        r = res[method]
        if task == "transition":
            worst = max(r["per_window"]["level_dip_db"])
            check(task, "worst level dip dB (target <= 1)", worst, 1.0, worst <= 1.0)
            check(task, "seam flux vs plain crossfade", r["flux"], res["crossfade"]["flux"], r["flux"] <= res["crossfade"]["flux"])
            check(task, "mean |beat offset| ms (target <= 10)", r["beat_offset_abs_ms"], 10.0, r["beat_offset_abs_ms"] <= 10.0)
            check(task, "|HF share error| dB vs the joined material (target <= 3)", abs(r["hf_error_db"]), 3.0,
                  abs(r["hf_error_db"]) <= 3.0)
            continue
        copy = res["similarity"]
        if task == "regenerate":
            check(task, "log-mel L1 vs the copy's (within it)", r["log_mel_l1"], copy["log_mel_l1"],
                  r["log_mel_l1"] <= copy["log_mel_l1"])
            out.append(f"- {task}: waveform correlation with the original {r['waveform_corr']:.3g} (1 = no variation)")
        else:
            check(task, "log-mel L1 vs the copy's (beat it)", r["log_mel_l1"], copy["log_mel_l1"],
                  r["log_mel_l1"] < copy["log_mel_l1"])
            check(task, "seam flux vs the copy's (beat it)", r["flux"], copy["flux"], r["flux"] < copy["flux"])
            check(task, "seam level jump dB vs the copy's (beat it)", r["level_jump_db"], copy["level_jump_db"],
                  r["level_jump_db"] < copy["level_jump_db"])
            for key, what in (("seam_flux", "seam flux"), ("seam_jump_db", "seam level jump dB")):
                if key in r["per_window"] and key in copy["per_window"]:
                    out.append(f"- {task}: {what} minus the copy's, paired over windows: {paired(r, copy, key)}")
            past = res.get("similarity (past)")
            if past is not None:
                check(task, "log-mel L1 vs the past-only copy's (beat it; the floor also copies from later)",
                      r["log_mel_l1"], past["log_mel_l1"], r["log_mel_l1"] < past["log_mel_l1"])
        check(task, "mean |level error| dB (target <= 1.5)", r["level_error_abs_db"], 1.5, r["level_error_abs_db"] <= 1.5)
        check(task, "mean |HF share error| dB (target <= 3)", r["hf_error_abs_db"], 3.0, r["hf_error_abs_db"] <= 3.0)
    return out


def _f(row: dict, key: str, fmt: str) -> str:
    v = row.get(key)
    return "n/a" if v is None or not np.isfinite(v) else format(v, fmt)


def markdown(report: dict) -> str:
    lines = [f"model `{report['model']}`, {report['windows']} held-out windows, {report['steps']} steps, "
             f"xi = {report['xi']}, {report['machine']}", ""]
    resolved = {}
    for c in report.get("engine_choices", []):
        resolved.setdefault(c["method"], c["plan"])
    if resolved:
        lines.append("engine methods as the plan resolved them (prior, refine_strength, refine_span): " + "; ".join(
            f"{m}: {p.get('prior')}, {p.get('refine_strength')}, {p.get('refine_span')}" for m, p in resolved.items()))
        lines.append("")
    for task, res in report["tasks"].items():
        lines.append(f"**{task}**")
        lines.append("")
        if task == "transition":
            lines.append("| method | level dip dB | HF err dB | beat offset ms (abs) | within 10 ms | FD-DSP | "
                         "seam flux (hard cut) | seam jump dB (hard cut) | detect acc | s/render |")
            lines.append("|---|---|---|---|---|---|---|---|---|---|")
            for m, r in res.items():
                lines.append(f"| {m} | {_f(r, 'level_dip_db', '.2f')} | {_f(r, 'hf_error_db', '+.1f')} | "
                             f"{_f(r, 'beat_offset_abs_ms', '.1f')} | {_f(r, 'beats_within_10ms', '.0%')} | "
                             f"{_f(r, 'fd_dsp', '.2f')} | {_f(r, 'flux', '.3f')} ({_f(r, 'flux_original', '.3f')}) | "
                             f"{_f(r, 'level_jump_db', '.2f')} ({_f(r, 'level_jump_db_original', '.2f')}) | "
                             f"{_f(r, 'detect_acc', '.0%')} | {_f(r, 'seconds_per_render', '.1f')} |")
        else:
            corr = task == "regenerate"
            lines.append("| method | log-mel L1 | FD-DSP | seam flux (orig) | seam jump dB (orig) | level err dB "
                         "(abs) | HF err dB (abs) | onset corr | detect acc |" + (" wave corr |" if corr else "")
                         + " s/render |")
            lines.append("|---" * (11 if corr else 10) + "|")
            for m, r in res.items():
                lines.append(f"| {m} | {_f(r, 'log_mel_l1', '.3f')} | {_f(r, 'fd_dsp', '.2f')} | "
                             f"{_f(r, 'flux', '.3f')} ({_f(r, 'flux_original', '.3f')}) | "
                             f"{_f(r, 'level_jump_db', '.2f')} ({_f(r, 'level_jump_db_original', '.2f')}) | "
                             f"{_f(r, 'level_error_db', '+.2f')} ({_f(r, 'level_error_abs_db', '.2f')}) | "
                             f"{_f(r, 'hf_error_db', '+.1f')} ({_f(r, 'hf_error_abs_db', '.1f')}) | "
                             f"{_f(r, 'onset_corr', '.2f')} | {_f(r, 'detect_acc', '.0%')} |"
                             + (f" {_f(r, 'waveform_corr', '.2f')} |" if corr else "")
                             + f" {_f(r, 'seconds_per_render', '.1f')} |")
        any_row = next(iter(res.values()))
        lines.append("")
        if task == "transition" and "beat_metric_floor" in report:
            f = report["beat_metric_floor"]
            lines.append(f"beat offset: of the material after the crossfade against the grid of the 4 s before it; "
                         f"the metric's floor (A's own track running on untouched across the same span): "
                         f"{f['offset_abs_ms']:.1f} ms mean |offset|, {f['within_10ms']:.0%} within 10 ms")
            lines.append("")
        lines.append(f"detect acc: 5-fold CV on {2 * len(next(iter(any_row['per_window'].values())))} clips, "
                     f"chance +- {any_row['detect_chance_se']:.0%} (one standard error)")
        lines.append("")
    failures = report.get("failures", [])
    if failures:
        lines += [f"**{len(failures)} engine renders FAILED** (scored as silence in the region):", ""]
        lines += [f"- {f['task']} / {f['method']}: {f['error']}" for f in failures] + [""]
    checks = targets(report)
    if checks:
        lines += ["**targets** (issue 14, method `segue`)", ""] + checks + [""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
