"""A STAND-IN for REAPER's ReaScript API (REAPER itself cannot be installed here).

This is not REAPER. It implements exactly the ReaScript functions the Segue scripts call, with the
signatures and return conventions of REAPER's API documentation (https://www.reaper.fm/sdk/reascript/reascripthelp.html):

- Python (`RPR_*`): functions with output parameters return a tuple of the return value (if any)
  followed by *all* parameters, e.g. `RPR_GetSet_LoopTimeRange(isSet, isLoop, start, end, seek)`
  -> `(isSet, isLoop, start, end, seek)`, `RPR_GetMediaSourceFileName(src, buf, sz)` -> `(src, fn, sz)`,
  `RPR_GetUserInputs(title, n, captions, csv, sz)` -> `(ok, title, n, captions, csv, sz)`.
- Lua (`reaper.*`): output parameters become extra return values, e.g. `reaper.GetSet_LoopTimeRange(...)`
  -> `start, end`; `reaper.GetMediaSourceFileName(src)` -> `filename`; `reaper.GetUserInputs(...)`
  -> `ok, csv`; `reaper.ExecProcess(cmd, timeout)` -> `"<exit code>\\n<output>"`.

The project model is the minimum those functions need: a time selection, the edit cursor, tracks
holding items, each item with takes (start offset, playrate, source file, name; one active), fades,
a constant tempo and time signature (as in REAPER, `bpm` counts quarter notes and the time map
functions count beats of the signature's denominator: bars of `beats_per_bar` such beats from 0), an undo-block log, a console and
message boxes. `InsertMedia(file, 1)` adds a new track with an item at the edit cursor whose length
is the file's duration, as REAPER does; `AddMediaItemToTrack` gives an empty item at 0 whose
position and length the caller sets.
"""
from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from typing import Any, Optional

from pedalboard.io import AudioFile


@dataclass(eq=False)
class Source:
    filename: str


@dataclass(eq=False)
class Take:
    source: Optional[Source]
    start_offset: float = 0.0
    playrate: float = 1.0
    name: str = ""


@dataclass(eq=False)
class MediaItem:
    position: float
    length: float
    takes: list[Take] = field(default_factory=list)
    selected: bool = False
    active: int = 0
    fade_in: float = 0.0
    fade_out: float = 0.0

    @property
    def take(self) -> Optional[Take]:
        """The active take (None for an empty item)."""
        return self.takes[self.active] if self.takes else None


@dataclass(eq=False)
class Track:
    items: list[MediaItem] = field(default_factory=list)


@dataclass
class Project:
    tracks: list[Track] = field(default_factory=list)
    time_selection: tuple[float, float] = (0.0, 0.0)
    cursor: float = 0.0
    undo: list[dict] = field(default_factory=list)      # closed blocks: {"name", "changes"}
    open_blocks: int = 0
    changes: list[str] = field(default_factory=list)    # changes inside the open block
    console: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    user_inputs: Optional[str] = None                   # what the user types into GetUserInputs (None: cancel)
    exec_log: list[str] = field(default_factory=list)
    bpm: float = 120.0
    beats_per_bar: int = 4
    denominator: int = 4

    def add_item(self, position: float, length: float, filename: Optional[str], *, start_offset: float = 0.0,
                 playrate: float = 1.0, selected: bool = True) -> MediaItem:
        takes = [Take(Source(filename), start_offset, playrate)] if filename is not None else []
        item = MediaItem(position, length, takes, selected)
        self.tracks.append(Track([item]))
        return item

    @property
    def beat_s(self) -> float:
        return 60.0 / self.bpm * 4 / self.denominator

    def selected_items(self) -> list[MediaItem]:
        return [it for t in self.tracks for it in t.items if it.selected]

    def record(self, change: str) -> None:
        self.changes.append(change)


P = Project()


def reset(project: Project) -> Project:
    global P
    P = project
    return P


def _file_seconds(path: str) -> float:
    with AudioFile(path) as f:
        return f.frames / f.samplerate


# ---- the API, shared core -------------------------------------------------------------------------

def _loop_range(is_set: bool, start: float, end: float) -> tuple[float, float]:
    if is_set:
        P.time_selection = (start, end)
    return P.time_selection


def _selected(i: int) -> Optional[MediaItem]:
    items = P.selected_items()
    return items[i] if 0 <= i < len(items) else None


def _item_value(item: MediaItem, name: str) -> float:
    return {"D_POSITION": item.position, "D_LENGTH": item.length}[name]


def _take_value(take: Take, name: str) -> float:
    return {"D_STARTOFFS": take.start_offset, "D_PLAYRATE": take.playrate}[name]


def _set_cursor(t: float) -> None:
    P.cursor = float(t)


def _insert_media(path: str, mode: int) -> int:
    if mode & 3 != 1:
        raise NotImplementedError("the stand-in implements InsertMedia mode 1 (new track) only")
    P.tracks.append(Track([MediaItem(P.cursor, _file_seconds(path), [Take(Source(path))])]))
    P.record(f"insert {path} at {P.cursor:.6f} on track {len(P.tracks)}")
    return 1


