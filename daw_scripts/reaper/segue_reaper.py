"""Segue for REAPER (Python ReaScript): render the selected item(s) / time selection with Segue.

Actions → Show action list → New action → Load ReaScript → this file (Python must be enabled in
Preferences → Plug-ins → ReaScript). A dialog asks for the task, preset, steps, seed, the number
of takes, whether to snap the selection to whole bars and whether a transition keeps its join
points (`--join-search 0`); the rendered takes are inserted as the
takes of one item on a new track, aligned to the selection, as one undo block. A transition also
trims the two source items to its edges (with short fades), in the same undo block.

Reads the selection through the ReaScript API (time selection, selected items, each item's
position, length, active take, take start offset, playrate and source file), so the request names
the item's source file and times inside it; the daemon reads the file at its own rate. The
clip comes back at the model's rate and REAPER resamples it on playback like any other source.
"""
from __future__ import annotations

import json
import os
import shlex
import subprocess
from dataclasses import dataclass
from typing import Optional

try:  # inside REAPER
    from reaper_python import *  # noqa: F401,F403
except ImportError:  # imported by tests with a stand-in installed as `reaper_python`
    pass

TASKS = ("infill", "regenerate", "continue", "transition", "style")
DEFAULT_DURATION_S = 4.0
MIN_CROSSFADE_S = 2.5
EDGE_FADE_S = 0.01      # the short fades where a transition meets the trimmed items (they overlap by this)
NOT_RUNNING = "The Segue daemon is not running: start it with `segue serve` and try again."
NO_CLIENT = ("segue-client was not found on the PATH REAPER sees: set SEGUE_CLIENT to its full command line "
             "(e.g. /home/me/venv/bin/segue-client) before starting REAPER.")


class SegueReaperError(RuntimeError):
    """The selection does not fit the task, or the render failed."""


@dataclass(frozen=True)
class Item:
    """What Segue needs of one media item (seconds on the project timeline / in the source)."""

    position: float
    length: float
    start_offset: float
    playrate: float
    source: str
    handle: object = None     # the MediaItem, for the edits a transition makes

    def source_time(self, t: float) -> float:
        return self.start_offset + (t - self.position) * self.playrate

    def timeline(self, source_s: float) -> float:
        return self.position + (source_s - self.start_offset) / self.playrate


def _api(name: str):
    """A ReaScript function by name, looked up at call time (REAPER injects them as globals)."""
    fn = globals().get(name)
    if fn is None:
        raise SegueReaperError(f"{name} is not available: run this script inside REAPER")
    return fn


def read_item(item) -> Item:
    take = _api("RPR_GetActiveTake")(item)
    if not take:
        raise SegueReaperError("a selected item has no active take")
    src = _api("RPR_GetMediaItemTake_Source")(take)
    filename = _api("RPR_GetMediaSourceFileName")(src, "", 4096)[1]
    if not filename:
        raise SegueReaperError("the selected take has no source file (MIDI or an empty item?)")
    playrate = _api("RPR_GetMediaItemTakeInfo_Value")(take, "D_PLAYRATE")
    if abs(playrate - 1.0) > 1e-9:
        raise SegueReaperError(f"the take plays at rate {playrate:g}; Segue needs rate 1 (glue the item first)")
    return Item(position=_api("RPR_GetMediaItemInfo_Value")(item, "D_POSITION"),
                length=_api("RPR_GetMediaItemInfo_Value")(item, "D_LENGTH"),
                start_offset=_api("RPR_GetMediaItemTakeInfo_Value")(take, "D_STARTOFFS"),
                playrate=playrate, source=filename, handle=item)


def read_selection() -> tuple[Optional[tuple[float, float]], list[Item]]:
    _, _, start, end, _ = _api("RPR_GetSet_LoopTimeRange")(False, False, 0.0, 0.0, False)
    count = _api("RPR_CountSelectedMediaItems")(0)
    items = [read_item(_api("RPR_GetSelectedMediaItem")(0, i)) for i in range(count)]
    return ((start, end) if end > start else None), items


@dataclass(frozen=True)
class Grid:
    """The tempo and meter at a time, and the bar lines around it (seconds on the timeline)."""

    bpm: float
    beats_per_bar: int
    denominator: int
    bar_start: float
    bar_end: float


