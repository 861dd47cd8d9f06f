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

import support.reaper_standin as rs
from support.daw_support import DAW_SCRIPTS, music, read_wav, write_wav
from support.daw_support import env, serve  # noqa: F401  (pytest fixtures, used by name)
from support.transition_loops import b_at_clip_end_s, engine_moved, loops

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
        # REAPER's tempo at the selection (120 BPM, 4/4: bars of 2 s); the bar line at 12 s is 3 s into song.wav
        assert "--bpm 120.000000 --beat-offset 3.000000" in cmd
    (placed,) = new_tracks(p, 1)
    assert placed.position == pytest.approx(12.0, abs=1e-6)      # 10 + (3.0 - 1.0)
    assert placed.length == pytest.approx(1.5, abs=1e-4)
    assert len(placed.takes) == 1 and placed.take.name == "Segue infill take 1"
    clip, rate = read_wav(placed.take.source.filename)
    assert rate == 44100 and clip.shape == (2, int(1.5 * 44100))   # the model's rate; REAPER resamples
    assert [u["name"] for u in p.undo] == ["Segue infill"]           # one undo block for the whole edit
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
    # the request: join in the middle of the overlap (5.5 s), crossfade max(1.0, 2.5) = 2.5 s
    (cmd,) = p.exec_log if lang == "lua" else [None]
    if cmd is not None:
        assert "--start 6.000000 --b-start 1.500000 --crossfade 2.500000" in cmd
    # the clip sits where the engine says, on A's timeline (A plays song.wav from 0.5 s at 0)
    side = sidecar(placed)
    assert placed.position == pytest.approx(side["offset_s"] - 0.5, abs=1e-6)
    assert placed.length == pytest.approx(side["duration_s"], abs=1e-3)
    # it spans the join the engine chose (A's song.wav time, less A's 0.5 s offset), within its
    # search reach of the requested join in the middle of the overlap (5.5 s)
    join = side["prior"]["join_a_s"] - 0.5
    assert placed.position < join < placed.position + placed.length
    assert abs(join - 5.5) <= 4.3
    assert [u["name"] for u in p.undo] == ["Segue transition"]


def sidecar(item: rs.MediaItem) -> dict:
    import json
    return json.loads(Path(item.take.source.filename).with_suffix(".json").read_text())


@pytest.mark.parametrize("lang", RUNNERS)
def test_a_transition_trims_both_items_to_its_edges_in_the_same_undo_block(lang, env, song, tmp_path):
    other = str(write_wav(tmp_path / "other.wav", music(8.0, RATE, seed=8), RATE))
    p = rs.Project(user_inputs="transition,,4,0,")
    a = p.add_item(0.0, 6.0, song, start_offset=0.5)     # A: timeline [0, 6)
    b = p.add_item(5.0, 6.0, other, start_offset=1.0)    # B: timeline [5, 11)
    RUNNERS[lang](p)
    assert p.messages == []
    (placed,) = new_tracks(p, 2)
    x0, x1 = placed.position, placed.position + placed.length      # the transition
    join = sidecar(placed)["prior"]["join_a_s"] - 0.5                # where the engine joined A and B
    assert x0 < join < x1 and abs(join - 5.5) <= 4.3
    fade = 0.01
    # A plays up to the transition (overlapping it by the short fade), then fades out
    assert (a.position, a.length, a.fade_out) == (0.0, pytest.approx(x0 + fade), fade)
    assert a.take.start_offset == 0.5
    # B starts where the transition ends (less the fade), playing on from where the clip's B material
    # ended (the engine may have moved the joins), and still ends where its material ends (other.wav 7 s)
    assert b.position == pytest.approx(x1 - fade) and b.fade_in == fade
    assert b.take.start_offset + fade == pytest.approx(b_at_clip_end_s(sidecar(placed)), abs=0.002)
    assert b.take.start_offset + b.length == pytest.approx(7.0)
    assert (placed.fade_in, placed.fade_out) == (fade, fade)
    (block,) = p.undo
    assert block["name"] == "Segue transition"
    assert f"item D_LENGTH {x0 + fade:.6f}" in block["changes"] and "item D_FADEINLEN 0.010000" in block["changes"]


