"""Ableton Live script against a STAND-IN of AbletonOSC (Live cannot run here), with real renders."""
from __future__ import annotations

import json
import socket
import sys

import numpy as np
import pytest

from support.abletonosc_standin import Clip, LiveSet, StandInAbletonOSC
from support.daw_support import DAW_SCRIPTS, music, read_wav, write_wav
from support.daw_support import env, serve  # noqa: F401  (pytest fixtures, used by name)
from support.transition_loops import b_at_clip_end_s, engine_moved, loops, sidecar_of

sys.path.insert(0, str(DAW_SCRIPTS / "ableton"))
import segue_live  # noqa: E402

RATE = 44100


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def song(tmp_path) -> tuple[str, np.ndarray]:
    audio = music(7.0, RATE, seed=9)
    return str(write_wav(tmp_path / "loop.wav", audio, RATE)), audio


def run(live: LiveSet, *args: str, capsys) -> tuple[int, dict, str]:
    reply_port = free_udp_port()
    standin = StandInAbletonOSC(live, reply_port)
    try:
        code = segue_live.main([*args, "--port", str(standin.port), "--reply-port", str(reply_port)])
    finally:
        standin.stop()
    out = capsys.readouterr()
    return code, (json.loads(out.out) if out.out.strip() else {}), out.err


def test_infill_inside_the_clip_becomes_a_new_clip_in_the_next_free_slot(env, song, capsys):
    path, audio = song
    live = LiveSet(clips={(1, 0): Clip(path, 0.5, 6.5, name="loop"), (1, 1): Clip(path, 0, 7)},
                   selected=(1, 0))
    code, out, err = run(live, "infill", "--start", "1.5", "--end", "3.0", "--model", "analytic",
                         "--steps", "8", capsys=capsys)
    assert code == 0, err
    # times are seconds in the clip's file: start marker 0.5 + 1.5 = 2.0, + 3.0 = 3.5
    assert out["args"][1:] == ["--start", "2.000000", "--end", "3.500000", "--span", "full",
                               "--bpm", "120.000000", "--beat-offset", "0.500000"]   # the song's tempo, bars from the marker
    assert out["placed_scene"] == 2                    # scene 1 is taken
    placed = live.clips[(1, 2)]
    assert placed.file_path == out["path"] and placed.name == "Segue infill loop"
    rendered, rate = read_wav(out["path"])
    assert rate == RATE and rendered.shape == audio.shape   # the whole file, edited in place
    keep = np.r_[0:int(1.9 * RATE), int(3.6 * RATE):audio.shape[1]]
    np.testing.assert_allclose(rendered[:, keep], audio[:, keep], atol=1e-4)
    gap = slice(int(2.1 * RATE), int(3.4 * RATE))
    assert np.abs(rendered[:, gap] - audio[:, gap]).max() > 0.05   # the selection really changed


def test_without_create_audio_clip_the_file_is_reported_for_dragging(env, song, capsys):
    path, _ = song
    live = LiveSet(clips={(0, 0): Clip(path, 0.0, 7.0)}, create_audio_clip=False)
    code, out, err = run(live, "continue", "--duration", "1.0", "--model", "analytic", "--steps", "4",
                         capsys=capsys)
    assert code == 0, err
    assert out["placed_scene"] is None
    assert f"drag {out['path']} into Live" in err
    assert out["args"][1:4] == ["--start", "7.000000", "--duration"] and out["args"][5] == "--span"
    assert float(out["args"][4]) == 1.0
    assert read_wav(out["path"])[0].shape[1] == 8 * RATE     # clip + continuation
    assert set(live.clips) == {(0, 0)}


@pytest.mark.parametrize("clip, args, message", [
    (Clip("x.wav", 0.0, 4.0, warping=True), ["style", "--preset", "lofi-warm"], "the clip is warped"),
    (Clip("x.wav", 0.0, 4.0, is_audio_clip=False), ["style", "--preset", "lofi-warm"], "is a MIDI clip"),
    (Clip("x.wav", 0.0, 4.0), ["infill"], "infill needs --start and --end"),
    (Clip("x.wav", 1.0, 4.0), ["regenerate", "--start", "2.5", "--end", "3.5"], "outside the clip's markers"),
])
def test_clips_the_live_api_cannot_describe_are_refused(clip, args, message, capsys):
    code, out, err = run(LiveSet(clips={(0, 0): clip}), *args, capsys=capsys)
    assert code == 1 and message in err


