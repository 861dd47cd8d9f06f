"""Authentication comes before work: the token and header are checked before any PCM is touched.

Replays of the attack run: unauthenticated clients sending large PCM frames made the daemon
decode (and hold) them before refusing; one valid large job stalled every other client; an
empty token authorised `"token": ""`; a failing bind printed a traceback.
"""
from __future__ import annotations

import json
import logging
import threading

import pytest
import zmq

from bridge import protocol, serve
from bridge.daemon import JobManager
from bridge.osc_server import OscServer
from bridge.zmq_server import ZmqServer
from engine.errors import SegueError
from engine.request import PCMAudio

from support.bridge_fixtures import make_config, tone, zmq_serving

TOKEN = "a-long-enough-test-secret"


@pytest.fixture
def served(tmp_path):
    """A ZeroMQ server with a token on a manager whose workers never start (requests are only recorded)."""
    with zmq_serving(JobManager(make_config(tmp_path)), token=TOKEN) as (server, ctx):
        yield server, ctx, tmp_path


def client(server, ctx):
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 10000)
    sock.connect(server.endpoint)
    return sock


def pcm_render(mid: str, token, seconds: float = 1.0) -> list[bytes]:
    params = {"task": "infill", "audio": {"frame": 0}, "start_s": 0.2, "end_s": 0.4, "model": "analytic"}
    return protocol.encode_render(params, mid=mid, pcm=[PCMAudio(tone(seconds), 44100)], token=token)


def test_pcm_from_a_client_without_the_token_is_never_decoded_or_spooled(served, monkeypatch):
    server, ctx, root = served
    decoded = []
    real = protocol.decode_frame
    monkeypatch.setattr(protocol, "decode_frame", lambda *a, **kw: decoded.append(1) or real(*a, **kw))
    sock = client(server, ctx)
    try:
        for mid, token in (("no-token", None), ("wrong", "x" * 30), ("empty", "")):
            sock.send_multipart(pcm_render(mid, token))
            answer = json.loads(sock.recv())
            assert (answer["id"], answer["error"]["code"]) == (mid, "unauthorized")
    finally:
        sock.close()
    assert decoded == []
    assert list((root / "state" / "spool").iterdir()) == []
    assert server.manager.store.get("no-token") is None


def test_pcm_is_decoded_and_recorded_off_the_serving_thread_so_others_are_answered(served, monkeypatch):
    server, ctx, _ = served
    release, entered = threading.Event(), threading.Event()
    threads = []
    real = protocol.decode_frame

    def slow_decode(*a, **kw):  # stands in for decoding and spooling a 212 MB frame
        threads.append(threading.current_thread().name)
        entered.set()
        release.wait(10)
        return real(*a, **kw)
    monkeypatch.setattr(protocol, "decode_frame", slow_decode)
    big, other = client(server, ctx), client(server, ctx)
    try:
        big.send_multipart(pcm_render("big", TOKEN))
        assert entered.wait(10)
        other.send_multipart(protocol.encode_request("health", mid="h", token=TOKEN))
        assert json.loads(other.recv())["type"] == "health"  # answered while the PCM job is still being read
        release.set()
        accepted = json.loads(big.recv())
    finally:
        release.set()
        big.close()
        other.close()
    assert (accepted["type"], accepted["id"]) == ("accepted", "big")
    assert threads and all(name.startswith("segue-pcm") for name in threads)


def test_an_empty_token_is_refused_everywhere(tmp_path, monkeypatch):
    manager = JobManager(make_config(tmp_path))
    ctx = zmq.Context()
    try:
        with pytest.raises(ValueError, match="empty"):
            ZmqServer(manager, endpoint="tcp://0.0.0.0:*", events="tcp://127.0.0.1:*", token="", context=ctx)
        with pytest.raises(ValueError, match="empty"):
            OscServer(manager, host="0.0.0.0", port=0, token="")
    finally:
        manager.close()
        ctx.term()
    with pytest.raises(SegueError) as e:
        protocol.check_token("", "")
    assert e.value.code == "unauthorized"
    base = ["--state-dir", str(tmp_path / "state"), "--output-dir", str(tmp_path / "out"), "--allow-root",
            str(tmp_path), "--osc-port", "-1", "--zmq", "tcp://0.0.0.0:*", "--events", "tcp://127.0.0.1:*",
            "--device", "cpu"]
    assert serve.main(base + ["--token", ""]) == 2
    monkeypatch.setenv("SEGUE_TOKEN", "")
    assert serve.main(base) == 2
    monkeypatch.setenv("SEGUE_TOKEN", "short")
    assert serve.main(base) == 2


def test_the_token_can_come_from_a_file_or_the_environment(tmp_path, monkeypatch):
    parser = serve.argparse.ArgumentParser()
    serve.add_serve_arguments(parser)
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    monkeypatch.setenv("SEGUE_TOKEN", "x" * 20)
    assert serve.read_token(parser.parse_args(["--token-file", str(path)])) == TOKEN
    assert serve.read_token(parser.parse_args([])) == "x" * 20
    monkeypatch.delenv("SEGUE_TOKEN")
    assert serve.read_token(parser.parse_args([])) is None
    with pytest.raises(ValueError, match="cannot be read"):
        serve.read_token(parser.parse_args(["--token-file", str(tmp_path / "missing")]))


def test_a_failing_bind_is_one_line_and_exit_status_2(tmp_path, caplog):
    ctx = zmq.Context()
    holder = ctx.socket(zmq.ROUTER)
    port = holder.bind_to_random_port("tcp://127.0.0.1")
    try:
        with caplog.at_level(logging.ERROR, logger="segue.serve"):
            status = serve.main(["--state-dir", str(tmp_path / "state"), "--output-dir", str(tmp_path / "out"),
                                 "--allow-root", str(tmp_path), "--osc-port", "-1", "--device", "cpu",
                                 "--zmq", f"tcp://127.0.0.1:{port}", "--events", "tcp://127.0.0.1:*"])
    finally:
        holder.close(0)
        ctx.term()
    assert status == 2
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and f"cannot bind tcp://127.0.0.1:{port}" in errors[0].getMessage()
    assert errors[0].exc_info is None

