"""A repeated render whose explicit output already holds this very render keeps it instead of refusing.

A restarted daemon re-runs a job a crash interrupted; if the WAV and sidecar were already written,
the re-run must finish with that result, not fail with `output_exists`. Only a provable match is
kept: same request, same input bytes (or PCM samples), same Segue version, and the WAV on disk
still hashing to what its sidecar recorded. Everything else is refused exactly as before.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from support.bridge_fixtures import read_wav, tone, write_wav
from engine.errors import InvalidRequest
from engine.render import render, render_takes
from engine.request import PCMAudio, request_from_mapping


@pytest.fixture
def clip(tmp_path) -> Path:
    return write_wav(tmp_path / "clip.wav", tone(2.0))


def request(clip, out: Path, **fields):
    return request_from_mapping({"task": "infill", "audio": (str(clip),), "start_s": 0.8, "end_s": 1.2,
                                 "model": "analytic", "steps": 4, "context_s": 0.5, "span": "region",
                                 "output": str(out), **fields})


def snapshot(folder: Path) -> dict:
    """Every file in the folder with its bytes and mtime: 'writes nothing' means this is unchanged."""
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


def refused(req) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as e:
        render(req)
    assert e.value.code == "output_exists"
    assert "already exists; set overwrite" in e.value.message
    return e.value


def test_the_identical_request_again_keeps_the_existing_render_and_writes_nothing(clip, tmp_path):
    out = tmp_path / "out" / "fill.wav"
    out.parent.mkdir()
    first = render(request(clip, out, seed=5))
    side = json.loads(Path(first.sidecar_path).read_text())
    assert side["wav_sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()   # the bytes as on disk
    before = snapshot(out.parent)
    events = []
    again = render(request(clip, out, seed=5), progress=events.append)
    assert snapshot(out.parent) == before and events == []       # nothing rendered, nothing written
    assert (again.path, again.sidecar_path, again.seed, again.model) == (first.path, first.sidecar_path, 5, "analytic")
    assert (again.offset_s, again.duration_s, again.sample_rate) == (first.offset_s, first.duration_s, 44100)
    assert again.warnings[:-1] == first.warnings
    assert "identical render" in again.warnings[-1] and "kept" in again.warnings[-1]


def test_a_render_made_with_overwrite_is_kept_by_the_same_request_without_it(clip, tmp_path):
    out = tmp_path / "fill.wav"
    render(request(clip, out, seed=5, overwrite=True))   # overwrite decides replacing, not what is rendered
    before = snapshot(tmp_path)
    assert render(request(clip, out, seed=5)).path == str(out) and snapshot(tmp_path) == before


def test_a_different_request_or_a_changed_input_is_refused_as_before(clip, tmp_path):
    out = tmp_path / "fill.wav"
    render(request(clip, out, seed=5))
    before = snapshot(tmp_path)
    refused(request(clip, out, seed=6))
    refused(request(clip, out, seed=5, steps=5))
    write_wav(clip, tone(2.0, freq=330.0))             # same name, same length, other content
    refused(request(clip, out, seed=5))
    after = snapshot(tmp_path)
    assert {k: v for k, v in after.items() if k != "clip.wav"} == {k: v for k, v in before.items() if k != "clip.wav"}


def test_a_changed_extra_source_is_refused(clip, tmp_path):
    other = write_wav(tmp_path / "other.wav", tone(1.0, freq=440.0))
    out = tmp_path / "fill.wav"
    render(request(clip, out, sources=(str(other),)))
    assert render(request(clip, out, sources=(str(other),))).path == str(out)
    write_wav(other, tone(1.0, freq=550.0))
    refused(request(clip, out, sources=(str(other),)))


def test_an_edited_wav_is_never_taken_for_the_render(clip, tmp_path):
    out = tmp_path / "fill.wav"
    render(request(clip, out))
    data = bytearray(out.read_bytes())
    data[-1] ^= 0x01                                    # one bit of the last sample
    out.write_bytes(bytes(data))
    refused(request(clip, out))
    assert out.read_bytes() == bytes(data)


@pytest.mark.parametrize("damage", ["deleted", "corrupt", "identity edited", "hash removed"])
def test_a_missing_or_damaged_sidecar_is_no_proof(clip, tmp_path, damage):
    out = tmp_path / "fill.wav"
    first = render(request(clip, out))
    side = Path(first.sidecar_path)
    doc = json.loads(side.read_text())
    if damage == "deleted":
        side.unlink()
    elif damage == "corrupt":
        side.write_text(side.read_text()[:-40])
    elif damage == "identity edited":
        doc["identity"]["inputs"][0]["sha256"] = "0" * 64
        side.write_text(json.dumps(doc))
    else:
        del doc["wav_sha256"]
        side.write_text(json.dumps(doc))
    wav = out.read_bytes()
    with pytest.raises(InvalidRequest) as e:
        render(request(clip, out))
    assert e.value.code == "output_exists" and out.read_bytes() == wav


def test_pcm_input_counts_by_its_samples(tmp_path):
    def pcm_request(samples: np.ndarray):
        return request_from_mapping({"task": "infill", "audio": (PCMAudio(samples, 44100),), "start_s": 0.8,
                                     "end_s": 1.2, "model": "analytic", "steps": 4, "context_s": 0.5,
                                     "output": str(tmp_path / "pcm.wav")})
    audio = tone(2.0)
    first = render(pcm_request(audio))
    before = snapshot(tmp_path)
    assert render(pcm_request(audio.copy())).path == first.path and snapshot(tmp_path) == before
    changed = audio.copy()
    changed[0, 1000] += 0.01                           # same shape and rate: only the samples tell
    refused(pcm_request(changed))


def test_variations_keep_the_takes_already_written_and_render_the_rest(clip, tmp_path):
    out = tmp_path / "out" / "fill.wav"
    out.parent.mkdir()
    full = render_takes(request(clip, out, variations=3, seed=2))
    third = read_wav(full[2].path)[0]
    for name in ("fill.take3.wav", "fill.take3.json"):  # the crash came after take 2 was written
        (out.parent / name).unlink()
    kept = {n: v for n, v in snapshot(out.parent).items()}
    again = render_takes(request(clip, out, variations=3, seed=2))
    now = snapshot(out.parent)
    assert [r.path for r in again] == [r.path for r in full]
    assert all(now[n] == kept[n] for n in kept)        # takes 1 and 2 untouched
    assert [("kept" in r.warnings[-1]) if r.warnings else False for r in again] == [True, True, False]
    np.testing.assert_array_equal(read_wav(again[2].path)[0], third)   # take 3 rendered again, identically
    # a take that is not this take's render still refuses the whole job before anything is rendered
    (out.parent / "fill.take3.wav").unlink()
    (out.parent / "fill.take3.json").unlink()
    os.replace(out.parent / "fill.take2.wav", out.parent / "keep.wav")
    write_wav(out.parent / "fill.take2.wav", tone(0.4))
    with pytest.raises(InvalidRequest) as e:
        render_takes(request(clip, out, variations=3, seed=2))
    assert e.value.code == "output_exists" and "fill.take2.wav exists" in e.value.message
    assert not (out.parent / "fill.take3.wav").exists()


def test_an_input_rewritten_in_place_with_the_same_length_is_hashed_anew(tmp_path):
    from engine import safe_io
    f = tmp_path / "in.bin"
    f.write_bytes(b"a" * 4096)
    first = safe_io.sha256_input(f)
    assert safe_io.sha256_input(f) == first          # the same file: the remembered hash
    with open(f, "r+b") as h:                        # same inode, same size, other bytes
        h.write(b"b")
    assert safe_io.sha256_input(f) != first