def test_no_answer_from_live_is_a_clear_error(capsys):
    port = free_udp_port()
    live = segue_live.AbletonOSC(port=free_udp_port(), reply_port=port, timeout_s=0.5)
    try:
        with pytest.raises(segue_live.LiveError, match="is Live running with the AbletonOSC control surface"):
            segue_live.selected_clip(live)
    finally:
        live.close()


def test_takes_fill_the_next_empty_slots_of_the_track(env, song, capsys):
    path, _ = song
    live = LiveSet(clips={(0, 0): Clip(path, 0.0, 7.0, name="loop"), (0, 2): Clip(path, 0.0, 7.0)}, num_scenes=4)
    code, out, err = run(live, "infill", "--start", "2", "--end", "3", "--model", "analytic", "--steps", "4",
                         "--seed", "30", "--takes", "3", capsys=capsys)
    assert code == 0, err
    assert out["placed_scenes"] == [1, 3, 4]                 # scene 2 is taken; a scene is added for take 3
    assert [live.clips[(0, s)].name for s in (1, 3, 4)] == [f"Segue infill loop take {n}" for n in (1, 2, 3)]
    files = [live.clips[(0, s)].file_path for s in (1, 3, 4)]
    assert files == out["paths"] and len(set(files)) == 3
    seeds = [json.loads(open(f[:-4] + ".json").read())["seed"] for f in files]
    assert seeds == [30, 31, 32]


def test_snap_bars_uses_the_songs_tempo_and_signature(env, song, capsys):
    path, _ = song
    bar = 3.5 * 60 / 97                      # 97 BPM (quarter notes) in 7/8: bars of 2.165 s
    live = LiveSet(clips={(0, 0): Clip(path, 0.25, 7.0, name="loop")}, tempo=97.0, signature_numerator=7,
                   signature_denominator=8)
    code, out, err = run(live, "regenerate", "--start", "1.9", "--end", "4.0", "--snap-bars", "--model", "analytic",
                         "--steps", "4", capsys=capsys)
    assert code == 0, err
    assert out["grid"] == {"bpm": 97.0, "numerator": 7, "denominator": 8, "bar_s": pytest.approx(bar)}
    start, end = float(out["args"][2]), float(out["args"][4])
    # 1.9 s -> 1 bar, 4.0 s -> 2 bars, counted from the start marker at 0.25 s of the file
    assert start == pytest.approx(0.25 + bar, abs=1e-6) and end == pytest.approx(0.25 + 2 * bar, abs=1e-6)
    used = json.loads(open(out["path"][:-4] + ".json").read())["request"]
    assert used["bpm"] == 97.0 and used["beat_offset_s"] == 0.25


def test_a_daemon_that_is_not_running_is_one_sentence(song, capsys, monkeypatch):
    import os
    from pathlib import Path
    monkeypatch.setenv("SEGUE_ENDPOINT", f"tcp://127.0.0.1:{free_udp_port()}")   # nothing listens there
    monkeypatch.setenv("SEGUE_CLIENT", f"{sys.executable} -m bridge.client")
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parents[1]) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    path, _ = song
    code, out, err = run(LiveSet(clips={(0, 0): Clip(path, 0.0, 7.0)}), "continue", "--duration", "1",
                         capsys=capsys)
    assert code == 1
    assert "segue-live: The Segue daemon is not running: start it with `segue serve` and try again." in err


