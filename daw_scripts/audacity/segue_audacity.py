"""Segue for Audacity: render the current selection through the Segue daemon and import the result.

    python segue_audacity.py infill|regenerate|style [--preset P] [--steps N] [--seed N] [--model M]
    python segue_audacity.py continue --duration 4
    python segue_audacity.py transition          (two tracks selected; the time selection is the overlap)

Audacity must be running with mod-script-pipe enabled, and `segue serve` too. The script

1. reads the time selection (Audacity has no query for it: AddLabel, GetInfo Labels, Undo) and the
   selected wave tracks (GetInfo Tracks);
2. exports the selection plus up to `--context` seconds each side from the selected track
   (Export2 of a selection, at the project rate) into `--workdir`;
3. runs `segue-client ... --span region --json` (progress on this script's stderr);
4. converts the clip to the project rate, puts `window start + offset_s` of silence in front of it
   and imports that (Import2): a new track "Segue <task> <time>" with the clip exactly at the
   selection, as one undo step.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from audacity_pipe import AudacityError, AudacityPipe  # noqa: E402

TASKS = ("infill", "regenerate", "continue", "transition", "style")


class SegueAudacityError(RuntimeError):
    """The selection does not fit the task, or the render failed; the message says which."""


@dataclass(frozen=True)
class Selection:
    start_s: float
    end_s: float
    tracks: list[dict]          # selected wave tracks, each with its Audacity index under "index"


def read_selection(pipe: AudacityPipe) -> Selection:
    """The time selection and the selected wave tracks, leaving the project as it was.

    Undo restores the track selection of the previous undo state, not the current one, so the
    selected tracks are read first and selected again afterwards."""
    tracks = [dict(t, index=i) for i, t in enumerate(pipe.info("Tracks"))
              if t.get("kind") == "wave" and t.get("selected")]
    pipe.command("AddLabel")
    try:
        labels = pipe.info("Labels")
    finally:
        pipe.command("Undo")
    spans = [(float(a), float(b)) for _, items in labels for a, b, text in items if text == ""]
    if not spans:
        raise SegueAudacityError("could not read the time selection (no label was added: is a track selected?)")
    start, end = spans[-1]
    select_tracks(pipe, start, end, [t["index"] for t in tracks])
    return Selection(start, end, tracks)


def select_tracks(pipe: AudacityPipe, start: float, end: float, indices: list[int]) -> None:
    """Select [start, end) on exactly these tracks (they need not be adjacent)."""
    for n, i in enumerate(indices):
        pipe.command("Select", Start=float(start), End=float(end), Track=i, TrackCount=1,
                     Mode="Set" if n == 0 else "Add")


def export_window(pipe: AudacityPipe, track: int, start_s: float, end_s: float, path: Path) -> None:
    """Export [start_s, end_s) of one track (stereo WAV at the project rate)."""
    pipe.command("Select", Start=float(start_s), End=float(end_s), Track=track, TrackCount=1, Mode="Set")
    pipe.command("Export2", Filename=str(path), NumChannels=2)
    if not path.exists():
        raise SegueAudacityError(f"Audacity did not write {path}")


@dataclass
class Plan:
    """What to send, and where second 0 of the first input sits on Audacity's timeline."""

    params: list[str]
    audio: list[str]
    origin_s: float
    restore: tuple[float, float, list[int]]


def plan_request(pipe: AudacityPipe, task: str, sel: Selection, workdir: Path, *, context_s: float,
                 duration_s: Optional[float], crossfade_s: Optional[float]) -> Plan:
    stamp = f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    workdir.mkdir(parents=True, exist_ok=True)
    restore = (sel.start_s, sel.end_s, [t["index"] for t in sel.tracks])
    if task == "transition":
        if len(sel.tracks) != 2:
            raise SegueAudacityError("select two tracks (and their overlap as the time range) for a transition")
        a, b = sorted(sel.tracks, key=lambda t: float(t["end"]))
        join = (sel.start_s + sel.end_s) / 2
        xf = crossfade_s if crossfade_s is not None else max(sel.end_s - sel.start_s, 2.5)
        wa = (max(float(a["start"]), join - xf - context_s), min(float(a["end"]), join + xf))
        wb = (max(float(b["start"]), join - xf), min(float(b["end"]), join + xf + context_s))
        pa, pb = workdir / f"segue-{stamp}-a.wav", workdir / f"segue-{stamp}-b.wav"
        export_window(pipe, a["index"], *wa, pa)
        export_window(pipe, b["index"], *wb, pb)
        params = ["--start", f"{join - wa[0]:.6f}", "--b-start", f"{join - wb[0]:.6f}", "--crossfade", f"{xf:.6f}"]
        return Plan(params, [str(pa), str(pb)], wa[0], restore)
    if len(sel.tracks) != 1:
        raise SegueAudacityError(f"select exactly one audio track for {task} (got {len(sel.tracks)})")
    t = sel.tracks[0]
    t_start, t_end = float(t["start"]), float(t["end"])
    path = workdir / f"segue-{stamp}-in.wav"
    if task == "continue":
        cut = sel.end_s if t_start < sel.end_s < t_end else t_end
        w = (max(t_start, cut - context_s), cut)
        export_window(pipe, t["index"], *w, path)
        dur = duration_s if duration_s is not None else (sel.end_s - sel.start_s if sel.end_s > sel.start_s else 4.0)
        return Plan(["--duration", f"{dur:.6f}"], [str(path)], w[0], restore)
    a, b = max(sel.start_s, t_start), min(sel.end_s, t_end)
    if task == "style" and b <= a:
        a, b = t_start, t_end
    if b <= a:
        raise SegueAudacityError("select a time range inside the track")
    w = (max(t_start, a - context_s), min(t_end, b + context_s))
    export_window(pipe, t["index"], *w, path)
    return Plan(["--start", f"{a - w[0]:.6f}", "--end", f"{b - w[0]:.6f}"], [str(path)], w[0], restore)


