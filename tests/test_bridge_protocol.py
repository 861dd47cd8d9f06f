"""The wire schema: decoding, limits, error codes, and fuzzing of both decoders.

Inputs that once broke a decoder are kept as `@example`s and as files in
tests/fuzz_corpus/ (replayed by `test_the_fuzz_corpus_is_answered_without_crashing`).
"""
from __future__ import annotations

import json
import struct
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bridge import protocol
from bridge.daemon import JobManager
from bridge.osc_server import OscServer, build, decode_osc, reply_target
from bridge.paths import PathPolicy
from bridge.zmq_server import ZmqServer
from bridge.protocol import Limits, decode_message
from engine.errors import SegueError
from engine.request import MAX_DURATION_S, PCMAudio, RenderRequest, request_from_mapping

from support.bridge_fixtures import make_config, tone, write_wav

CORPUS = Path(__file__).parent / "fuzz_corpus"
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def header(**kw) -> bytes:
    return json.dumps({"v": 1, **kw}).encode()


def test_a_render_with_a_pcm_frame_decodes_into_the_engine_request():
    pcm = PCMAudio(tone(0.5), 44100)
    frames = protocol.encode_render({"task": "infill", "audio": {"frame": 0}, "start_s": 0.1, "end_s": 0.2},
                                    mid="abc", pcm=[pcm], timeout_s=12)
    msg = decode_message(frames)
    assert (msg.type, msg.id, msg.timeout_s) == ("render", "abc", 12.0)
    request = request_from_mapping(msg.params)
    assert isinstance(request, RenderRequest) and request.start_s == 0.1
    np.testing.assert_array_equal(request.audio[0].samples, pcm.samples)
    assert request.audio[0].sample_rate == 44100


def test_frames_are_checked_against_their_descriptors():
    params = {"task": "infill", "audio": {"frame": 0}, "start_s": 0.0, "end_s": 0.1}
    desc = {"shape": [2, 100], "sample_rate": 44100}
    good = np.zeros((2, 100), "<f4").tobytes()
    cases = {
        "short frame": ([header(type="render", params=params, frames=[desc]), good[:-4]], "bad_message"),
        "no descriptor": ([header(type="render", params=params), good], "bad_message"),
        "three channels": ([header(type="render", params=params, frames=[{**desc, "shape": [3, 100]}]),
                            np.zeros((3, 100), "<f4").tobytes()], "bad_message"),
        "float64": ([header(type="render", params=params, frames=[{**desc, "dtype": "float64"}]), good],
                    "bad_message"),
        "unreferenced": ([header(type="render", params={**params, "audio": "/a.wav"}, frames=[desc]), good],
                         "bad_message"),
        "bad reference": ([header(type="render", params={**params, "audio": {"frame": 3}}, frames=[desc]), good],
                          "bad_message"),
        "a minute past the limit": ([header(type="render", params=params, frames=[
            {**desc, "shape": [2, 44100 * int(MAX_DURATION_S + 60)]}]), good], "too_large"),
        "nan samples": ([header(type="render", params=params, frames=[desc]),
                         np.full((2, 100), np.nan, "<f4").tobytes()], "invalid_request"),
    }
    for name, (frames, code) in cases.items():
        with pytest.raises(SegueError) as e:
            decode_message(frames)
        assert e.value.code == code, name


def test_limits_refuse_large_headers_frames_and_frame_counts_before_parsing():
    small = Limits(max_header_bytes=100, max_frame_bytes=1000, max_frames=1)
    with pytest.raises(SegueError) as e:
        decode_message([b" " * 101], small)
    assert e.value.code == "too_large"
    with pytest.raises(SegueError) as e:
        decode_message([header(type="health"), b"\x00" * 1004], small)
    assert e.value.code == "too_large"
    with pytest.raises(SegueError) as e:
        decode_message([header(type="health"), b"", b""], small)
    assert e.value.code == "too_large"


