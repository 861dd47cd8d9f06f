"""The `segue` command: renders with progress, reports errors with codes, writes nothing on failure."""
import json
import subprocess
import sys

import numpy as np
import pytest

from engine.audio_io import load_audio, write_audio_atomic
from engine.demo import demo_clip


def segue(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


@pytest.fixture()
def song(tmp_path):
    path = tmp_path / "song.wav"
    write_audio_atomic(path, demo_clip(4.0), 44100)
    return path


def test_infill_renders_with_progress_and_a_reproducible_sidecar(song, tmp_path):
    out = tmp_path / "out.wav"
    r = segue("infill", str(song), "--start", "1", "--end", "2", "--model", "analytic", "--steps", "6",
              "--seed", "4", "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(out)
    assert "progress 6/6 100%" in r.stderr and "ETA" in r.stderr
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["seed"] == 4 and side["request"]["start_s"] == 1.0 and side["model"]["name"] == "analytic"
    audio = load_audio(str(out))
    assert audio.shape == (2, 4 * 44100)
    # rerun from the sidecar's parameters: identical audio
    out2 = tmp_path / "again.wav"
    r2 = segue("infill", str(song), "--start", "1", "--end", "2", "--model", "analytic", "--steps", "6",
               "--seed", "4", "-o", str(out2))
    assert r2.returncode == 0
    assert np.array_equal(load_audio(str(out2)), audio)


def test_the_progress_bar_names_a_long_step_outside_the_sampler_as_it_starts():
    import io
    from engine.cli import ProgressBar
    from engine.progress import ProgressEvent
    out = io.StringIO()
    bar = ProgressBar(out)
    bar(ProgressEvent(0, 32, 0.1, None, "stretching the whole of clip B (x1.333, 304 s)"))
    bar(ProgressEvent(32, 32, 40.0, 0.0))
    lines = out.getvalue().splitlines()
    assert lines == ["progress 0/32 0% ETA   ?   stretching the whole of clip B (x1.333, 304 s)",
                     "progress 32/32 100% ETA   0.0s"]


@pytest.mark.parametrize("args,code", [
    (["infill", "{missing}", "--start", "1", "--end", "2"], "file_not_found"),
    (["infill", "{song}", "--start", "3", "--end", "9", "--model", "analytic"], "region_out_of_range"),
    (["infill", "{song}", "--start", "2", "--end", "1", "--model", "analytic"], "invalid_request"),
    (["infill", "{song}", "--start", "1", "--end", "2", "--model", "nonexistent"], "model_not_found"),
    (["style", "{song}", "--preset", "no-such-preset", "--model", "analytic"], "bad_preset"),
    (["infill", "{song}", "--start", "1", "--end", "2", "--model", "analytic", "-o", "{song}"], "output_is_input"),
])
def test_errors_exit_2_with_a_code_and_write_nothing(song, tmp_path, args, code):
    before = sorted(p.name for p in tmp_path.iterdir())
    filled = [a.format(song=song, missing=tmp_path / "missing.wav") for a in args]
    r = segue(*filled, cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert f"error [{code}]" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_play_without_an_audio_device_is_a_message_not_a_crash(song, tmp_path):
    out = tmp_path / "o.wav"
    r = segue("infill", str(song), "--start", "1", "--end", "2", "--model", "analytic", "--steps", "2",
              "-o", str(out), "-q", "--play")
    assert r.returncode == 0, r.stderr
    assert out.exists()
    assert "Traceback" not in r.stderr


def test_demo_runs_end_to_end(tmp_path):
    r = segue("demo", "--model", "analytic", "--steps", "4", "-o", str(tmp_path / "demo.wav"), "-q")
    assert r.returncode == 0, r.stderr
    assert load_audio(str(tmp_path / "demo.wav")).shape == (2, 16 * 44100)
    assert (tmp_path / "demo.input.wav").exists() and (tmp_path / "demo.json").exists()