def _overlapping_loops(tmp_path, case: str, user_inputs: str):
    """A on [0, 8) and B on [6, 14) (playing b.wav from 0.5 s; the join at 7.0); returns (project, B's item)."""
    a_audio, b_audio = loops(case, seconds=9.0, rate=RATE)
    a_file, b_file = (str(write_wav(tmp_path / f"{n}.wav", x, RATE)) for n, x in (("a", a_audio), ("b", b_audio)))
    p = rs.Project(user_inputs=user_inputs)
    p.add_item(0.0, 8.0, a_file, start_offset=0.0)     # A: timeline [0, 8)
    b = p.add_item(6.0, 8.0, b_file, start_offset=0.5)  # B: timeline [6, 14) plays b.wav [0.5, 8.5); join 7.0
    return p, b


@pytest.mark.parametrize("case", ["moved", "stretched"])
@pytest.mark.parametrize("lang", RUNNERS)
def test_when_the_engine_moves_the_joins_b_continues_where_the_clips_b_material_ends(lang, case, env, tmp_path):
    p, b = _overlapping_loops(tmp_path, case, "transition,,4,0,")
    RUNNERS[lang](p)
    assert p.messages == []
    (placed,) = new_tracks(p, 2)
    side = sidecar(placed)
    assert engine_moved(side, 7.0, 1.5)                  # the request was --start 7.0 --b-start 1.5
    if case == "stretched":
        assert abs(side["prior"]["stretch_factor"] - 1.2) < 0.03
    x1, fade = placed.position + placed.length, 0.01
    assert placed.position == pytest.approx(side["offset_s"], abs=1e-6)
    # B begins just before the clip's end and, at the clip's end, plays where the clip's B material ended
    assert b.position == pytest.approx(x1 - fade)
    assert b.take.start_offset + fade == pytest.approx(b_at_clip_end_s(side), abs=0.002)
    assert b.take.start_offset + b.length == pytest.approx(8.5)     # ... and still ends where its material does
    assert [u["name"] for u in p.undo] == ["Segue transition"]


@pytest.mark.parametrize("lang", RUNNERS)
def test_keep_join_points_holds_the_requested_joins_so_b_stays_where_it_was(lang, env, tmp_path):
    """The loops the engine otherwise joins elsewhere ("moved"), with the dialog's "keep join points"
    answered y: the request carries --join-search 0 and B plays on from its own place on the timeline."""
    p, b = _overlapping_loops(tmp_path, "moved", "transition,,4,0,,1,n,y")
    RUNNERS[lang](p)
    assert p.messages == []
    (cmd,) = p.exec_log if lang == "lua" else [None]
    if cmd is not None:
        assert "--start 7.000000 --b-start 1.500000 --crossfade 2.500000 --join-search 0.000000" in cmd
    (placed,) = new_tracks(p, 2)
    side = sidecar(placed)
    assert side["request"]["join_search_s"] == 0
    assert abs(side["prior"]["join_a_s"] - 7.0) < 1e-3, side["prior"]["join_a_s"]
    assert abs(side["prior"]["segments"][1]["source_start_s"] - 1.5) < 1e-3
    assert not engine_moved(side, 7.0, 1.5)
    x1, fade = placed.position + placed.length, 0.01
    assert placed.position == pytest.approx(7.0 - 1.25, abs=1e-6)   # the 2.5 s crossfade centred on the join
    # B starts just before the clip's end and still plays b.wav where it did (timeline 6 s = b.wav 0.5 s)
    assert b.position == pytest.approx(x1 - fade)
    assert b.take.start_offset - (b.position - 6.0) == pytest.approx(0.5, abs=1e-3)
    assert b.take.start_offset + b.length == pytest.approx(8.5)
    assert [u["name"] for u in p.undo] == ["Segue transition"]


