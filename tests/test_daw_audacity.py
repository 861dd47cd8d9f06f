"""Audacity end to end: real Audacity 3.2 under Xvfb, mod-script-pipe, the Segue script, the daemon.

A 48 kHz project (the model runs at 44.1 kHz) gets a clip; a time range is selected; the script
reads the selection, exports it with context, renders through `segue-client` and a running daemon,
and imports the result as a new track at the selection. Audacity's own export of that track is
then checked sample by sample.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from support.daw_support import DAW_SCRIPTS, ServeProcess, best_lag, fft_resample, music, read_wav, write_wav
from support.daw_support import serve  # noqa: F401  (a pytest fixture, used by name)
from support.transition_loops import b_at_clip_end_s, engine_moved, loops, sidecar_of

AUDACITY = DAW_SCRIPTS / "audacity"
sys.path.insert(0, str(AUDACITY))
from audacity_pipe import MODULE_SO, AudacityPipe, launch_headless  # noqa: E402

pytestmark = pytest.mark.skipif(
    shutil.which("audacity") is None or shutil.which("Xvfb") is None or not os.path.exists(MODULE_SO),
    reason="Audacity with mod-script-pipe and Xvfb are not installed; run .ci/install_daw.sh "
           "(Debian packages `audacity`, `xvfb`)")
RATE = 48000


@pytest.fixture(scope="module")
def audacity(tmp_path_factory):
    inst = launch_headless(tmp_path_factory.mktemp("audacity-home"))
    yield inst
    inst.stop()


def run_script(serve: ServeProcess, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(AUDACITY / "segue_audacity.py"), *args], capture_output=True,
                          text=True, timeout=300, env=serve.env)


def export_track(pipe: AudacityPipe, track: int, seconds: float, path: Path) -> np.ndarray:
    pipe.command("Select", Start=0.0, End=seconds, Track=track, TrackCount=1, Mode="Set")
    pipe.command("Export2", Filename=str(path), NumChannels=2)
    audio, rate = read_wav(path)
    assert rate == RATE
    return audio


def test_infill_of_the_selection_comes_back_as_a_track_at_the_selection(tmp_path, audacity, serve):
    src = music(7.0, RATE, seed=5)
    write_wav(tmp_path / "song.wav", src, RATE)
    with AudacityPipe() as pipe:
        pipe.command("Import2", Filename=str(tmp_path / "song.wav"))
        pipe.command("Select", Start=2.0, End=3.5, Track=0, TrackCount=1, Mode="Set")

    done = run_script(serve, "infill", "--model", "builtin", "--steps", "8", "--seed", "2",
                      "--workdir", str(tmp_path / "work"))
    assert done.returncode == 0, done.stderr
    assert "segue: 100.0%" in done.stderr  # the client's progress reached the user
    import json
    out = json.loads(done.stdout)
    assert out["project_rate"] == RATE and out["reply"]["sample_rate"] == 44100
    assert out["params"] == ["--start", "2.000000", "--end", "3.500000"]  # 4 s context clamped at 0
    assert out["position_s"] == pytest.approx(2.0, abs=1e-9) and out["lead_samples"] == 2 * RATE

    with AudacityPipe() as pipe:
        names = [t["name"] for t in pipe.info("Tracks")]
        assert names[0] == "song" and names[1] == out["track_name"] and names[1].startswith("Segue infill ")
        assert len(names) == 2
        assert pipe.info("Clips")[1]["end"] == pytest.approx(3.5, abs=1 / RATE)
        # the user's selection is back where it was
        from segue_audacity import read_selection
        sel = read_selection(pipe)
        assert (sel.start_s, sel.end_s) == pytest.approx((2.0, 3.5), abs=1e-6)
        assert [t["name"] for t in pipe.info("Tracks")] == names  # the label was undone, nothing else
        original = export_track(pipe, 0, 7.0, tmp_path / "orig.wav")
        new = export_track(pipe, 1, 7.0, tmp_path / "new.wav")

    np.testing.assert_allclose(original, src, atol=1e-6)  # the source track is untouched (float export)
    a, b = 2 * RATE, int(3.5 * RATE)
    assert new.shape[1] == b  # Audacity exports up to the end of the selected audio: the clip ends at 3.5 s
    assert np.abs(new[:, :a]).max() == 0
    clip, rate = read_wav(out["reply"]["path"])
    assert rate == 44100 and clip.shape[1] == int(1.5 * 44100)
    expected = fft_resample(clip, 44100, RATE)
    lag, corr = best_lag(expected[0, 1000:-1000], new[0, a + 1000:b - 1000], max_lag=10)
    assert lag == 0 and corr > 0.99, (lag, corr)
    assert np.sqrt(np.mean(new[:, a:b] ** 2)) > 0.01
    # the clip starts with the original blended in (the engine's seam): right at the selection start the
    # new track repeats the old one (the 48 -> 44.1 -> 48 kHz round trip lags it by under a sample)
    lag, corr = best_lag(original[0, a + 10:a + 210], new[0, a + 10:a + 210], max_lag=40)
    assert lag in (0, -1) and corr > 0.8, (lag, corr)


def test_a_selection_outside_every_track_is_refused_without_changes(tmp_path, audacity, serve):
    with AudacityPipe() as pipe:
        n = len(pipe.info("Tracks"))
        pipe.command("Select", Start=20.0, End=21.0, Track=0, TrackCount=1, Mode="Set")
    done = run_script(serve, "infill", "--model", "analytic", "--workdir", str(tmp_path / "work"))
    assert done.returncode == 1
    assert "select a time range inside the track" in done.stderr
    with AudacityPipe() as pipe:
        assert len(pipe.info("Tracks")) == n


def test_a_stopped_daemon_and_a_missing_client_are_one_sentence_each(tmp_path, audacity, serve):
    import socket
    with AudacityPipe() as pipe:
        n = len(pipe.info("Tracks"))
        pipe.command("Select", Start=1.0, End=2.0, Track=0, TrackCount=1, Mode="Set")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]                     # nothing listens here
    env = dict(serve.env, SEGUE_ENDPOINT=f"tcp://127.0.0.1:{port}")
    done = subprocess.run([sys.executable, str(AUDACITY / "segue_audacity.py"), "infill", "--workdir",
                           str(tmp_path / "work")], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 1
    assert done.stderr.strip().endswith("The Segue daemon is not running: start it with `segue serve` and try again.")
    env = dict(serve.env, SEGUE_CLIENT=str(tmp_path / "no-such-client"))
    done = subprocess.run([sys.executable, str(AUDACITY / "segue_audacity.py"), "infill", "--workdir",
                           str(tmp_path / "work")], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 1 and "segue-client was not found" in done.stderr and "SEGUE_CLIENT" in done.stderr
    with AudacityPipe() as pipe:
        assert len(pipe.info("Tracks")) == n


def test_continue_and_transition_place_their_clips_where_the_engine_says(tmp_path, audacity, serve):
    import json

    a = music(5.0, RATE, seed=11)
    b = np.concatenate([np.zeros((2, 4 * RATE), np.float32), music(5.0, RATE, seed=12)], axis=1)
    write_wav(tmp_path / "first.wav", a, RATE)
    write_wav(tmp_path / "second.wav", b, RATE)   # sound from 4 s: 1 s over the first track
    # (not SetClip: moves made through the pipe have no undo state, and the script's Undo would revert them)
    with AudacityPipe() as pipe:
        pipe.command("SelectAll")
        pipe.command("RemoveTracks")
        pipe.command("Import2", Filename=str(tmp_path / "first.wav"))
        pipe.command("Import2", Filename=str(tmp_path / "second.wav"))
        # continue: the range ends at the track end (5 s), so the continuation starts there
        pipe.command("Select", Start=4.0, End=5.0, Track=0, TrackCount=1, Mode="Set")
    done = run_script(serve, "continue", "--duration", "1.0", "--model", "analytic", "--steps", "4",
                      "--workdir", str(tmp_path / "work"))
    assert done.returncode == 0, done.stderr
    cont = json.loads(done.stdout)
    assert cont["params"] == ["--duration", "1.000000"] and cont["position_s"] == pytest.approx(5.0, abs=1e-9)
    assert cont["lead_samples"] == 5 * RATE

    with AudacityPipe() as pipe:   # transition: both tracks, the overlap [4, 5) selected
        pipe.command("Select", Start=4.0, End=5.0, Track=0, TrackCount=2, Mode="Set")
    done = run_script(serve, "transition", "--model", "analytic", "--steps", "4", "--context", "1.0",
                      "--workdir", str(tmp_path / "work"))
    assert done.returncode == 0, done.stderr
    tr = json.loads(done.stdout)
    # join 4.5 s, crossfade max(1 s, 2.5 s): A exported from 4.5 - 2.5 - 1 = 1.0 s, clip at 4.5 - 1.25
    assert tr["origin_s"] == pytest.approx(1.0) and tr["position_s"] == pytest.approx(3.25, abs=1e-6)
    assert tr["params"] == ["--start", "3.500000", "--b-start", "2.500000", "--crossfade", "2.500000"]
    with AudacityPipe() as pipe:
        clips = pipe.info("Clips")
        tracks = pipe.info("Tracks")
    # the continuation ends at 5 + 1 s; the transition's track plays through to B's end (9 s)
    assert [round(c["end"], 4) for c in clips[2:]] == [6.0, 9.0]
    # A and B are muted: the new track plays A up to the transition, the transition, then B
    assert [bool(t.get("mute")) for t in tracks] == [True, True, False, False]
    x0 = int(round(tr["position_s"] * RATE))
    clip, _ = read_wav(tr["reply"]["path"])
    x1 = x0 + int(round(clip.shape[1] * RATE / 44100))
    with AudacityPipe() as pipe:
        through = export_track(pipe, 3, 9.0, tmp_path / "through.wav")
    fade = int(0.01 * RATE)
    np.testing.assert_allclose(through[:, :x0 - 10], a[:, :x0 - 10], atol=1e-5)            # A, untouched
    np.testing.assert_allclose(through[:, x1 + fade + 10:], b[:, x1 + fade + 10:], atol=1e-5)   # then B
    expected = fft_resample(clip, 44100, RATE)
    lag, corr = best_lag(expected[0, 1000:-1000], through[0, x0 + 1000:x1 - 1000], max_lag=10)
    assert lag == 0 and corr > 0.99, (lag, corr)                                          # the transition between
    assert np.abs(through[:, x0 - 10:x0 + fade + 10]).max() < 2.0                          # a fade, not a jump in level
    # one Undo takes back the track and the mutes together
    with AudacityPipe() as pipe:
        pipe.command("Undo")
        tracks = pipe.info("Tracks")
    assert len(tracks) == 3 and not any(t.get("mute") for t in tracks)


def test_takes_come_back_as_one_track_each_at_the_selection(tmp_path, audacity, serve):
    import json

    write_wav(tmp_path / "song.wav", music(7.0, RATE, seed=21), RATE)
    with AudacityPipe() as pipe:
        pipe.command("SelectAll")
        pipe.command("RemoveTracks")
        pipe.command("Import2", Filename=str(tmp_path / "song.wav"))
        pipe.command("Select", Start=2.0, End=3.0, Track=0, TrackCount=1, Mode="Set")
    done = run_script(serve, "infill", "--model", "analytic", "--steps", "4", "--seed", "40", "--takes", "3",
                      "--workdir", str(tmp_path / "work"))
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert [t["track_name"].rsplit(" ", 2)[1:] for t in out["takes"]] == [["take", "1"], ["take", "2"], ["take", "3"]]
    seeds = [json.loads(Path(t["reply"]["path"]).with_suffix(".json").read_text())["seed"] for t in out["takes"]]
    assert seeds == [40, 41, 42]
    with AudacityPipe() as pipe:
        names = [t["name"] for t in pipe.info("Tracks")]
        ends = [round(c["end"], 4) for c in pipe.info("Clips")]
        new = [export_track(pipe, i, 3.0, tmp_path / f"take{i}.wav") for i in (1, 2, 3)]
    assert names[1:] == [t["track_name"] for t in out["takes"]]
    assert ends[1:] == [3.0, 3.0, 3.0]                  # every take at the selection
    assert not np.allclose(new[0][:, 2 * RATE:], new[1][:, 2 * RATE:], atol=1e-3)


def test_snap_bars_moves_the_selection_to_whole_bars_of_the_given_meter(tmp_path, audacity, serve):
    import json

    write_wav(tmp_path / "song.wav", music(7.0, RATE, seed=22), RATE)
    with AudacityPipe() as pipe:
        pipe.command("SelectAll")
        pipe.command("RemoveTracks")
        pipe.command("Import2", Filename=str(tmp_path / "song.wav"))
        pipe.command("Select", Start=2.0, End=3.5, Track=0, TrackCount=1, Mode="Set")
    done = run_script(serve, "infill", "--model", "analytic", "--steps", "4", "--bpm", "97", "--meter", "7/8",
                      "--snap-bars", "--workdir", str(tmp_path / "work"))
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    bar = 3.5 * 60 / 97                                   # 7/8 at 97 quarter notes a minute: 2.165 s
    assert out["position_s"] == pytest.approx(bar, abs=1e-5)              # 2.0 s -> bar 1
    assert out["reply"]["duration_s"] == pytest.approx(bar, abs=1e-3)     # 3.5 s -> bar 2
    used = json.loads(Path(out["reply"]["path"]).with_suffix(".json").read_text())["request"]
    assert used["bpm"] == 97.0
    bars_at = (out["origin_s"] + used["beat_offset_s"]) / bar             # the offset is a bar line of the project
    assert abs(bars_at - round(bars_at)) < 1e-5


@pytest.mark.parametrize("launcher", ["terminal", "ignores SIGINT"])
def test_ctrl_c_cancels_the_job_and_places_nothing(tmp_path, audacity, serve, launcher):
    import signal
    import time

    def ignore_sigint() -> None:    # nohup, a background job: the ignore is inherited by the script and the client
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    write_wav(tmp_path / "song.wav", music(7.0, RATE, seed=23), RATE)
    with AudacityPipe() as pipe:
        pipe.command("SelectAll")
        pipe.command("RemoveTracks")
        pipe.command("Import2", Filename=str(tmp_path / "song.wav"))
        pipe.command("Select", Start=2.0, End=4.0, Track=0, TrackCount=1, Mode="Set")
    proc = subprocess.Popen([sys.executable, str(AUDACITY / "segue_audacity.py"), "infill", "--model", "builtin",
                             "--steps", "400", "--workdir", str(tmp_path / "work")], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=serve.env, start_new_session=True,
                            preexec_fn=ignore_sigint if launcher == "ignores SIGINT" else None)
    err = ""
    deadline = time.monotonic() + 120
    while "segue:" not in err and time.monotonic() < deadline:    # the first progress line on the terminal
        err += proc.stderr.readline()
    os.killpg(proc.pid, signal.SIGINT)                            # Ctrl-C reaches the whole foreground group
    out, rest = proc.communicate(timeout=60)
    err += rest
    assert proc.returncode == 130, err
    assert "job cancelled" in err and "nothing was placed" in err
    with AudacityPipe() as pipe:
        assert [t["name"] for t in pipe.info("Tracks")] == ["song"]


def _overlapping_loops(tmp_path, case: str) -> np.ndarray:
    """A on track 1 (9 s of loop), B on track 2 sounding from 7 s, the 2 s overlap selected; returns B's track."""
    a, loop_b = loops(case, seconds=9.0, rate=RATE)
    b = np.concatenate([np.zeros((2, 7 * RATE), np.float32), loop_b], axis=1)   # sound from 7 s: 2 s over A
    write_wav(tmp_path / "a.wav", a, RATE)
    write_wav(tmp_path / "b.wav", b, RATE)
    with AudacityPipe() as pipe:
        pipe.command("SelectAll")
        pipe.command("RemoveTracks")
        pipe.command("Import2", Filename=str(tmp_path / "a.wav"))
        pipe.command("Import2", Filename=str(tmp_path / "b.wav"))
        pipe.command("Select", Start=7.0, End=9.0, Track=0, TrackCount=2, Mode="Set")
    return b


