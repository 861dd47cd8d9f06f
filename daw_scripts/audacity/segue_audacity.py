"""Segue for Audacity: render the current selection through the Segue daemon and import the result.

    python segue_audacity.py infill|regenerate|style [--preset P] [--steps N] [--seed N] [--model M]
    python segue_audacity.py continue --duration 4
    python segue_audacity.py transition          (two tracks selected; the time selection is the overlap)
    python segue_audacity.py transition --keep-joins   (join exactly at the overlap's middle: --join-search 0)
    python segue_audacity.py infill --takes 3    (three variations, one new track each)
    python segue_audacity.py infill --bpm 97 --meter 7/8 --snap-bars   (the range on whole bars)

Audacity must be running with mod-script-pipe enabled, and `segue serve` too. The script

1. reads the time selection (Audacity has no query for it: AddLabel, GetInfo Labels, Undo) and the
   selected wave tracks (GetInfo Tracks);
2. exports the selection plus up to `--context` seconds each side from the selected track
   (Export2 of a selection, at the project rate) into `--workdir`;
3. runs `segue-client ... --span region --json` (progress on this script's stderr);
4. converts the clip to the project rate, puts `window start + offset_s` of silence in front of it
   and imports that (Import2): a new track "Segue <task> <time>" with the clip exactly at the
   selection, as one undo step (one track, and one undo step, per take). A transition's track
   holds A up to the transition, the transition and B after it, with short fades; A and B are
   muted in the same undo step, so the project plays A, the transition, then B. B's part starts
   where the clip's B material ended (the engine may move the joins and stretch B; segue-client's
   reply says where), and plays on at B's own tempo.

Progress is printed on this terminal; Ctrl-C cancels the job in the daemon and places nothing.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import signal
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
EDGE_FADE_S = 0.01      # where a transition meets A and B: the parts overlap by this, with linear fades
NOT_RUNNING = "The Segue daemon is not running: start it with `segue serve` and try again."
NO_CLIENT = ("segue-client was not found on the PATH: set SEGUE_CLIENT to its full command line "
             "(e.g. SEGUE_CLIENT=\"/home/me/venv/bin/segue-client\").")


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
    tracks: tuple[dict, ...] = ()      # transition: the A and B tracks (for the play-through track)
    b_origin_s: float = 0.0            # transition: where second 0 of B's input sits on the timeline


@dataclass(frozen=True)
class Meter:
    """A tempo and time signature the user gives (Audacity has no tempo map); bars count from 0 s."""

    bpm: float
    numerator: int = 4
    denominator: int = 4

    @property
    def bar_s(self) -> float:
        return self.numerator * 4 / self.denominator * 60.0 / self.bpm   # bpm counts quarter notes

    @classmethod
    def parse(cls, bpm: float, meter: str) -> "Meter":
        try:
            num, den = (int(x) for x in meter.split("/"))
        except ValueError:
            raise SegueAudacityError(f"--meter must look like 7/8, got {meter!r}") from None
        if num < 1 or den not in (1, 2, 4, 8, 16, 32):
            raise SegueAudacityError(f"--meter {meter!r}: the numerator must be positive, the denominator a power of two")
        return cls(float(bpm), num, den)

    def snap(self, start: float, end: float) -> tuple[float, float]:
        """[start, end) moved to the nearest bar lines, at least one bar long."""
        a, b = round(start / self.bar_s) * self.bar_s, round(end / self.bar_s) * self.bar_s
        return a, max(b, a + self.bar_s)


def plan_request(pipe: AudacityPipe, task: str, sel: Selection, workdir: Path, *, context_s: float,
                 duration_s: Optional[float], crossfade_s: Optional[float],
                 join_search_s: Optional[float] = None) -> Plan:
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
        if join_search_s is not None:
            params += ["--join-search", f"{join_search_s:.6f}"]
        return Plan(params, [str(pa), str(pb)], wa[0], restore, (a, b), wb[0])
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


class Cancelled(SegueAudacityError):
    """Ctrl-C: segue-client cancelled the job in the daemon; nothing was placed."""


def run_client(task: str, plan: Plan, extra: list[str], *, timeout_s: float, takes: int = 1) -> list[dict]:
    """Run segue-client with its progress on this terminal; one reply per take.

    Ctrl-C reaches segue-client too (same terminal): it cancels the job in the daemon and exits;
    this waits for that, then raises `Cancelled`."""
    cmd = [*client_command(), task, *plan.audio, *plan.params, *extra, "--variations", str(takes),
           "--span", "region", "--json"]
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=None, text=True)
    except FileNotFoundError:
        raise SegueAudacityError(NO_CLIENT) from None
    try:
        out, _ = proc.communicate(timeout=timeout_s)
    except KeyboardInterrupt:
        proc.wait(30)
        raise Cancelled("cancelled: the job was cancelled in the daemon and nothing was placed") from None
    except subprocess.TimeoutExpired:
        proc.send_signal(2)   # SIGINT: segue-client cancels the job, then exits
        proc.wait(30)
        raise
    lines = [ln for ln in out.splitlines() if ln.startswith(("{", "["))]
    reply = json.loads(lines[-1]) if lines else {}
    if proc.returncode == 0 and isinstance(reply, list) and reply and all("path" in r for r in reply):
        return reply
    err = reply.get("error", {}) if isinstance(reply, dict) else {}
    if err.get("code") == "unreachable":
        raise SegueAudacityError(NOT_RUNNING)
    if proc.returncode == 127:
        raise SegueAudacityError(NO_CLIENT)
    raise SegueAudacityError(f"segue-client failed ({proc.returncode}): {err.get('code', '')} {err.get('message', '')}")


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


def read_at(path: str, rate: int) -> np.ndarray:
    """A WAV as float32 (channels, n) at `rate` (the project's)."""
    from pedalboard.io import AudioFile

    from engine.audio_io import resample

    with AudioFile(path) as f:
        audio, src_rate = np.asarray(f.read(f.frames), dtype=np.float32), int(round(f.samplerate))
    return resample(audio, src_rate, rate)


@dataclass
class PlayThrough:
    """A's audio up to a transition and B's after it, at the project rate (exported before muting:
    Audacity exports muted tracks as silence)."""

    a0: int                 # project sample where A's part starts
    part_a: np.ndarray
    b0: int                 # project sample where B's part starts
    part_b: np.ndarray


def b_source_at_clip_end(reply: dict, plan: Plan, position_s: float, duration_s: float) -> float:
    """The second of B's input that a transition clip's end has reached: segue-client's "transition"
    reply (the engine may have moved the joins and stretched B), else the requested joins."""
    t = reply.get("transition")
    if isinstance(t, dict) and isinstance(t.get("b_at_clip_end_s"), (int, float)):
        return float(t["b_at_clip_end_s"])
    return position_s + duration_s - plan.b_origin_s


def export_play_through(pipe: AudacityPipe, plan: Plan, rate: int, position_s: float, duration_s: float,
                        workdir: Path, b_source_s: Optional[float] = None) -> PlayThrough:
    """A's part ends EDGE_FADE_S after the transition starts; B's starts EDGE_FADE_S before it ends,
    with the audio B has `b_source_s` into its input at the clip's end (B continues the clip's B
    material; None: B's audio where it is on the timeline). B plays on at its own tempo."""
    a, b = plan.tracks
    fade = EDGE_FADE_S
    a0, b_start, b1 = float(a["start"]), float(b["start"]), float(b["end"])
    stamp = f"segue-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    paths = workdir / f"{stamp}-through-a.wav", workdir / f"{stamp}-through-b.wav"
    x0, x1 = position_s, position_s + duration_s
    from_s = (x1 if b_source_s is None else plan.b_origin_s + b_source_s) - fade   # on B's track, before the edit
    export_window(pipe, a["index"], a0, x0 + fade, paths[0])
    export_window(pipe, b["index"], max(from_s, b_start), b1, paths[1])
    part_b = read_at(str(paths[1]), rate)
    if from_s < b_start:     # B has no audio that early: silence up to its start
        part_b = np.concatenate([np.zeros((part_b.shape[0], int(round((b_start - from_s) * rate))), np.float32),
                                 part_b], axis=1)
    out = PlayThrough(int(round(a0 * rate)), read_at(str(paths[0]), rate), int(round((x1 - fade) * rate)), part_b)
    for p in paths:
        p.unlink(missing_ok=True)
    return out


def play_through_clip(parts: PlayThrough, take: str, rate: int, position_s: float, dst: Path) -> tuple[Path, int]:
    """A transition that plays: A up to the transition, the transition, B after it, on one timeline.

    The parts overlap by EDGE_FADE_S with linear fades (A out, the transition in and out, B in).
    Written like `placed_clip` (silence up to A's start). Returns the path and the silent samples."""
    clip = read_at(take, rate)
    if clip.shape[0] == 1:
        clip = np.repeat(clip, 2, axis=0)
    x0 = int(round(position_s * rate))
    fade = max(int(round(EDGE_FADE_S * rate)), 1)
    ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
    part_a, part_b = parts.part_a.copy(), parts.part_b.copy()
    part_a[:, -fade:] *= ramp[::-1]
    part_b[:, :fade] *= ramp
    clip[:, :fade] *= ramp
    clip[:, -fade:] *= ramp[::-1]
    a0 = parts.a0
    end = max(x0 + clip.shape[1], parts.b0 + part_b.shape[1])
    out = np.zeros((2, end - a0), np.float32)
    for start, audio in ((a0, part_a), (x0, clip), (parts.b0, part_b)):
        out[:, start - a0:start - a0 + audio.shape[1]] += audio[:2] if audio.shape[0] >= 2 else audio[[0, 0]]
    dst.parent.mkdir(parents=True, exist_ok=True)
    from pedalboard.io import AudioFile
    with AudioFile(str(dst), "w", rate, 2, bit_depth=32) as f:
        f.write(np.zeros((2, a0), np.float32))
        f.write(out)
    return dst, a0


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


def mute(pipe: AudacityPipe, tracks: tuple[dict, ...]) -> None:
    """Mute tracks without an undo state of their own: the next import's undo state includes it,
    so one Undo takes back the import and the mute together."""
    for t in tracks:   # SetTrack acts on the selected tracks (its Track= is not honoured in 3.2)
        pipe.command("SelectTracks", Track=int(t["index"]), TrackCount=1, Mode="Set")
        pipe.command("SetTrack", Mute=True)


def render_selection(task: str, *, workdir: Path, client_args: list[str], context_s: float = 4.0,
                     duration_s: Optional[float] = None, crossfade_s: Optional[float] = None,
                     join_search_s: Optional[float] = None, timeout_s: float = 600.0, takes: int = 1,
                     meter: Optional[Meter] = None, snap_bars: bool = False) -> dict:
    """The whole script: selection -> export -> segue-client -> import at the right place.

    With `meter` the request carries --bpm (bars counted from 0 s: --beat-offset is the bar line
    at or before the exported window); `snap_bars` moves the range to whole bars first."""
    with AudacityPipe() as pipe:
        sel = read_selection(pipe)
        if snap_bars:
            if meter is None:
                raise SegueAudacityError("--snap-bars needs --bpm (and --meter): Audacity has no tempo map")
            start, end = meter.snap(sel.start_s, sel.end_s)
            sel = Selection(start, end, sel.tracks)
        plan = plan_request(pipe, task, sel, workdir, context_s=context_s, duration_s=duration_s,
                            crossfade_s=crossfade_s, join_search_s=join_search_s)
        extra = list(client_args)
        if meter is not None:
            first_bar = math.ceil(plan.origin_s / meter.bar_s - 1e-9) * meter.bar_s   # a bar line in the window
            extra += ["--bpm", f"{meter.bpm:.6f}", "--beat-offset", f"{first_bar - plan.origin_s:.6f}"]
        replies = run_client(task, plan, extra, timeout_s=timeout_s, takes=takes)
        project_rate = wav_rate(plan.audio[0])
        position = plan.origin_s + float(replies[0]["offset_s"])
        stamp = time.strftime('%H%M%S')
        placed = []
        if task == "transition":
            duration = float(replies[0]["duration_s"])
            parts = export_play_through(pipe, plan, project_rate, position, duration, workdir,
                                        b_source_at_clip_end(replies[0], plan, position, duration))
            mute(pipe, plan.tracks)
        for n, reply in enumerate(replies, 1):
            name = f"Segue {task} {stamp}" + (f" take {n}" if len(replies) > 1 else "")
            if task == "transition":
                clip, lead = play_through_clip(parts, reply["path"], project_rate, position, workdir / f"{name}.wav")
            else:
                clip, lead = placed_clip(reply["path"], project_rate, position, workdir / f"{name}.wav")
            placed.append({"track": place(pipe, clip), "track_name": name, "lead_samples": lead, "clip": str(clip),
                           "reply": reply})
        select_tracks(pipe, *plan.restore)
    first = placed[0]
    return {**first, "position_s": position, "origin_s": plan.origin_s, "takes": placed,
            "project_rate": project_rate, "audio": plan.audio, "params": plan.params, "extra": extra}


def main(argv: Optional[list[str]] = None) -> int:
    # Ctrl-C is the cancel; a launcher that ignored SIGINT (nohup, a background job) must not swallow it.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
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
    joins = ap.add_mutually_exclusive_group()
    joins.add_argument("--join-search", type=float,
                       help="transition: how far (s) the engine may move each join to find matching beats (default 4)")
    joins.add_argument("--keep-joins", action="store_true", help="transition: keep the join points (--join-search 0)")
    ap.add_argument("--context", type=float, default=4.0, help="seconds of context exported each side")
    ap.add_argument("--timeout", type=float, default=600.0)
    ap.add_argument("--takes", type=int, default=1, help="variations to render (1-16), one new track each")
    ap.add_argument("--bpm", type=float, help="the project's tempo (quarter notes per minute): a beat-grid hint")
    ap.add_argument("--meter", default="4/4", help="time signature for --snap-bars (default 4/4)")
    ap.add_argument("--snap-bars", action="store_true", help="move the time selection to whole bars (needs --bpm)")
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
        meter = Meter.parse(args.bpm, args.meter) if args.bpm is not None else None
        out = render_selection(args.task, workdir=args.workdir, client_args=extra, context_s=args.context,
                               duration_s=args.duration, crossfade_s=args.crossfade,
                               join_search_s=0.0 if args.keep_joins else args.join_search, timeout_s=args.timeout,
                               takes=args.takes, meter=meter, snap_bars=args.snap_bars)
    except Cancelled as e:
        sys.stderr.write(f"segue-audacity: {e}\n")
        return 130
    except (AudacityError, SegueAudacityError, subprocess.TimeoutExpired) as e:
        sys.stderr.write(f"segue-audacity: {e}\n")
        return 1
    sys.stdout.write(json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