def grid_at(t: float) -> Grid:
    """REAPER's time map at `t`: tempo and time signature, and the bar `t` lies in."""
    _, _, num, denom, bpm = _api("RPR_TimeMap_GetTimeSigAtTime")(0, t, 0, 0, 0.0)
    measures = int(_api("RPR_TimeMap2_timeToBeats")(0, t, 0, 0, 0.0, 0)[3])
    start = _api("RPR_TimeMap2_beatsToTime")(0, 0.0, measures)
    end = _api("RPR_TimeMap2_beatsToTime")(0, 0.0, measures + 1)
    return Grid(float(bpm), int(num), int(denom), float(start), float(end))


def nearest_bar_line(t: float) -> float:
    g = grid_at(t)
    return g.bar_start if t - g.bar_start <= g.bar_end - t else g.bar_end


def snap_to_bars(a: float, b: float) -> tuple[float, float]:
    """[a, b) moved to the nearest bar lines, at least one bar long."""
    a2, b2 = nearest_bar_line(a), nearest_bar_line(b)
    if b2 <= a2:
        b2 = grid_at(a2).bar_end
    return a2, b2


def tempo_args(ref: Item, at: float) -> list[str]:
    """--bpm and --beat-offset (a bar line, as seconds in the reference item's source) for the engine's beat grid."""
    g = grid_at(at)
    bar, length = g.bar_start, g.bar_end - g.bar_start
    while ref.source_time(bar) < 0:
        bar += length
    return ["--bpm", f"{g.bpm:.6f}", "--beat-offset", f"{ref.source_time(bar):.6f}"]


def plan(task: str, time_sel: Optional[tuple[float, float]], items: list[Item], *,
         duration_s: Optional[float] = None, snap: bool = False,
         join_search_s: Optional[float] = None) -> tuple[list[str], Item]:
    """segue-client arguments for `task`, and the item whose source timeline `offset_s` refers to.

    With `snap`, the range (infill/regenerate/style) moves to the nearest bar lines and a
    continuation lasts whole bars. Every request carries REAPER's tempo at the selection.
    `join_search_s` (transition) bounds how far the engine may move the joins (0: keep them)."""
    args, ref, at = _plan(task, time_sel, items, duration_s, snap, join_search_s)
    return args + tempo_args(ref, at), ref


def _plan(task: str, time_sel: Optional[tuple[float, float]], items: list[Item], duration_s: Optional[float],
          snap: bool, join_search_s: Optional[float] = None) -> tuple[list[str], Item, float]:
    if task == "transition":
        if len(items) != 2:
            raise SegueReaperError("select exactly two items for a transition")
        a, b = sorted(items, key=lambda it: it.position)
        a_end = a.position + a.length
        if b.position > a_end:
            raise SegueReaperError("the two items must overlap (or touch) for a transition")
        join = (b.position + a_end) / 2
        xf = max(a_end - b.position, MIN_CROSSFADE_S)
        args = [a.source, b.source, "--start", f"{a.source_time(join):.6f}",
                "--b-start", f"{b.source_time(join):.6f}", "--crossfade", f"{xf:.6f}"]
        if join_search_s is not None:
            args += ["--join-search", f"{join_search_s:.6f}"]
        return args, a, join
    if len(items) != 1:
        raise SegueReaperError(f"select exactly one item for {task} (got {len(items)})")
    it = items[0]
    end = it.position + it.length
    if task == "continue":
        cut = time_sel[1] if time_sel and it.position < time_sel[1] < end else end
        dur = duration_s or ((time_sel[1] - cut) if time_sel and time_sel[1] > cut else DEFAULT_DURATION_S)
        if snap:
            bar = grid_at(cut)
            length = bar.bar_end - bar.bar_start
            dur = max(round(dur / length), 1) * length
        return [it.source, "--start", f"{it.source_time(cut):.6f}", "--duration", f"{dur:.6f}"], it, cut
    a, b = (time_sel if time_sel else (it.position, end))
    if snap:
        a, b = snap_to_bars(a, b)
    a, b = max(a, it.position), min(b, end)
    if b <= a:
        raise SegueReaperError("the time selection does not overlap the selected item")
    return [it.source, "--start", f"{it.source_time(a):.6f}", "--end", f"{it.source_time(b):.6f}"], it, a


