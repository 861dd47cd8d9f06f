"""Segue for REAPER (Python ReaScript): render the selected item(s) / time selection with Segue.

Actions → Show action list → New action → Load ReaScript → this file (Python must be enabled in
Preferences → Plug-ins → ReaScript). A dialog asks for the task, preset, steps and seed; the
rendered clip is inserted on a new track, aligned to the selection, as one undo block.

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
                playrate=playrate, source=filename)


def read_selection() -> tuple[Optional[tuple[float, float]], list[Item]]:
    _, _, start, end, _ = _api("RPR_GetSet_LoopTimeRange")(False, False, 0.0, 0.0, False)
    count = _api("RPR_CountSelectedMediaItems")(0)
    items = [read_item(_api("RPR_GetSelectedMediaItem")(0, i)) for i in range(count)]
    return ((start, end) if end > start else None), items


def plan(task: str, time_sel: Optional[tuple[float, float]], items: list[Item], *,
         duration_s: Optional[float] = None) -> tuple[list[str], Item]:
    """segue-client arguments for `task`, and the item whose source timeline `offset_s` refers to."""
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
        return args, a
    if len(items) != 1:
        raise SegueReaperError(f"select exactly one item for {task} (got {len(items)})")
    it = items[0]
    end = it.position + it.length
    if task == "continue":
        cut = time_sel[1] if time_sel and it.position < time_sel[1] < end else end
        dur = duration_s or ((time_sel[1] - cut) if time_sel and time_sel[1] > cut else DEFAULT_DURATION_S)
        return [it.source, "--start", f"{it.source_time(cut):.6f}", "--duration", f"{dur:.6f}"], it
    a, b = (time_sel if time_sel else (it.position, end))
    a, b = max(a, it.position), min(b, end)
    if b <= a:
        raise SegueReaperError("the time selection does not overlap the selected item")
    return [it.source, "--start", f"{it.source_time(a):.6f}", "--end", f"{it.source_time(b):.6f}"], it


def client_command() -> list[str]:
    return shlex.split(os.environ.get("SEGUE_CLIENT", "segue-client"))


def render(task: str, args: list[str], extra: list[str], *, timeout_s: float = 600.0) -> dict:
    cmd = [*client_command(), task, *args, *extra, "--span", "region", "--json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise SegueReaperError(f"segue-client took longer than {timeout_s:.0f} s") from None
    for line in err.splitlines():
        if line.startswith("segue:"):
            _api("RPR_ShowConsoleMsg")(line + "\n")
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    reply = json.loads(lines[-1]) if lines else {}
    if proc.returncode != 0 or "path" not in reply:
        e = reply.get("error", {})
        raise SegueReaperError(f"render failed: {e.get('code', proc.returncode)} {e.get('message', err.strip()[-300:])}")
    return reply


def place(path: str, position: float, label: str) -> None:
    """Insert `path` on a new track at `position`, as one undo block; the edit cursor is restored."""
    cursor = _api("RPR_GetCursorPosition")()
    _api("RPR_Undo_BeginBlock")()
    try:
        _api("RPR_SetEditCurPos")(position, False, False)
        _api("RPR_InsertMedia")(path, 1)  # 1: on a new track
        _api("RPR_SetEditCurPos")(cursor, False, False)
    finally:
        _api("RPR_Undo_EndBlock")(f"Segue {label}", -1)
    _api("RPR_UpdateArrange")()


def ask() -> Optional[dict]:
    """Task, preset, steps, seed and duration from REAPER's input dialog (None if cancelled)."""
    captions = "Task (infill/regenerate/continue/transition/style),Preset,Steps (0: default),Seed,Continue seconds"
    ok, _, _, _, values, _ = _api("RPR_GetUserInputs")("Segue", 5, captions, "infill,,0,0,4", 1024)
    if not ok:
        return None
    task, preset, steps, seed, dur = (v.strip() for v in (values.split(",") + [""] * 5)[:5])
    if task not in TASKS:
        raise SegueReaperError(f"unknown task {task!r}; one of {', '.join(TASKS)}")
    try:
        return {"task": task, "preset": preset or None, "steps": int(steps or 0) or None,
                "seed": int(seed or 0), "duration_s": float(dur) if dur else None}
    except ValueError as e:
        raise SegueReaperError(f"steps, seed and seconds must be numbers ({e})") from None


def run(choice: dict) -> dict:
    """The whole script for one dialog answer; returns what was placed (for the console and tests)."""
    time_sel, items = read_selection()
    args, ref = plan(choice["task"], time_sel, items, duration_s=choice.get("duration_s"))
    extra: list[str] = []
    for key, flag in (("preset", "--preset"), ("steps", "--steps"), ("seed", "--seed"), ("model", "--model")):
        if choice.get(key) is not None:
            extra += [flag, str(choice[key])]
    reply = render(choice["task"], args, extra)
    position = ref.timeline(float(reply["offset_s"]))
    place(reply["path"], position, choice["task"])
    return {"position": position, "reply": reply, "args": args}


def main() -> None:
    try:
        choice = ask()
        if choice is None:
            return
        done = run(choice)
        _api("RPR_ShowConsoleMsg")(f"Segue: placed {done['reply']['path']} at {done['position']:.3f} s\n")
    except SegueReaperError as e:
        _api("RPR_ShowMessageBox")(str(e), "Segue", 0)


if __name__ == "__main__":
    main()
