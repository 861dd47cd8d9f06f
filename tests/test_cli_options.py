"""Every documented option of `segue` works: downmix, models, output permissions, the demo's files."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from pedalboard.io import AudioFile

from engine.demo import demo_clip

ROOT = Path(__file__).resolve().parents[1]


def segue(*args, cwd=None, umask=None):
    pre = (lambda: os.umask(umask)) if umask is not None else None
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300, preexec_fn=pre)


def write_surround(path: Path) -> None:
    clip = demo_clip(3.0)
    six = np.concatenate([clip, clip * 0.5, clip * 0.25], axis=0)
    with AudioFile(str(path), "w", samplerate=44100.0, num_channels=6, bit_depth=24) as f:
        f.write(six)


def test_a_surround_input_is_refused_naming_an_option_that_exists_and_downmix_renders_it(tmp_path):
    src = tmp_path / "surround.wav"
    write_surround(src)
    args = ["infill", str(src), "--start", "1", "--end", "2", "--model", "analytic", "--steps", "3", "-q"]
    refused = segue(*args, "-o", str(tmp_path / "a.wav"))
    assert refused.returncode == 2 and "error [bad_audio]" in refused.stderr and "--downmix" in refused.stderr
    assert "--downmix" in segue("infill", "--help").stdout
    done = segue(*args, "--downmix", "-o", str(tmp_path / "b.wav"))
    assert done.returncode == 0, done.stderr
    with AudioFile(str(tmp_path / "b.wav")) as f:
        assert f.num_channels == 2


def test_outputs_honour_the_umask_and_are_32_bit_float(tmp_path):
    src = tmp_path / "in.wav"
    with AudioFile(str(src), "w", samplerate=44100.0, num_channels=2, bit_depth=24) as f:
        f.write(demo_clip(3.0))
    for umask, mode in ((0o022, 0o644), (0o002, 0o664)):
        out = tmp_path / f"out{umask:o}.wav"
        r = segue("infill", str(src), "--start", "1", "--end", "2", "--model", "analytic", "--steps", "3", "-q",
                  "-o", str(out), umask=umask)
        assert r.returncode == 0, r.stderr
        for path in (out, out.with_suffix(".json")):
            assert path.stat().st_mode & 0o777 == mode, (path, oct(path.stat().st_mode))
    with AudioFile(str(out)) as f:
        assert f.file_dtype == "float32"


def test_segue_models_shows_kind_where_size_and_availability():
    r = segue("models", "--json")
    assert r.returncode == 0, r.stderr
    rows = {e["name"]: e for e in json.loads(r.stdout)}
    builtin = rows["builtin"]
    assert builtin["available"] and Path(builtin["where"]).is_file()
    assert builtin["size_bytes"] == Path(builtin["where"]).stat().st_size
    assert rows["analytic"]["available"] and "stable-audio:" in rows
    missing = json.loads(segue("models", "stable-audio:/no/such/folder", "--json").stdout)[0]
    assert missing["available"] is False and missing["note"] == "folder not found"
    text = segue("models").stdout
    assert text.splitlines()[0].split() == ["MODEL", "KIND", "SIZE", "AVAILABLE", "STEPS", "WHERE"]
    from engine.render import get_model
    assert builtin["default_steps"] == get_model("builtin").default_steps      # what --steps defaults to


def test_the_demo_leaves_nothing_git_would_list():
    ignored = subprocess.run(["git", "check-ignore", "segue-demo.json", "segue-demo.wav", "segue-demo.input.wav"],
                             cwd=ROOT, capture_output=True, text=True)
    assert ignored.stdout.split() == ["segue-demo.json", "segue-demo.wav", "segue-demo.input.wav"]


def test_a_file_longer_than_the_limit_is_refused_as_too_long_naming_the_limit(tmp_path):
    """A WAV whose header claims 3601 s (the data is not even there: the header is enough to refuse it)."""
    import struct

    rate, frames = 8000, 3601 * 8000
    header = (b"RIFF" + struct.pack("<I", 36 + 2 * frames) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 1, rate,
              2 * rate, 2, 16) + b"data" + struct.pack("<I", 2 * frames))
    (tmp_path / "long.wav").write_bytes(header + bytes(16000))
    r = segue("continue", str(tmp_path / "long.wav"), "--duration", "1", "--model", "analytic", "-q",
              "-o", str(tmp_path / "out.wav"))
    assert r.returncode == 2 and "error [too_large]" in r.stderr
    assert "is too long" in r.stderr and "3600 s" in r.stderr
