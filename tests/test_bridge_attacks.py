"""Replays of the attacks that once broke the daemon: results replaced, paths escaped, ids aliased.

Each test sends what the attack sent, through the daemon's real front end and worker, and
checks the defence: a coded refusal and nothing read or written where it must not be.
"""
from __future__ import annotations

import json
import os
import struct
import time

import numpy as np
import pytest
import zmq

from bridge import protocol
from bridge.protocol import Message
from engine import safe_io
from engine.audio_io import load_audio, write_audio_atomic
from engine.errors import SegueError
from engine.render import default_output_path
from engine.request import PCMAudio, request_from_mapping

from support.bridge_fixtures import InProcessDaemon, ZmqPeer, make_config, read_wav, render_frames, tone, write_wav
from support.bridge_renders import SLOW_SEED


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    root = tmp_path_factory.mktemp("attacks")
    (root / "models" / "sa").mkdir(parents=True)
    (root / "outside").mkdir()
    d = InProcessDaemon(root, make_config(root, model_roots=(str(root / "models"),))).start()
    write_wav(root / "in" / "clip.wav", tone(2.0))
    write_wav(root / "outside" / "secret.wav", tone(2.0, freq=880.0))
    yield d
    d.stop()


@pytest.fixture
def peer(daemon):
    p = ZmqPeer(daemon.zmq.endpoint, zmq.DEALER)
    yield p
    p.close()


def infill(audio, **kw) -> dict:
    return {"task": "infill", "audio": audio, "start_s": 0.8, "end_s": 1.2, "model": "analytic", "steps": 3,
            "context_s": 0.5, **kw}


def wait(peer, job_id: str) -> dict:
    return peer.call(protocol.encode_request("wait", mid=job_id, timeout_s=30))


def render(peer, mid: str, params: dict, **kw) -> dict:
    """Send a render and return its final answer (or the refusal of the request itself)."""
    acc = peer.call(render_frames(params, mid=mid, **kw))
    return acc if acc["type"] == "error" else wait(peer, mid)


# ---- finished results cannot be replaced --------------------------------------------------------

def test_two_pcm_jobs_of_the_same_shape_but_different_audio_keep_separate_results(daemon, peer):
    params = infill({"frame": 0}, span="full")
    a, b = PCMAudio(tone(1.5, freq=220.0), 44100), PCMAudio(tone(1.5, freq=660.0), 44100)
    done_a = render(peer, "pcm-a", params, pcm=[a])
    done_b = render(peer, "pcm-b", params, pcm=[b])
    assert done_a["type"] == done_b["type"] == "done"
    assert done_a["result"]["path"] != done_b["result"]["path"]
    audio_a, _ = read_wav(done_a["result"]["path"])
    np.testing.assert_allclose(audio_a[:, :4410], a.samples[:, :4410], atol=1e-4)  # still job A's audio


def test_the_default_name_hashes_pcm_content_not_just_its_shape(tmp_path):
    base = {"task": "infill", "start_s": 0.1, "end_s": 0.2}
    one = request_from_mapping({**base, "audio": PCMAudio(tone(0.5, 220.0), 44100)})
    two = request_from_mapping({**base, "audio": PCMAudio(tone(0.5, 330.0), 44100)})
    again = request_from_mapping({**base, "audio": PCMAudio(tone(0.5, 220.0), 44100)})
    assert default_output_path(one, tmp_path) != default_output_path(two, tmp_path)
    assert default_output_path(one, tmp_path) == default_output_path(again, tmp_path)


def test_an_explicit_output_never_replaces_a_file_unless_overwrite_is_set(daemon, peer):
    clip = str(daemon.root / "in" / "clip.wav")
    target = os.path.join(daemon.config.output_dir, "mine.wav")
    first = render(peer, "out-1", infill(clip, output=target))
    assert first["type"] == "done"
    before = open(target, "rb").read()
    again = render(peer, "out-2", infill(clip, output=target, seed=7))
    assert (again["type"], again["error"]["code"]) == ("error", "output_exists")
    assert open(target, "rb").read() == before
    replaced = render(peer, "out-3", infill(clip, output=target, seed=7, overwrite=True))
    assert replaced["type"] == "done" and open(target, "rb").read() != before
    assert json.load(open(target[:-4] + ".json"))["seed"] == 7