def assert_b_plays_on_then_undo(tmp_path: Path, b: np.ndarray, clip_end_s: float, b_at_s: float) -> None:
    """After the clip (ending at `clip_end_s`), the play-through track sounds B's track from `b_at_s`, sample
    for sample; then one Undo takes back the track and the mutes together."""
    with AudacityPipe() as pipe:
        through = export_track(pipe, 2, 16.0, tmp_path / "through.wav")
    n = int(1.5 * RATE)
    got = through[0, int(round(clip_end_s * RATE)) + 480:][:n]
    want = b[0, int(round(b_at_s * RATE)) + 480:][:n]
    lag, corr = best_lag(want, got, max_lag=20)
    assert abs(lag) <= 2 and corr > 0.999, (lag, corr)
    with AudacityPipe() as pipe:
        pipe.command("Undo")
        assert len(pipe.info("Tracks")) == 2


@pytest.mark.parametrize("case", ["moved", "stretched"])
def test_when_the_engine_moves_the_joins_b_continues_where_the_clips_b_material_ends(tmp_path, audacity, serve,
                                                                                      case):
    import json

    b = _overlapping_loops(tmp_path, case)
    done = run_script(serve, "transition", "--model", "builtin", "--steps", "4", "--workdir", str(tmp_path / "work"))
    assert done.returncode == 0, done.stderr
    tr = json.loads(done.stdout)
    # join 8 s, crossfade 2.5 s: A exported from 1.5 s (6.5 s in), B from 5.5 s (2.5 s in)
    assert tr["params"] == ["--start", "6.500000", "--b-start", "2.500000", "--crossfade", "2.500000"]
    side = sidecar_of(tr["reply"]["path"])
    assert engine_moved(side, 6.5, 2.5)
    if case == "stretched":
        assert abs(side["prior"]["stretch_factor"] - 1.2) < 0.03
    assert tr["position_s"] == pytest.approx(1.5 + side["offset_s"], abs=1e-6)
    # after the clip, the play-through track is B's track from where the clip's B material ended
    at = 5.5 + b_at_clip_end_s(side)            # on B's track (before the edit), in seconds
    assert_b_plays_on_then_undo(tmp_path, b, tr["position_s"] + side["duration_s"], at)