def client_command() -> list[str]:
    return shlex.split(os.environ.get("SEGUE_CLIENT", "segue-client"))


def render(task: str, args: list[str], extra: list[str], *, takes: int = 1, timeout_s: float = 600.0) -> list[dict]:
    """Run segue-client; returns one reply per take (each with path, offset_s, duration_s)."""
    cmd = [*client_command(), task, *args, *extra, "--variations", str(takes), "--span", "region", "--json"]
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    except FileNotFoundError:
        raise SegueReaperError(NO_CLIENT) from None
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise SegueReaperError(f"segue-client took longer than {timeout_s:.0f} s") from None
    for line in err.splitlines():
        if line.startswith("segue:"):
            _api("RPR_ShowConsoleMsg")(line + "\n")
    lines = [ln for ln in out.splitlines() if ln.startswith(("{", "["))]
    reply = json.loads(lines[-1]) if lines else {}
    if proc.returncode == 0 and isinstance(reply, list) and reply and all("path" in r for r in reply):
        return reply
    e = reply.get("error", {}) if isinstance(reply, dict) else {}
    if e.get("code") == "unreachable":
        raise SegueReaperError(NOT_RUNNING)
    if proc.returncode == 127:   # a SEGUE_CLIENT wrapper whose command is missing
        raise SegueReaperError(NO_CLIENT)
    raise SegueReaperError(f"render failed: {e.get('code', proc.returncode)} {e.get('message', err.strip()[-300:])}")


def b_source_at_clip_end(take: dict) -> Optional[float]:
    """The second of B's file that a transition clip's end has reached (segue-client's "transition"
    reply: the engine may have moved the joins and stretched B); None when the reply lacks it."""
    t = take.get("transition")
    v = t.get("b_at_clip_end_s") if isinstance(t, dict) else None
    return float(v) if isinstance(v, (int, float)) else None


def place(paths: list[str], position: float, label: str, trim: Optional[tuple[Item, Item]] = None,
          b_source_s: Optional[float] = None):
    """One item at `position` on a new track whose takes are the rendered files (take 1 active), as
    one undo block. `trim` (transition): A ends at the new item's start and B starts at its end,
    overlapping it by EDGE_FADE_S with fades, so the timeline plays A, the transition, then B. B is
    moved so that at the clip's end it plays `b_source_s` of its source (where the clip's B material
    ended); None keeps B's audio where it was on the timeline.

    Built with AddMediaItemToTrack/AddTakeToMediaItem/PCM_Source_CreateFromFile (no dialog can
    pop up, unlike InsertMedia). Returns the new item."""
    _api("RPR_Undo_BeginBlock")()
    try:
        index = _api("RPR_CountTracks")(0)
        _api("RPR_InsertTrackAtIndex")(index, True)
        item = _api("RPR_AddMediaItemToTrack")(_api("RPR_GetTrack")(0, index))
        length = 0.0
        first = None
        for n, path in enumerate(paths, 1):
            take = _api("RPR_AddTakeToMediaItem")(item)
            src = _api("RPR_PCM_Source_CreateFromFile")(path)
            _api("RPR_SetMediaItemTake_Source")(take, src)
            _api("RPR_GetSetMediaItemTakeInfo_String")(take, "P_NAME", f"Segue {label} take {n}", True)
            length = max(length, _api("RPR_GetMediaSourceLength")(src, False)[0])
            first = first or take
        _api("RPR_SetActiveTake")(first)
        for parm, value in (("D_POSITION", position), ("D_LENGTH", length)):
            _api("RPR_SetMediaItemInfo_Value")(item, parm, value)
        if trim is not None:
            a, b = trim
            for parm, value in (("D_FADEINLEN", EDGE_FADE_S), ("D_FADEOUTLEN", EDGE_FADE_S)):
                _api("RPR_SetMediaItemInfo_Value")(item, parm, value)
            _api("RPR_SetMediaItemInfo_Value")(a.handle, "D_LENGTH", position + EDGE_FADE_S - a.position)
            _api("RPR_SetMediaItemInfo_Value")(a.handle, "D_FADEOUTLEN", EDGE_FADE_S)
            x1 = position + length
            at = b.source_time(x1) if b_source_s is None else b_source_s
            offset = at - EDGE_FADE_S * b.playrate                  # B's new start, in its source
            source_end = b.start_offset + b.length * b.playrate     # B still ends where its material did
            b_take = _api("RPR_GetActiveTake")(b.handle)
            _api("RPR_SetMediaItemInfo_Value")(b.handle, "D_POSITION", x1 - EDGE_FADE_S)
            _api("RPR_SetMediaItemInfo_Value")(b.handle, "D_LENGTH", (source_end - offset) / b.playrate)
            _api("RPR_SetMediaItemTakeInfo_Value")(b_take, "D_STARTOFFS", offset)
            _api("RPR_SetMediaItemInfo_Value")(b.handle, "D_FADEINLEN", EDGE_FADE_S)
            for it in (a.handle, b.handle):
                _api("RPR_UpdateItemInProject")(it)
        _api("RPR_UpdateItemInProject")(item)
    finally:
        _api("RPR_Undo_EndBlock")(f"Segue {label}", -1)
    _api("RPR_UpdateArrange")()
    return item