def test_a_json_beside_the_output_that_segue_did_not_write_is_never_replaced(daemon, peer):
    clip = str(daemon.root / "in" / "clip.wav")
    target = os.path.join(daemon.config.output_dir, "notes.wav")
    foreign = os.path.join(daemon.config.output_dir, "notes.json")
    with open(foreign, "w") as f:
        json.dump({"my": "project notes"}, f)
    final = render(peer, "foreign-json", infill(clip, output=target, overwrite=True))
    assert (final["type"], final["error"]["code"]) == ("error", "output_exists")
    assert "not written by Segue" in final["error"]["message"]
    assert json.load(open(foreign)) == {"my": "project notes"} and not os.path.exists(target)


def test_write_audio_atomic_refuses_a_foreign_sidecar_and_an_existing_wav(tmp_path):
    audio = tone(0.1)
    path = tmp_path / "x.wav"
    write_audio_atomic(path, audio, 44100, sidecar={"segue_version": "t"})
    with pytest.raises(SegueError) as e:
        write_audio_atomic(path, audio, 44100, sidecar={"segue_version": "t"}, replace=False)
    assert e.value.code == "output_exists"
    write_audio_atomic(path, audio, 44100, sidecar={"segue_version": "t", "n": 2})  # ours: replaced
    (tmp_path / "x.json").write_text("[1, 2]")
    with pytest.raises(SegueError) as e:
        write_audio_atomic(path, audio, 44100, sidecar={"segue_version": "t"})
    assert e.value.code == "output_exists" and (tmp_path / "x.json").read_text() == "[1, 2]"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json", "x.wav"]  # no temp files left


# ---- path confinement ---------------------------------------------------------------------------

def test_a_model_folder_outside_the_model_roots_is_refused_naming_the_option(daemon, peer):
    clip = str(daemon.root / "in" / "clip.wav")
    for model in ("stable-audio:/etc", "stable-audio:" + str(daemon.root / "models" / ".." / "outside"),
                  "stable-audio-3:relative/folder"):
        refused = peer.call(render_frames(infill(clip, model=model), mid=f"model-{abs(hash(model)) % 10**8}"))
        assert (refused["type"], refused["error"]["code"]) == ("error", "path_not_allowed"), model
        assert "--model-root" in refused["error"]["message"] or "absolute" in refused["error"]["message"]
    inside = daemon.manager.policy.confine(infill(clip, model="stable-audio:" + str(daemon.root / "models" / "sa")))
    assert inside["model"] == "stable-audio:" + os.path.realpath(daemon.root / "models" / "sa")


def test_sources_go_through_the_same_path_rules_as_audio(daemon, peer):
    clip = str(daemon.root / "in" / "clip.wav")
    secret = str(daemon.root / "outside" / "secret.wav")
    for sources in ([secret], [clip, "/etc/passwd"], ["relative.wav"]):
        refused = peer.call(render_frames(infill(clip, sources=sources), mid=f"src-{len(sources)}-{len(sources[-1])}"))
        assert (refused["type"], refused["error"]["code"]) == ("error", "path_not_allowed"), sources
    assert daemon.manager.policy.confine(infill(clip, sources=[clip]))["sources"] == [os.path.realpath(clip)]


def test_a_reference_list_does_not_skip_the_path_check(daemon):
    clip = str(daemon.root / "in" / "clip.wav")
    with pytest.raises(SegueError) as e:
        daemon.manager.policy.confine({"task": "style", "audio": clip, "reference": ["/etc/passwd"]})
    assert e.value.code == "path_not_allowed"


def busy(peer, daemon, mid: str) -> None:
    """Occupy the worker with a slow job so the next one waits in the queue."""
    clip = str(daemon.root / "in" / "clip.wav")
    assert peer.call(render_frames(infill(clip, seed=SLOW_SEED, steps=30), mid=mid))["type"] == "accepted"


def test_a_folder_swapped_for_a_link_after_acceptance_is_not_read_through(daemon, peer):
    folder = daemon.root / "in" / "swap-in"
    folder.mkdir()
    write_wav(folder / "secret.wav", tone(2.0))
    busy(peer, daemon, "busy-in")
    assert peer.call(render_frames(infill(str(folder / "secret.wav")), mid="swap-in"))["type"] == "accepted"
    os.rename(folder, daemon.root / "in" / "swap-in-old")
    os.symlink(daemon.root / "outside", folder)  # now in/swap-in/secret.wav is outside/secret.wav
    peer.call(protocol.encode_request("cancel", mid="busy-in"))
    final = wait(peer, "swap-in")
    assert (final["type"], final["error"]["code"]) == ("error", "path_not_allowed"), final
    assert "outside the allowed roots" in final["error"]["message"]