def test_version_type_and_id_are_required_to_be_well_formed():
    for raw, code in [(b'{"type": "health"}', "bad_message"), (b'{"v": 2, "type": "health"}', "unsupported_version"),
                      (b'{"v": true, "type": "health"}', "bad_message"), (header(type="reboot"), "bad_message"),
                      (header(type="health", id="has space"), "bad_message"), (header(type="health", id=7), "bad_message"),
                      (b'{"v": 1, "type": "health", "x": NaN}', "bad_message"), (b"[1, 2]", "bad_message")]:
        with pytest.raises(SegueError) as e:
            decode_message([raw])
        assert e.value.code == code, raw
    assert decode_message([header(type="health", id="a-b_c.d:1")]).id == "a-b_c.d:1"
    assert len(decode_message([header(type="health")]).id) == 32  # a fresh id when none is given


def test_error_replies_carry_code_and_sentence_and_hide_nothing_else():
    r = protocol.error_reply("x1", SegueError("no such model", code="model_not_found"))
    assert r == {"v": 1, "type": "error", "id": "x1", "error": {"code": "model_not_found", "message": "no such model"}}
    r = protocol.error_reply(None, KeyError("k"))
    assert r["error"] == {"code": "internal", "message": "KeyError: 'k'"} and r["id"] == ""


def test_osc_arguments_map_onto_request_fields():
    msg = decode_osc("/segue/transition", ["/a.wav", "/b.wav", "start=3", "b_start=1.5", "crossfade=2",
                                                 "steps=7", "id=t-1", "reply_port=9100", "timeout=30"])
    assert msg.params == {"task": "transition", "audio": ["/a.wav", "/b.wav"], "start_s": 3.0, "b_start_s": 1.5,
                          "crossfade_s": 2.0, "steps": 7}
    assert (msg.id, msg.timeout_s) == ("t-1", 30.0)
    assert reply_target(("127.0.0.1", 5), ["/a.wav", "reply_port=9100"]) == ("127.0.0.1", 9100)
    assert reply_target(("127.0.0.1", 5), ["reply_port=²"]) == ("127.0.0.1", 5)
    msg = decode_osc("/segue/continue", ["/a b=c.wav", 4])
    assert msg.params == {"task": "continue", "audio": ["/a b=c.wav"], "duration_s": 4.0}
    for address, args, code in [("/segue/infill", ["/a.wav", 1.0], "bad_message"),
                                ("/segue/infill", ["/a.wav", 1.0, 2.0, "steps=1.5"], "bad_message"),
                                ("/segue/infill", ["/a.wav", 1.0, 2.0, "seed=1", "seed=2"], "bad_message"),
                                ("/segue/infill", ["/a.wav", 1.0, 2.0, "reply_port=70000"], "bad_message"),
                                ("/segue/infill", [b"/a.wav", 1.0, 2.0], "bad_message"),
                                ("/other/infill", [], "bad_message"), ("/segue/cancel", [], "bad_message")]:
        with pytest.raises(SegueError) as e:
            decode_osc(address, args)
        assert e.value.code == code, (address, args)