def ask() -> Optional[dict]:
    """Task, preset, steps, seed, duration, takes, snap and keep-joins from REAPER's input dialog (None: cancelled)."""
    captions = ("Task (infill/regenerate/continue/transition/style),Preset,Steps (0: default),Seed,Continue seconds,"
                "Takes (1-16),Snap to bars (y/n),Transition: keep join points (y/n)")
    ok, _, _, _, values, _ = _api("RPR_GetUserInputs")("Segue", 8, captions, "infill,,0,0,4,1,n,n", 1024)
    if not ok:
        return None
    task, preset, steps, seed, dur, takes, snap, keep = (v.strip() for v in (values.split(",") + [""] * 8)[:8])
    if task not in TASKS:
        raise SegueReaperError(f"unknown task {task!r}; one of {', '.join(TASKS)}")
    try:
        choice = {"task": task, "preset": preset or None, "steps": int(steps or 0) or None,
                  "seed": int(seed or 0), "duration_s": float(dur) if dur else None, "takes": int(takes or 1),
                  "snap": snap.lower() in ("y", "yes", "1"), "keep_joins": keep.lower() in ("y", "yes", "1")}
    except ValueError as e:
        raise SegueReaperError(f"steps, seed, seconds and takes must be numbers ({e})") from None
    if not 1 <= choice["takes"] <= 16:
        raise SegueReaperError(f"takes must be 1 to 16, got {choice['takes']}")
    return choice


def run(choice: dict) -> dict:
    """The whole script for one dialog answer; returns what was placed (for the console and tests)."""
    time_sel, items = read_selection()
    args, ref = plan(choice["task"], time_sel, items, duration_s=choice.get("duration_s"),
                     snap=bool(choice.get("snap")), join_search_s=0.0 if choice.get("keep_joins") else None)
    extra: list[str] = []
    for key, flag in (("preset", "--preset"), ("steps", "--steps"), ("seed", "--seed"), ("model", "--model")):
        if choice.get(key) is not None:
            extra += [flag, str(choice[key])]
    takes = render(choice["task"], args, extra, takes=int(choice.get("takes") or 1))
    position = ref.timeline(float(takes[0]["offset_s"]))
    trim = tuple(sorted(items, key=lambda it: it.position)) if choice["task"] == "transition" else None
    place([t["path"] for t in takes], position, choice["task"], trim, b_source_at_clip_end(takes[0]))
    return {"position": position, "reply": takes[0], "takes": takes, "args": args}


def main() -> None:
    try:
        choice = ask()
        if choice is None:
            return
        done = run(choice)
        _api("RPR_ShowConsoleMsg")(f"Segue: placed {len(done['takes'])} take(s) at {done['position']:.3f} s: "
                                   f"{', '.join(t['path'] for t in done['takes'])}\n")
    except SegueReaperError as e:
        _api("RPR_ShowMessageBox")(str(e), "Segue", 0)


if __name__ == "__main__":
    main()