def test_an_output_folder_swapped_for_a_link_after_acceptance_is_not_written_through(daemon, peer):
    clip = str(daemon.root / "in" / "clip.wav")
    sub = os.path.join(daemon.config.output_dir, "sub")
    os.mkdir(sub)
    busy(peer, daemon, "busy-out")
    assert peer.call(render_frames(infill(clip, output=os.path.join(sub, "x.wav")), mid="swap-out"))["type"] == \
        "accepted"
    os.rename(sub, sub + "-old")
    os.symlink(daemon.root / "outside", sub)
    peer.call(protocol.encode_request("cancel", mid="busy-out"))
    final = wait(peer, "swap-out")
    assert (final["type"], final["error"]["code"]) == ("error", "path_not_allowed"), final
    assert sorted(os.listdir(daemon.root / "outside")) == ["secret.wav"]  # no x.wav, no x.json, no temp file


def test_the_engine_reads_through_the_checked_descriptor(tmp_path, monkeypatch):
    inside, outside = tmp_path / "inside", tmp_path / "outside"
    inside.mkdir()
    outside.mkdir()
    write_wav(outside / "a.wav", tone(0.2))
    os.symlink(outside / "a.wav", inside / "a.wav")
    monkeypatch.setattr(safe_io, "_current", None)
    safe_io.confine((str(inside),), str(inside))
    try:
        with pytest.raises(SegueError) as e:
            load_audio(str(inside / "a.wav"))  # a link as the file itself
        assert e.value.code == "path_not_allowed"
        os.unlink(inside / "a.wav")
        os.symlink(outside, inside / "d")
        with pytest.raises(SegueError) as e:
            load_audio(str(inside / "d" / "a.wav"))  # a link as a folder on the way
        assert e.value.code == "path_not_allowed"
        write_wav(inside / "b.wav", tone(0.2))
        assert load_audio(str(inside / "b.wav")).shape[0] == 2
    finally:
        monkeypatch.setattr(safe_io, "_current", None)


# ---- smaller holes ------------------------------------------------------------------------------

def test_a_job_id_with_a_trailing_newline_is_refused_not_aliased(daemon, peer):
    clip = str(daemon.root / "in" / "clip.wav")
    frames = render_frames(infill(clip), mid="abc")
    header = json.loads(frames[0])
    header["id"] = "abc\n"
    refused = peer.call([json.dumps(header).encode()])
    assert (refused["type"], refused["error"]["code"]) == ("error", "bad_message")
    assert daemon.manager.store.get("abc\n") is None


def wav_header(rate: int, frames: int = 4) -> bytes:
    data = b"\0\0" * frames
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * 2, 2, 16)
    return (b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt
            + b"data" + struct.pack("<I", len(data)) + data)


def test_a_wav_claiming_one_hertz_is_refused_before_anything_is_allocated(tmp_path):
    path = tmp_path / "one-hertz.wav"
    path.write_bytes(wav_header(1, frames=1000))
    t0 = time.monotonic()
    with pytest.raises(SegueError) as e:
        load_audio(str(path))
    assert e.value.code == "bad_audio" and "8000..192000" in e.value.message
    assert time.monotonic() - t0 < 2.0


def test_queue_full_counts_only_live_jobs(tmp_path):
    from bridge.daemon import JobManager
    from bridge.protocol import Limits
    (tmp_path / "in").mkdir()
    clip = str(write_wav(tmp_path / "in" / "c.wav", tone(1.0)))
    manager = JobManager(make_config(tmp_path, limits=Limits(max_queue=2)))  # workers never started
    try:
        def submit(mid):
            return manager.submit(Message(type="render", id=mid, params=infill(clip)), {"via": "test"}, time.time())
        submit("q1")
        submit("q2")
        with pytest.raises(SegueError) as e:
            submit("q3")
        assert e.value.code == "queue_full"
        manager.cancel("q1")
        manager.cancel("q2")
        assert manager.health()["queue_length"] == 0
        submit("q3")  # once refused although nothing was queued: cancelled entries were still counted
    finally:
        manager.close()