def test_paths_are_confined_to_the_roots(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "elsewhere").mkdir()
    inside = write_wav(tmp_path / "in" / "a.wav", tone(0.1))
    outside = write_wav(tmp_path / "elsewhere" / "b.wav", tone(0.1))
    (tmp_path / "in" / "escape.wav").symlink_to(outside)
    (tmp_path / "in" / "inner.wav").symlink_to(inside)
    (tmp_path / "in" / "dirlink").symlink_to(tmp_path / "elsewhere")
    policy = PathPolicy.create([tmp_path / "in"], tmp_path / "out", max_file_bytes=100_000)
    assert policy.input(str(inside)) == str(inside.resolve())
    assert policy.input(str(tmp_path / "in" / "inner.wav")) == str(inside.resolve())
    big = write_wav(tmp_path / "in" / "big.wav", tone(2.0))
    for bad, code in [(str(outside), "path_not_allowed"), (str(tmp_path / "in" / "escape.wav"), "path_not_allowed"),
                      (str(tmp_path / "in" / "dirlink" / "b.wav"), "path_not_allowed"),
                      (str(tmp_path / "in" / ".." / "elsewhere" / "b.wav"), "path_not_allowed"),
                      ("in/a.wav", "path_not_allowed"), ("/tmp/\x00a.wav", "path_not_allowed"),
                      (str(tmp_path / "in-sibling.wav"), "path_not_allowed"), (str(tmp_path / "in"), "bad_audio"),
                      (str(tmp_path / "in" / "missing.wav"), "bad_audio"), (str(big), "too_large"),
                      ("/tmp/\ud800.wav", "path_not_allowed")]:
        with pytest.raises(SegueError) as e:
            policy.input(bad)
        assert e.value.code == code, bad
    out = policy.output(str(tmp_path / "out" / "r.wav"))
    assert out == str((tmp_path / "out" / "r.wav").resolve())
    (tmp_path / "out" / "link.wav").symlink_to(outside)
    for bad in (str(tmp_path / "in" / "r.wav"), str(tmp_path / "out" / "link.wav"),
                str(tmp_path / "out" / "nodir" / "r.wav"), str(tmp_path / "out" / "..")):
        with pytest.raises(SegueError) as e:
            policy.output(bad)
        assert e.value.code == "path_not_allowed", bad


# ---- fuzzing ---------------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20)
fields = st.sampled_from(["task", "audio", "start_s", "end_s", "duration_s", "steps", "seed", "model", "span",
                          "reference", "strength", "output", "bit_depth", "crossfade_s", "bogus"])
params_strategy = st.dictionaries(fields, json_values | st.just({"frame": 0}) | st.sampled_from(
    ["infill", "style", "/a.wav", 0.5, 3]), max_size=8)


@FUZZ
@given(frames=st.lists(st.binary(max_size=200), min_size=0, max_size=4))
@example(frames=[b"[" * 100000])
@example(frames=[b'{"v": 1, "type": "render", "params": {"task": "infill", "steps": ' + b"9" * 5000 + b"}}"])
@example(frames=[b'{"v": 1, "type": "health", "id": "\\ud800"}'])
def test_fuzz_decode_message_on_raw_bytes_answers_or_refuses(frames):
    try:
        msg = decode_message(frames)
    except SegueError as e:
        assert e.code and isinstance(e.message, str)
        json.dumps(protocol.error_reply(None, e))  # the refusal can always be sent back
    else:
        assert msg.type in protocol.REQUEST_TYPES


@FUZZ
@given(mtype=st.sampled_from(protocol.REQUEST_TYPES + ("x",)), params=params_strategy,
       descs=st.lists(st.dictionaries(st.sampled_from(["shape", "sample_rate", "dtype"]),
                                      json_values | st.just([2, 4]) | st.just(44100), max_size=3), max_size=2),
       payload=st.binary(max_size=64), args=st.dictionaries(st.text(max_size=8), json_values, max_size=3))
@example(mtype="render", params={"task": "infill", "audio": {"frame": 0}, "start_s": 0.0, "end_s": 1e308},
         descs=[{"shape": [2, 4], "sample_rate": 44100}], payload=b"\x00" * 32, args={})
@example(mtype="render", params={"task": "infill", "audio": {"frame": 0}, "start_s": 0.0, "end_s": 5e-5},
         descs=[{"shape": [2, 4], "sample_rate": 44100}], payload=b"\x00" * 32, args={})
@example(mtype="render", params={"task": "infill", "audio": {"frame": 0}, "start_s": 0.0, "end_s": 5e-5,
                                 "preset": "/tmp/x.toml"},  # a preset file would be read before any path check
         descs=[{"shape": [2, 4], "sample_rate": 44100}], payload=b"\x00" * 32, args={})