def _insert_track(index: int, want_defaults: bool) -> None:
    P.tracks.insert(int(index), Track())
    P.record(f"new track {int(index) + 1}")


def _get_track(index: int) -> Optional[Track]:
    return P.tracks[int(index)] if 0 <= int(index) < len(P.tracks) else None


def _add_item(track: Track) -> MediaItem:
    item = MediaItem(0.0, 0.0)
    track.items.append(item)
    P.record(f"new item on track {P.tracks.index(track) + 1}")
    return item


def _add_take(item: MediaItem) -> Take:
    take = Take(None)
    item.takes.append(take)
    return take


def _set_take_source(take: Take, source: Source) -> bool:
    take.source = source
    P.record(f"take source {source.filename}")
    return True


_ITEM_PARMS = {"D_POSITION": "position", "D_LENGTH": "length", "D_FADEINLEN": "fade_in", "D_FADEOUTLEN": "fade_out"}


def _set_item_value(item: MediaItem, name: str, value: float) -> bool:
    setattr(item, _ITEM_PARMS[name], float(value))
    P.record(f"item {name} {float(value):.6f}")
    return True


def _set_take_value(take: Take, name: str, value: float) -> bool:
    setattr(take, {"D_STARTOFFS": "start_offset", "D_PLAYRATE": "playrate"}[name], float(value))
    P.record(f"take {name} {float(value):.6f}")
    return True


def _take_name(take: Take, parm: str, value: str, set_new: bool) -> str:
    if parm != "P_NAME":
        raise NotImplementedError("the stand-in implements the take string P_NAME only")
    if set_new:
        take.name = str(value)
    return take.name


def _set_active_take(take: Take) -> None:
    for t in P.tracks:
        for it in t.items:
            if take in it.takes:
                it.active = it.takes.index(take)
                return
    raise ValueError("SetActiveTake: the take is in no item")


def _time_sig_at(t: float) -> tuple[int, int, float]:
    return P.beats_per_bar, P.denominator, P.bpm