def client_command() -> list[str]:
    return shlex.split(os.environ.get("SEGUE_CLIENT", "segue-client"))


def run_client(task: str, plan: Plan, extra: list[str], *, timeout_s: float) -> dict:
    cmd = [*client_command(), task, *plan.audio, *plan.params, *extra, "--span", "region", "--json"]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=None, text=True, timeout=timeout_s)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    reply = json.loads(lines[-1]) if lines else {}
    if proc.returncode != 0 or "path" not in reply:
        err = reply.get("error", {})
        raise SegueAudacityError(f"segue-client failed ({proc.returncode}): {err.get('code', '')} {err.get('message', '')}")
    return reply


def placed_clip(src: str, rate: int, position_s: float, dst: Path) -> tuple[Path, int]:
    """The clip at the project's `rate`, preceded by `position_s` of silence, written to `dst`.

    Importing this file puts the clip exactly at `position_s` on a new track named after the file,
    in a single undo step. (Moving and renaming a track afterwards with SetClip/SetTrack would not
    create undo states of their own in Audacity 3.2, and the next Undo would silently revert them.)
    Returns the path and the number of silent samples in front."""
    from pedalboard.io import AudioFile

    from engine.audio_io import resample

    with AudioFile(src) as f:
        audio, src_rate = np.asarray(f.read(f.frames), dtype=np.float32), int(round(f.samplerate))
    audio = resample(audio, src_rate, rate)
    lead = int(round(position_s * rate))
    if lead < 0:
        raise SegueAudacityError(f"the clip would start before the project start ({position_s:.3f} s)")
    dst.parent.mkdir(parents=True, exist_ok=True)
    with AudioFile(str(dst), "w", rate, audio.shape[0], bit_depth=32) as f:
        f.write(np.zeros((audio.shape[0], lead), np.float32))
        f.write(audio)
    return dst, lead


def wav_rate(path: str) -> int:
    from pedalboard.io import AudioFile

    with AudioFile(path) as f:
        return int(round(f.samplerate))


def place(pipe: AudacityPipe, clip: Path) -> int:
    """Import `clip` as a new track (one undo step); returns the new track's index."""
    before = len(pipe.info("Tracks"))
    pipe.command("Import2", Filename=str(clip))
    tracks = pipe.info("Tracks")
    if len(tracks) != before + 1:
        raise SegueAudacityError(f"importing {clip} did not add one track")
    return len(tracks) - 1


def render_selection(task: str, *, workdir: Path, client_args: list[str], context_s: float = 4.0,
                     duration_s: Optional[float] = None, crossfade_s: Optional[float] = None,
                     timeout_s: float = 600.0) -> dict:
    """The whole script: selection -> export -> segue-client -> import at the right place."""
    with AudacityPipe() as pipe:
        sel = read_selection(pipe)
        plan = plan_request(pipe, task, sel, workdir, context_s=context_s, duration_s=duration_s,
                            crossfade_s=crossfade_s)
        reply = run_client(task, plan, client_args, timeout_s=timeout_s)
        project_rate = wav_rate(plan.audio[0])
        position = plan.origin_s + float(reply["offset_s"])
        name = f"Segue {task} {time.strftime('%H%M%S')}"
        clip, lead = placed_clip(reply["path"], project_rate, position, workdir / f"{name}.wav")
        index = place(pipe, clip)
        select_tracks(pipe, *plan.restore)
    return {"track": index, "track_name": name, "position_s": position, "lead_samples": lead, "clip": str(clip),
            "reply": reply, "origin_s": plan.origin_s,
            "project_rate": project_rate, "audio": plan.audio, "params": plan.params}


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description="Render Audacity's selection with Segue.")
    ap.add_argument("task", choices=TASKS)
    ap.add_argument("--preset")
    ap.add_argument("--model")
    ap.add_argument("--reference", help="reference audio (style)")
    ap.add_argument("--steps", type=int)
    ap.add_argument("--seed", type=int)
    ap.add_argument("--strength", type=float)
    ap.add_argument("--duration", type=float, help="continue: seconds to generate")
    ap.add_argument("--crossfade", type=float, help="transition: crossfade seconds (default: the selection)")
    ap.add_argument("--context", type=float, default=4.0, help="seconds of context exported each side")
    ap.add_argument("--timeout", type=float, default=600.0)
    ap.add_argument("--workdir", type=Path,
                    default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "segue" / "audacity",
                    help="where the selection is exported (must be readable by the daemon)")
    args = ap.parse_args(argv)
    extra: list[str] = []
    for opt in ("preset", "model", "reference", "steps", "seed", "strength"):
        v = getattr(args, opt)
        if v is not None:
            extra += [f"--{opt}", str(v)]
    if args.task == "style" and not (args.preset or args.reference):
        ap.error("style needs --preset (see `segue presets list`) or --reference")
    try:
        out = render_selection(args.task, workdir=args.workdir, client_args=extra, context_s=args.context,
                               duration_s=args.duration, crossfade_s=args.crossfade, timeout_s=args.timeout)
    except (AudacityError, SegueAudacityError, subprocess.TimeoutExpired) as e:
        sys.stderr.write(f"segue-audacity: {e}\n")
        return 1
    sys.stdout.write(json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