def test_fuzz_decode_message_on_structured_headers(osc_server, mtype, params, descs, payload, args):
    raw = json.dumps({"v": 1, "type": mtype, "id": "f1", "params": params, "frames": descs, "args": args}).encode()
    try:
        msg = decode_message([raw] + [payload] * len(descs))
    except SegueError as e:
        assert e.code
    else:
        if msg.type == "render":
            submit_or_refuse(osc_server.manager, msg)


osc_args = st.lists(st.one_of(st.integers(-2**31, 2**31 - 1), st.floats(width=32, allow_nan=True),
                              st.text(max_size=30), st.binary(max_size=10), st.booleans(), st.none(),
                              st.sampled_from(["steps=3", "seed=x", "id=ok-1", "reply_port=0", "start=nan",
                                               "token=t", "end=1e400", "/in/a.wav", "timeout=-1"])), max_size=6)


@FUZZ
@given(address=st.sampled_from(["/segue/infill", "/segue/continue", "/segue/transition", "/segue/style",
                                "/segue/cancel", "/segue/status", "/segue/health", "/segue/unload", "/segue/",
                                "/segue/x", "/x"]), args=osc_args)
@example(address="/segue/infill", args=["/in/a.wav", 0.0, 1.0, "steps=" + "9" * 5000])
@example(address="/segue/status", args=[b"\x00"])
def test_fuzz_decode_osc_answers_or_refuses(osc_server, address, args):
    try:
        msg = decode_osc(address, args)
    except SegueError as e:
        assert e.code
    else:
        assert msg.type in protocol.REQUEST_TYPES
        if msg.type == "render":
            submit_or_refuse(osc_server.manager, msg)


def submit_or_refuse(manager: JobManager, msg) -> None:
    """The daemon's validation path: either a queued job holding a valid engine request, or a coded refusal."""
    try:
        job, _ = manager.submit(msg, {"via": "fuzz"}, time.time())
    except SegueError as e:
        assert e.code
    else:
        assert isinstance(manager.store.load_request(job), RenderRequest)


@pytest.fixture(scope="module")
def osc_server(tmp_path_factory):
    """An OSC server on a manager whose workers are never started: decoding and replies only."""
    root = tmp_path_factory.mktemp("osc")
    manager = JobManager(make_config(root))
    server = RecordingOscServer(manager, host="127.0.0.1", port=0)
    yield server
    server.close()
    manager.close()


