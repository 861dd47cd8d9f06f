"""Variations: one request asks for N takes; each take is its own render, WAV and sidecar.

Take i uses seed + i and prior candidate + i; `--json` prints a list of N results on the `segue`
command line and on `segue-client` (through a real daemon), and the daemon's `done` result
carries every take under `takes`. A job ends with all its takes or none.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from support.daw_support import music, read_wav, write_wav
from support.daw_support import serve  # noqa: F401  (a pytest fixture, used by name)
from engine.errors import Cancelled, InvalidRequest
from engine.progress import CancelToken
from engine.render import render, render_takes, take_request
from engine.request import request_from_mapping

RATE = 44100


@pytest.fixture
def song(tmp_path) -> Path:
    return write_wav(tmp_path / "song.wav", music(4.0, RATE, seed=3), RATE)


def infill(song: Path, **fields) -> dict:
    return {"task": "infill", "audio": (str(song),), "start_s": 1.0, "end_s": 2.0, "model": "analytic",
            "steps": 4, "span": "region", **fields}


def test_each_take_is_its_own_render_with_the_next_seed_and_candidate(song, tmp_path):
    req = request_from_mapping(infill(song, variations=3, seed=7, candidate=2))
    takes = render_takes(req, output_dir=tmp_path / "out")
    assert [t.seed for t in takes] == [7, 8, 9]
    assert len({t.path for t in takes}) == 3
    audios = [read_wav(t.path)[0] for t in takes]
    assert all(a.shape == (2, RATE) for a in audios)
    assert not np.allclose(audios[0], audios[1], atol=1e-3)          # different seeds, different takes
    for i, t in enumerate(takes):
        used = json.loads(Path(t.sidecar_path).read_text())["request"]
        # the sidecar reruns exactly this take: a single-take request with its own seed and candidate
        assert (used["seed"], used["candidate"], used["variations"]) == (7 + i, 2 + i, 1)
    # take 2 is the same render as a plain request with seed 8
    single = render(request_from_mapping(infill(song, seed=8, output=str(tmp_path / "single.wav"))))
    np.testing.assert_array_equal(read_wav(single.path)[0], audios[1])


def test_an_explicit_output_name_is_numbered_per_take(song, tmp_path):
    req = request_from_mapping(infill(song, variations=2, output=str(tmp_path / "fill.wav")))
    assert [Path(t.path).name for t in render_takes(req)] == ["fill.take1.wav", "fill.take2.wav"]
    one = request_from_mapping(infill(song, output=str(tmp_path / "one.wav")))
    assert take_request(one, 0).output == str(tmp_path / "one.wav")     # a single take keeps its name
    with pytest.raises(InvalidRequest, match="take 2 is outside the 2 take"):
        take_request(req, 2)
    # a later take's name already taken: refused before any take is rendered
    (tmp_path / "again.take1.wav").unlink(missing_ok=True)
    (tmp_path / "again.take2.wav").write_bytes(b"mine")
    with pytest.raises(InvalidRequest, match="again.take2.wav exists") as e:
        render_takes(request_from_mapping(infill(song, variations=2, output=str(tmp_path / "again.wav"))))
    assert e.value.code == "output_exists" and not (tmp_path / "again.take1.wav").exists()
    assert (tmp_path / "again.take2.wav").read_bytes() == b"mine"


def test_progress_runs_once_over_all_takes(song, tmp_path):
    events = []
    render_takes(request_from_mapping(infill(song, variations=3)), progress=events.append, output_dir=tmp_path)
    assert {e.total for e in events} == {3 * 4}
    steps = [e.step for e in events]
    assert steps == sorted(steps) and steps[-1] == 12 and events[-1].fraction == 1.0


def test_a_cancel_during_a_later_take_removes_the_takes_already_written(song, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    keep = out / "mine.wav"
    keep.write_bytes(b"not ours")
    token = CancelToken()

    def cancel_in_take_three(ev):
        if ev.step > 2 * 4:
            token.cancel()

    with pytest.raises(Cancelled):
        render_takes(request_from_mapping(infill(song, variations=3)), progress=cancel_in_take_three,
                     cancel=token, output_dir=out)
    assert sorted(p.name for p in out.iterdir()) == ["mine.wav"]


def test_the_segue_command_prints_one_json_result_per_take(song, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "engine.cli", "infill", str(song), "--start", "1", "--end", "2",
                           "--model", "analytic", "--steps", "4", "--seed", "5", "--variations", "2", "--json",
                           "-o", str(tmp_path / "cli.wav"), "-q"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert isinstance(out, list) and [r["seed"] for r in out] == [5, 6]
    assert [Path(r["path"]).name for r in out] == ["cli.take1.wav", "cli.take2.wav"]
    assert all(Path(r["sidecar"]).exists() for r in out)


def test_segue_client_gets_every_take_from_the_daemon(song, serve):
    proc = subprocess.run([sys.executable, "-m", "bridge.client", "infill", str(song), "--start", "1", "--end", "2",
                           "--model", "analytic", "--steps", "4", "--seed", "11", "--variations", "3",
                           "--span", "region", "--json", "--bpm", "97", "--beat-offset", "0.25"],
                          capture_output=True, text=True, timeout=300, env=serve.env)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert isinstance(out, list) and len(out) == 3 and len({r["path"] for r in out}) == 3
    for i, r in enumerate(out):
        assert r["offset_s"] == pytest.approx(1.0) and r["duration_s"] == pytest.approx(1.0)
        side = json.loads(Path(r["path"]).with_suffix(".json").read_text())
        assert side["seed"] == 11 + i
        assert (side["request"]["bpm"], side["request"]["beat_offset_s"]) == (97.0, 0.25)   # tempo hint recorded
    # progress went over all three takes in one job
    assert "step 12/12" in proc.stderr
    # without --variations the reply stays one object (what every DAW script parses)
    proc = subprocess.run([sys.executable, "-m", "bridge.client", "infill", str(song), "--start", "1", "--end", "2",
                           "--model", "analytic", "--steps", "4", "--span", "region", "--json"],
                          capture_output=True, text=True, timeout=300, env=serve.env)
    assert proc.returncode == 0, proc.stderr
    assert isinstance(json.loads(proc.stdout), dict)