@pytest.mark.parametrize("lang", RUNNERS)
def test_variations_become_the_takes_of_one_item(lang, env, song):
    p = rs.Project(time_selection=(1.0, 2.0), user_inputs="infill,,4,20,,3,n")
    p.add_item(0.0, 6.0, song)
    RUNNERS[lang](p)
    assert p.messages == []
    (placed,) = new_tracks(p, 1)
    assert placed.position == pytest.approx(1.0, abs=1e-6) and placed.length == pytest.approx(1.0, abs=1e-4)
    assert [t.name for t in placed.takes] == ["Segue infill take 1", "Segue infill take 2", "Segue infill take 3"]
    assert placed.active == 0
    files = [t.source.filename for t in placed.takes]
    assert len(set(files)) == 3
    import json
    seeds = [json.loads(Path(f).with_suffix(".json").read_text())["seed"] for f in files]
    assert seeds == [20, 21, 22]
    assert [u["name"] for u in p.undo] == ["Segue infill"]


@pytest.mark.parametrize("lang", RUNNERS)
def test_snapping_to_bars_follows_the_projects_tempo_map(lang, env, tmp_path):
    long_song = str(write_wav(tmp_path / "long.wav", music(20.0, RATE, seed=4), RATE))
    bar = 3.5 * 60 / 97                               # 97 BPM (quarter notes) in 7/8: bars of 2.1649 s
    p = rs.Project(time_selection=(8.0, 16.0), user_inputs="infill,,4,0,,1,y", bpm=97.0, beats_per_bar=7,
                   denominator=8)
    p.add_item(5.0, 14.0, long_song)
    RUNNERS[lang](p)
    assert p.messages == []
    (placed,) = new_tracks(p, 1)
    # [8, 16) -> the nearest bar lines, 4 * bar (8.66 s) and 7 * bar (15.15 s)
    assert placed.position == pytest.approx(4 * bar, abs=1e-5)
    assert placed.length == pytest.approx(3 * bar, abs=1e-4)
    import json
    used = json.loads(Path(placed.take.source.filename).with_suffix(".json").read_text())["request"]
    assert used["bpm"] == pytest.approx(97.0)
    # the beat offset is a bar line, as seconds in the item's source (the item starts at 5 s)
    bars_in = (used["beat_offset_s"] + 5.0) / bar
    assert abs(bars_in - round(bars_in)) < 1e-5
    # a continuation with snapping lasts whole bars
    p = rs.Project(user_inputs="continue,,4,0,5,1,y", bpm=97.0, beats_per_bar=7, denominator=8)   # 5 s: 2 bars
    p.add_item(0.0, 6.0, long_song)
    RUNNERS[lang](p)
    (placed,) = new_tracks(p, 1)
    assert placed.length == pytest.approx(2 * bar, abs=1e-3)


@pytest.mark.parametrize("lang", RUNNERS)
def test_a_daemon_that_is_not_running_is_one_sentence_with_the_command_to_start_it(lang, monkeypatch, song):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]                     # nothing listens here
    import os
    monkeypatch.setenv("SEGUE_ENDPOINT", f"tcp://127.0.0.1:{port}")
    monkeypatch.setenv("SEGUE_CLIENT", f"{sys.executable} -m bridge.client")
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parents[1]) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = rs.Project(time_selection=(1.0, 2.0), user_inputs="infill,,4,0,")
    p.add_item(0.0, 4.0, song)
    RUNNERS[lang](p)
    assert p.messages == ["The Segue daemon is not running: start it with `segue serve` and try again."]
    assert len(p.tracks) == 1 and p.undo == []


@pytest.mark.parametrize("lang", RUNNERS)
def test_a_missing_segue_client_names_SEGUE_CLIENT(lang, monkeypatch, song, tmp_path):
    monkeypatch.setenv("SEGUE_CLIENT", str(tmp_path / "no-such-segue-client"))
    p = rs.Project(time_selection=(1.0, 2.0), user_inputs="infill,,4,0,")
    p.add_item(0.0, 4.0, song)
    RUNNERS[lang](p)
    assert len(p.messages) == 1 and "segue-client was not found" in p.messages[0] and "SEGUE_CLIENT" in p.messages[0]
    assert len(p.tracks) == 1 and p.undo == []


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
    from engine.presets import load_preset, preset_to_request_fields
    preset = load_preset("strings-pad")
    assert used["preset"] == "strings-pad"
    expected = preset_to_request_fields(preset)
    assert used["reference_embedding"] == pytest.approx(list(expected["reference_embedding"]))
    assert used["strength"] == expected.get("strength", used["strength"])