class RecordingOscServer(OscServer):
    """Keeps what would be sent, so a test can check every datagram got its answer."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.sent: list[tuple] = []

    def _send(self, target, address, *args):
        build(address, *args)  # the reply must be encodable
        self.sent.append((target, address, args))


@FUZZ
@given(data=st.binary(max_size=300))
@example(data=b"#bundle\x00" + struct.pack(">Q", 2**63) + struct.pack(">i", 16) + build("/segue/health"))
@example(data=b"/segue/infill\x00\x00\x00,sff\x00\x00\x00\x00")
@example(data=b"/segue/infill\x00\x00\x00,b\x00\x00\x7f\xff\xff\xff")
def test_fuzz_osc_datagrams_always_get_an_answer(osc_server, data):
    osc_server.sent.clear()
    t0 = time.monotonic()
    osc_server.handle_datagram(data, ("127.0.0.1", 9), time.time())
    assert time.monotonic() - t0 < 1.0  # a future time tag never delays handling
    assert osc_server.sent, "every datagram gets at least one reply"
    assert all(t == ("127.0.0.1", 9) for t, _, _ in osc_server.sent)
    assert not [a for _, addr, a in osc_server.sent if addr == "/segue/error" and a[1] == "internal"]


@FUZZ
@given(path=st.text(st.characters(blacklist_categories=()), max_size=40))
@example(path="/\ud800")  # once an UnicodeEncodeError from os.stat, answered as "internal"
@example(path="/" + "a/" * 3000)
def test_fuzz_path_confinement_never_leaks_an_unexpected_error(tmp_path_factory, path):
    root = tmp_path_factory.getbasetemp() / "fuzzroot"
    root.mkdir(exist_ok=True)
    policy = PathPolicy.create([root], root / "out")
    for check in (policy.input, policy.output):
        try:
            resolved = check(path)
        except SegueError:
            continue
        assert resolved.startswith(str(root.resolve()))


def test_the_fuzz_corpus_is_answered_without_crashing(osc_server):
    files = sorted(CORPUS.glob("*"))
    assert len(files) >= 6
    for f in files:
        data = f.read_bytes()
        if f.suffix == ".zmq":  # frames separated by a line holding only ---frame---
            try:
                msg = decode_message(data.split(b"\n---frame---\n"))
                if msg.type == "render":  # path checks and recording, as the daemon would
                    osc_server.manager.submit(msg, {"via": "zmq"}, time.time())
            except SegueError as e:
                assert e.code, f.name
        else:
            osc_server.sent.clear()
            osc_server.handle_datagram(data, ("127.0.0.1", 9), time.time())
            assert osc_server.sent, f.name


def test_only_loopback_endpoints_count_as_private():
    private = ["tcp://127.0.0.1:5557", "tcp://127.0.0.1:*", "tcp://[::1]:5557", "tcp://localhost:1", "ipc:///tmp/s"]
    exposed = ["tcp://*:5557", "tcp://0.0.0.0:5557", "tcp://10.0.0.7:5557", "tcp://eth0:5557", "tcp://[::]:1"]
    assert [protocol.is_loopback_endpoint(e) for e in private] == [True] * len(private)
    assert [protocol.is_loopback_endpoint(e) for e in exposed] == [False] * len(exposed)


def test_presets_are_named_not_given_as_files_over_the_bridge(tmp_path):
    policy = PathPolicy.create([tmp_path], tmp_path / "out")
    clip = str(write_wav(tmp_path / "a.wav", tone(0.2)))
    base = {"task": "infill", "audio": clip, "start_s": 0.0, "end_s": 0.1}
    assert policy.confine({**base, "preset": "infill"})["preset"] == "infill"
    for preset in ("/etc/segue/evil.toml", "evil.toml", "../presets/infill", "..\\x"):
        with pytest.raises(SegueError) as e:
            policy.confine({**base, "preset": preset})
        assert e.value.code == "path_not_allowed", preset


class RecordingZmqServer(ZmqServer):
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.sent: list[dict] = []

    def _send(self, envelope, obj):
        protocol.encode(obj)  # the reply must be encodable
        self.sent.append(obj)


@pytest.fixture(scope="module")
def zmq_server(osc_server):
    import zmq
    ctx = zmq.Context()
    server = RecordingZmqServer(osc_server.manager, endpoint="tcp://127.0.0.1:*", events="tcp://127.0.0.1:*",
                                context=ctx)
    yield server
    server.close()
    ctx.term()


@FUZZ
@given(mtype=st.sampled_from(protocol.REQUEST_TYPES), mid=st.one_of(st.none(), st.just("j1"), st.text(max_size=8)),
       args=st.dictionaries(st.sampled_from(["timeout_s", "limit", "states", "model", "x"]),
                            json_values | st.just(["queued"]) | st.just(5), max_size=3),
       params=params_strategy, envelope=st.sampled_from([[b"peer"], [b"peer", b""]]))
@example(mtype="jobs", mid=None, args={"states": []}, params={}, envelope=[b"peer"])
def test_fuzz_every_zmq_request_gets_one_answer_and_never_an_internal_error(zmq_server, mtype, mid, args, params,
                                                                              envelope):
    header = {"v": 1, "type": mtype, "args": args, "params": params}
    if mid is not None:
        header["id"] = mid
    zmq_server.sent.clear()
    waiting = sum(len(w) for w in zmq_server._waiters.values())
    zmq_server._handle(envelope + [json.dumps(header).encode()], time.time())
    answered = len(zmq_server.sent) + sum(len(w) for w in zmq_server._waiters.values()) - waiting
    assert answered == 1  # a reply now, or (wait on a live job) one reply later
    assert not [r for r in zmq_server.sent if r["type"] == "error" and r["error"]["code"] == "internal"]