def _time_to_beats(t: float) -> tuple[float, int, int, float, int]:
    """(beats since the bar, bars, beats per bar, all beats, denominator), as TimeMap2_timeToBeats."""
    beats = t / P.beat_s
    bars = int(beats // P.beats_per_bar)
    return beats - bars * P.beats_per_bar, bars, P.beats_per_bar, beats, P.denominator


def _beats_to_time(beats: float, bars: Optional[int]) -> float:
    return ((bars or 0) * P.beats_per_bar + beats) * P.beat_s


def _undo_begin() -> None:
    P.open_blocks += 1


def _undo_end(name: str, flags: int) -> None:
    if P.open_blocks <= 0:
        raise RuntimeError("Undo_EndBlock without Undo_BeginBlock")
    P.open_blocks -= 1
    if P.open_blocks == 0:
        P.undo.append({"name": name, "changes": P.changes})
        P.changes = []


def _exec(cmd: str, timeout_ms: int) -> str:
    P.exec_log.append(cmd)
    timeout = None if timeout_ms == 0 else timeout_ms / 1000
    proc = subprocess.run(["/bin/sh", "-c", cmd], capture_output=True, text=True, timeout=timeout)
    return f"{proc.returncode}\n{proc.stdout}"


# ---- Python ReaScript names ---------------------------------------------------------------------

def RPR_GetSet_LoopTimeRange(isSet, isLoop, startOut, endOut, allowautoseek):
    s, e = _loop_range(bool(isSet), startOut, endOut)
    return (isSet, isLoop, s, e, allowautoseek)


def RPR_CountSelectedMediaItems(proj):
    return len(P.selected_items())


def RPR_GetSelectedMediaItem(proj, selitem):
    return _selected(selitem)


def RPR_GetMediaItemInfo_Value(item, parmname):
    return _item_value(item, parmname)


def RPR_GetActiveTake(item):
    return item.take


def RPR_GetMediaItemTakeInfo_Value(take, parmname):
    return _take_value(take, parmname)


def RPR_GetMediaItemTake_Source(take):
    return take.source


def RPR_GetMediaSourceFileName(source, filenamebuf, filenamebuf_sz):
    return (source, source.filename or "", filenamebuf_sz)


def RPR_GetCursorPosition():
    return P.cursor


def RPR_SetEditCurPos(time, moveview, seekplay):
    _set_cursor(time)


def RPR_InsertMedia(file, mode):
    return _insert_media(file, mode)


def RPR_Undo_BeginBlock():
    _undo_begin()


def RPR_Undo_EndBlock(descchange, extraflags):
    _undo_end(descchange, extraflags)


def RPR_UpdateArrange():
    pass


def RPR_CountTracks(proj):
    return len(P.tracks)


def RPR_InsertTrackAtIndex(idx, wantDefaults):
    _insert_track(idx, wantDefaults)


def RPR_GetTrack(proj, trackidx):
    return _get_track(trackidx)


def RPR_AddMediaItemToTrack(tr):
    return _add_item(tr)


def RPR_AddTakeToMediaItem(item):
    return _add_take(item)


def RPR_PCM_Source_CreateFromFile(filename):
    return Source(filename)


def RPR_SetMediaItemTake_Source(take, source):
    return _set_take_source(take, source)


def RPR_GetMediaSourceLength(source, lengthIsQNOut):
    return (_file_seconds(source.filename), source, False)


def RPR_SetMediaItemInfo_Value(item, parmname, newvalue):
    return _set_item_value(item, parmname, newvalue)


def RPR_SetMediaItemTakeInfo_Value(take, parmname, newvalue):
    return _set_take_value(take, parmname, newvalue)


def RPR_GetSetMediaItemTakeInfo_String(tk, parmname, stringNeedBig, setNewValue):
    return (True, tk, parmname, _take_name(tk, parmname, stringNeedBig, bool(setNewValue)), setNewValue)


def RPR_SetActiveTake(take):
    _set_active_take(take)


def RPR_UpdateItemInProject(item):
    pass


def RPR_TimeMap_GetTimeSigAtTime(proj, time, timesig_numOut, timesig_denomOut, tempoOut):
    return (proj, time, *_time_sig_at(time))


def RPR_TimeMap2_timeToBeats(proj, tpos, measuresOutOptional, cmlOutOptional, fullbeatsOutOptional,
                             cdenomOutOptional):
    beats, bars, cml, full, denom = _time_to_beats(tpos)
    return (beats, proj, tpos, bars, cml, full, denom)


def RPR_TimeMap2_beatsToTime(proj, tpos, measuresInOptional):
    return _beats_to_time(tpos, measuresInOptional)


def RPR_ShowConsoleMsg(msg):
    P.console.append(msg)


def RPR_ShowMessageBox(msg, title, type):
    P.messages.append(msg)
    return 1


def RPR_GetUserInputs(title, num_inputs, captions_csv, retvals_csv, retvals_csv_sz):
    if P.user_inputs is None:
        return (False, title, num_inputs, captions_csv, retvals_csv, retvals_csv_sz)
    return (True, title, num_inputs, captions_csv, P.user_inputs, retvals_csv_sz)


# ---- Lua ReaScript: a `reaper` table -------------------------------------------------------------

def lua_reaper(lua: Any) -> Any:
    """The `reaper` table for a lupa LuaRuntime created with unpack_returned_tuples=True."""
    def get_user_inputs(title, num, captions, defaults):
        return (False, defaults) if P.user_inputs is None else (True, P.user_inputs)

    funcs = {
        "GetSet_LoopTimeRange": lambda isSet, isLoop, s, e, seek: _loop_range(bool(isSet), s, e),
        "CountSelectedMediaItems": lambda proj: len(P.selected_items()),
        "GetSelectedMediaItem": lambda proj, i: _selected(int(i)),
        "GetMediaItemInfo_Value": _item_value,
        "GetActiveTake": lambda item: item.take,
        "GetMediaItemTakeInfo_Value": _take_value,
        "GetMediaItemTake_Source": lambda take: take.source,
        "GetMediaSourceFileName": lambda source: source.filename or "",
        "GetCursorPosition": lambda: P.cursor,
        "SetEditCurPos": lambda t, moveview, seekplay: _set_cursor(t),
        "InsertMedia": lambda file, mode: _insert_media(file, int(mode)),
        "Undo_BeginBlock": _undo_begin,
        "Undo_EndBlock": lambda name, flags: _undo_end(name, int(flags)),
        "UpdateArrange": lambda: None,
        "ShowConsoleMsg": lambda msg: P.console.append(msg),
        "ShowMessageBox": lambda msg, title, kind: P.messages.append(msg) or 1,
        "GetUserInputs": get_user_inputs,
        "ExecProcess": lambda cmd, timeout: _exec(cmd, int(timeout)),
        "CountTracks": lambda proj: len(P.tracks),
        "InsertTrackAtIndex": lambda idx, want: _insert_track(int(idx), bool(want)),
        "GetTrack": lambda proj, idx: _get_track(int(idx)),
        "AddMediaItemToTrack": _add_item,
        "AddTakeToMediaItem": _add_take,
        "PCM_Source_CreateFromFile": lambda fn: Source(fn),
        "SetMediaItemTake_Source": _set_take_source,
        "GetMediaSourceLength": lambda src: (_file_seconds(src.filename), False),
        "SetMediaItemInfo_Value": _set_item_value,
        "SetMediaItemTakeInfo_Value": _set_take_value,
        "GetSetMediaItemTakeInfo_String": lambda tk, parm, value, set_new: (True, _take_name(tk, parm, value, bool(set_new))),
        "SetActiveTake": _set_active_take,
        "UpdateItemInProject": lambda item: None,
        "TimeMap_GetTimeSigAtTime": lambda proj, t: _time_sig_at(t),
        "TimeMap2_timeToBeats": lambda proj, t: _time_to_beats(t),
        "TimeMap2_beatsToTime": lambda proj, beats, bars=None: _beats_to_time(beats, None if bars is None else int(bars)),
    }
    table = lua.table()
    for name, fn in funcs.items():
        table[name] = fn
    return table
