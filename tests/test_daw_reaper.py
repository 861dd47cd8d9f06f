"""REAPER scripts (Python and Lua ReaScript) against a STAND-IN of the ReaScript API.

REAPER cannot be installed here; `reaper_standin.py` implements exactly the functions the scripts
call, from REAPER's API documentation (see its docstring). Both scripts run unchanged: the Python
one with the stand-in installed as `reaper_python`, the Lua one in Lua 5.4 (lupa) with the stand-in
as its `reaper` table. Renders go through `segue-client` to a real daemon (analytic model).
"""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

import reaper_standin as rs
from daw_support import DAW_SCRIPTS, music, read_wav, write_wav
from daw_support import env, serve  # noqa: F401  (pytest fixtures, used by name)

REAPER = DAW_SCRIPTS / "reaper"
RATE = 48000


def run_python(project: rs.Project) -> rs.Project:
    rs.reset(project)
    sys.modules["reaper_python"] = rs
    sys.path.insert(0, str(REAPER))
    try:
        mod = importlib.reload(importlib.import_module("segue_reaper"))
        mod.main()
    finally:
        sys.path.remove(str(REAPER))
    return project


def run_lua(project: rs.Project) -> rs.Project:
    lupa = pytest.importorskip("lupa.lua54", reason="lupa (pip) runs the Lua ReaScript; see .ci/install_daw.sh")
    rs.reset(project)
    lua = lupa.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().reaper = rs.lua_reaper(lua)
    lua.execute((REAPER / "segue_reaper.lua").read_text())
    return project


RUNNERS = {"python": run_python, "lua": run_lua}


@pytest.fixture(scope="module")
def song(tmp_path_factory) -> str:
    return str(write_wav(tmp_path_factory.mktemp("media") / "song.wav", music(8.0, RATE, seed=7), RATE))


def new_tracks(p: rs.Project, before: int) -> list[rs.MediaItem]:
    return [it for t in p.tracks[before:] for it in t.items]


@pytest.mark.parametrize("lang", RUNNERS)
def test_infill_of_the_time_selection_lands_on_a_new_track_at_the_selection(lang, env, song):
    p = rs.Project(time_selection=(12.0, 13.5), cursor=30.0, user_inputs="infill,,8,4,")
    p.add_item(10.0, 6.0, song, start_offset=1.0)          # plays song.wav [1 s, 7 s) from 10 s
    RUNNERS[lang](p)
    assert p.messages == []
    (cmd,) = p.exec_log if lang == "lua" else [None]
    if cmd is not None:  # the Lua script shells out; the times are in the source file
        assert "--start 3.000000 --end 4.500000" in cmd and "--steps 8 --seed 4" in cmd
    (placed,) = new_tracks(p, 1)
    assert placed.position == pytest.approx(12.0, abs=1e-6)      # 10 + (3.0 - 1.0)
    assert placed.length == pytest.approx(1.5, abs=1e-4)
    clip, rate = read_wav(placed.take.source.filename)
    assert rate == 44100 and clip.shape == (2, int(1.5 * 44100))   # the model's rate; REAPER resamples
    assert p.undo == [{"name": "Segue infill", "changes": [f"insert {placed.take.source.filename} at 12.000000 on track 2"]}]
    assert p.cursor == 30.0 and p.open_blocks == 0
    assert any("100.0%" in m for m in p.console) or lang == "lua"


@pytest.mark.parametrize("lang", RUNNERS)
def test_transition_between_overlapping_items_sits_on_the_join(lang, env, song, tmp_path):
    other = str(write_wav(tmp_path / "other.wav", music(8.0, RATE, seed=8), RATE))
    p = rs.Project(user_inputs="transition,,8,0,")
    p.add_item(0.0, 6.0, song, start_offset=0.5)     # A: timeline [0, 6)
    p.add_item(5.0, 6.0, other, start_offset=1.0)    # B: timeline [5, 11); overlap [5, 6), join 5.5
    RUNNERS[lang](p)
    assert p.messages == []
    (placed,) = new_tracks(p, 2)
    # crossfade max(1.0, 2.5) = 2.5 s centred on the join at 5.5 s: [4.25, 6.75)
    assert placed.position == pytest.approx(4.25, abs=1e-3)
    assert placed.length == pytest.approx(2.5, abs=1e-3)
    assert [u["name"] for u in p.undo] == ["Segue transition"]


@pytest.mark.parametrize("lang", RUNNERS)
def test_continue_starts_at_the_item_end(lang, env, song):
    p = rs.Project(user_inputs="continue,,8,0,1.5")
    p.add_item(2.0, 4.0, song, start_offset=0.25)
    RUNNERS[lang](p)
    assert p.messages == []
    (placed,) = new_tracks(p, 1)
    assert placed.position == pytest.approx(6.0, abs=1e-6) and placed.length == pytest.approx(1.5, abs=1e-3)


@pytest.mark.parametrize("lang", RUNNERS)
@pytest.mark.parametrize("setup, message", [
    (lambda p, song: p.add_item(0.0, 4.0, song, playrate=2.0), "plays at rate 2; Segue needs rate 1"),
    (lambda p, song: p.add_item(20.0, 4.0, song), "the time selection does not overlap the selected item"),
    (lambda p, song: p.add_item(0.0, 4.0, None), "has no active take"),
    (lambda p, song: (p.add_item(0.0, 4.0, song), p.add_item(1.0, 4.0, song)), "select exactly one item for infill (got 2)"),
])
def test_bad_selections_are_explained_and_change_nothing(lang, setup, message, song):
    p = rs.Project(time_selection=(1.0, 2.0), user_inputs="infill,,8,0,")
    setup(p, song)
    n = len(p.tracks)
    RUNNERS[lang](p)
    assert len(p.messages) == 1 and message in p.messages[0]
    assert len(p.tracks) == n and p.undo == [] and p.exec_log == []


@pytest.mark.parametrize("lang", RUNNERS)
def test_a_daemon_error_is_shown_and_nothing_is_inserted(lang, env, song, tmp_path):
    p = rs.Project(time_selection=(1.0, 2.0), user_inputs="infill,no-such-preset,8,0,")
    p.add_item(0.0, 4.0, song)
    RUNNERS[lang](p)
    assert len(p.messages) == 1 and "bad_preset" in p.messages[0] and "no-such-preset" in p.messages[0]
    assert len(p.tracks) == 1 and p.undo == []


@pytest.mark.parametrize("lang", RUNNERS)
def test_cancelling_the_dialog_does_nothing(lang, song):
    p = rs.Project(time_selection=(1.0, 2.0), user_inputs=None)
    p.add_item(0.0, 4.0, song)
    RUNNERS[lang](p)
    assert p.messages == [] and p.undo == [] and len(p.tracks) == 1


@pytest.mark.parametrize("lang", RUNNERS)
def test_a_style_preset_restyles_the_time_selection(lang, env, song):
    p = rs.Project(time_selection=(1.0, 2.0), user_inputs="style,strings-pad,4,0,")
    p.add_item(0.5, 5.0, song, start_offset=0.0)
    RUNNERS[lang](p)
    assert p.messages == []
    (placed,) = new_tracks(p, 1)
    assert placed.position == pytest.approx(1.0, abs=1e-6) and placed.length == pytest.approx(1.0, abs=1e-3)
    import json
    used = json.loads(Path(placed.take.source.filename).with_suffix(".json").read_text())["request"]
    assert used["preset"] == "strings-pad" and used["strength"] == 0.7 and len(used["reference_embedding"]) == 274