def test_keep_joins_holds_the_requested_joins_so_b_stays_where_it_was(tmp_path, audacity, serve):
    """The loops the engine otherwise joins elsewhere ("moved"), with `--keep-joins`: the request
    carries --join-search 0, the joins stay at the middle of the overlap, and after the clip the
    play-through track is B's track at the same times (B's part is not moved)."""
    import json

    b = _overlapping_loops(tmp_path, "moved")
    done = run_script(serve, "transition", "--model", "builtin", "--steps", "4", "--keep-joins",
                      "--workdir", str(tmp_path / "work"))
    assert done.returncode == 0, done.stderr
    tr = json.loads(done.stdout)
    # join 8 s, crossfade 2.5 s: A exported from 1.5 s (6.5 s in), B from 5.5 s (2.5 s in)
    assert tr["params"] == ["--start", "6.500000", "--b-start", "2.500000", "--crossfade", "2.500000",
                            "--join-search", "0.000000"]
    side = sidecar_of(tr["reply"]["path"])
    assert side["request"]["join_search_s"] == 0
    assert abs(side["prior"]["join_a_s"] - 6.5) < 1e-3, side["prior"]["join_a_s"]
    assert abs(side["prior"]["segments"][1]["source_start_s"] - 2.5) < 1e-3
    assert not engine_moved(side, 6.5, 2.5)
    assert tr["position_s"] == pytest.approx(8.0 - 1.25, abs=1e-6)     # the crossfade centred on the join
    # after the clip, the play-through track is B's track at the same times: B stayed where it was
    x1 = tr["position_s"] + side["duration_s"]
    assert_b_plays_on_then_undo(tmp_path, b, x1, x1)