def test_a_missing_segue_client_names_SEGUE_CLIENT(song, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("SEGUE_CLIENT", str(tmp_path / "no-such-client"))
    path, _ = song
    code, out, err = run(LiveSet(clips={(0, 0): Clip(path, 0.0, 7.0)}), "continue", "--duration", "1",
                         capsys=capsys)
    assert code == 1 and "segue-client was not found" in err and "SEGUE_CLIENT" in err


@pytest.mark.parametrize("case", ["moved", "stretched"])
def test_a_transition_moves_the_markers_so_b_continues_where_the_clips_b_material_ends(env, tmp_path, capsys, case):
    a_audio, b_audio = loops(case, seconds=9.0)
    a_file, b_file = (str(write_wav(tmp_path / f"{n}.wav", x, RATE)) for n, x in (("a", a_audio), ("b", b_audio)))
    live = LiveSet(clips={(0, 0): Clip(a_file, 0.0, 8.0, name="A"), (1, 0): Clip(b_file, 2.0, 9.0, name="B")},
                   selected=(0, 0))
    code, out, err = run(live, "transition", "--other", "2", "1", "--model", "builtin", "--steps", "4",
                         capsys=capsys)
    assert code == 0, err
    # the request: A's end marker into B's start marker
    assert out["args"][2:6] == ["--start", "8.000000", "--b-start", "2.000000"]
    side = sidecar_of(out["path"])
    assert engine_moved(side, 8.0, 2.0)
    if case == "stretched":
        assert abs(side["prior"]["stretch_factor"] - 1.2) < 0.03
    assert live.clips[(0, 1)].file_path == out["path"]            # the transition, in A's next slot
    # A now ends where the transition starts; B starts where the clip's B material ended
    assert live.clips[(0, 0)].end_marker == pytest.approx(side["offset_s"], abs=1e-6)
    assert live.clips[(1, 0)].start_marker == pytest.approx(b_at_clip_end_s(side), abs=0.002)
    assert (live.clips[(0, 0)].start_marker, live.clips[(1, 0)].end_marker) == (0.0, 9.0)
    assert out["trimmed"] == {"a_end_marker": live.clips[(0, 0)].end_marker,
                              "b_start_marker": live.clips[(1, 0)].start_marker}


def test_an_abletonosc_without_marker_setters_leaves_a_and_b_as_they_were_and_says_so(env, tmp_path, capsys):
    a_audio, b_audio = loops("moved", seconds=9.0)
    a_file, b_file = (str(write_wav(tmp_path / f"{n}.wav", x, RATE)) for n, x in (("a", a_audio), ("b", b_audio)))
    live = LiveSet(clips={(0, 0): Clip(a_file, 0.0, 8.0), (1, 0): Clip(b_file, 2.0, 9.0)}, selected=(0, 0),
                   markers_rw=False)
    code, out, err = run(live, "transition", "--other", "2", "1", "--model", "builtin", "--steps", "4",
                         capsys=capsys)
    assert code == 0, err
    assert out["trimmed"] is None and "did not take the new clip markers" in err
    assert (live.clips[(0, 0)].end_marker, live.clips[(1, 0)].start_marker) == (8.0, 2.0)
    assert live.clips[(0, 1)].file_path == out["path"]             # the transition is placed all the same


def test_keep_joins_holds_the_requested_joins_at_the_markers(env, tmp_path, capsys):
    """The loops the engine otherwise joins elsewhere ("moved"), with `--keep-joins`: the request carries
    --join-search 0, the joins stay at A's end marker and B's start marker, and B's start marker moves
    only past the clip's own B material (as far past the join in B as the clip's end is past it in A)."""
    a_audio, b_audio = loops("moved", seconds=9.0)
    a_file, b_file = (str(write_wav(tmp_path / f"{n}.wav", x, RATE)) for n, x in (("a", a_audio), ("b", b_audio)))
    live = LiveSet(clips={(0, 0): Clip(a_file, 0.0, 8.0, name="A"), (1, 0): Clip(b_file, 2.0, 9.0, name="B")},
                   selected=(0, 0))
    code, out, err = run(live, "transition", "--other", "2", "1", "--keep-joins", "--model", "builtin",
                         "--steps", "4", capsys=capsys)
    assert code == 0, err
    assert out["args"][2:8] == ["--start", "8.000000", "--b-start", "2.000000", "--join-search", "0.000000"]
    side = sidecar_of(out["path"])
    assert side["request"]["join_search_s"] == 0
    assert abs(side["prior"]["join_a_s"] - 8.0) < 1e-3, side["prior"]["join_a_s"]
    assert abs(side["prior"]["segments"][1]["source_start_s"] - 2.0) < 1e-3
    assert not engine_moved(side, 8.0, 2.0)
    assert side["offset_s"] == pytest.approx(8.0 - 1.25, abs=1e-6)        # the 2.5 s crossfade centred on the join
    assert live.clips[(0, 1)].file_path == out["path"]
    assert live.clips[(0, 0)].end_marker == pytest.approx(side["offset_s"], abs=1e-6)
    clip_end = side["offset_s"] + side["duration_s"]
    assert live.clips[(1, 0)].start_marker == pytest.approx(2.0 + clip_end - 8.0, abs=1e-3)
    assert (live.clips[(0, 0)].start_marker, live.clips[(1, 0)].end_marker) == (0.0, 9.0)
