"""CURVE on both sockets: only clients whose public key the daemon holds can talk to it or listen.

The token authenticates requests, not connections: without CURVE anyone who can connect reads
every PUB event (job ids, result paths). With `segue serve --curve-dir DIR` (keys from
`segue keys DIR`), a client without an allowed key never completes the handshake.
"""
from __future__ import annotations

import json
import time

import pytest
import zmq

from bridge import keys, protocol
from bridge.daemon import JobManager
from bridge.zmq_server import ZmqServer

from support.bridge_fixtures import make_config, zmq_serving


@pytest.fixture
def curve_daemon(tmp_path):
    folder = str(tmp_path / "keys")
    assert keys.main([folder]) == 0
    assert keys.main([folder, "--client", "daw"]) == 0
    keys.make_client_keys(str(tmp_path / "stranger"), "stranger")  # a valid pair the daemon does not know
    with zmq_serving(JobManager(make_config(tmp_path)), curve=keys.load_server_keys(folder)) as (server, ctx):
        yield server, ctx, tmp_path


def ask_health(sock) -> dict | None:
    sock.setsockopt(zmq.RCVTIMEO, 1500)
    sock.setsockopt(zmq.LINGER, 0)
    sock.send_multipart(protocol.encode_request("health", mid="h"))
    try:
        return json.loads(sock.recv())
    except zmq.Again:
        return None
    finally:
        sock.close()


def test_an_allowed_client_is_answered_and_others_get_nothing(curve_daemon):
    server, ctx, root = curve_daemon
    server_public = str(root / "keys" / "server.key")
    allowed = keys.client_socket(ctx, zmq.DEALER, str(root / "keys" / "daw.key_secret"), server_public)
    allowed.connect(server.endpoint)
    assert (ask_health(allowed) or {}).get("type") == "health"
    plain = ctx.socket(zmq.DEALER)
    plain.connect(server.endpoint)
    assert ask_health(plain) is None
    stranger = keys.client_socket(ctx, zmq.DEALER, str(root / "stranger" / "stranger.key_secret"), server_public)
    stranger.connect(server.endpoint)
    assert ask_health(stranger) is None


def test_events_reach_only_allowed_subscribers(curve_daemon):
    server, ctx, root = curve_daemon
    server_public = str(root / "keys" / "server.key")
    allowed = keys.client_socket(ctx, zmq.SUB, str(root / "keys" / "daw.key_secret"), server_public)
    plain = ctx.socket(zmq.SUB)
    for sub in (allowed, plain):
        sub.setsockopt(zmq.SUBSCRIBE, b"segue/job/")
        sub.setsockopt(zmq.RCVTIMEO, 1500)
        sub.setsockopt(zmq.LINGER, 0)
        sub.connect(server.events_endpoint)
    time.sleep(0.5)  # let the subscriptions (and handshakes) complete
    from bridge.daemon import JobEvent
    server._on_event(JobEvent("progress", "j1", {"via": "zmq"}, {"step": 1, "total": 2, "fraction": 0.5}))
    try:
        assert allowed.recv_multipart()[0] == b"segue/job/j1/"
        with pytest.raises(zmq.Again):
            plain.recv_multipart()
    finally:
        allowed.close()
        plain.close()


def test_curve_allows_binding_beyond_loopback_and_keys_are_checked_at_start(tmp_path):
    with pytest.raises(ValueError, match="segue keys"):
        keys.load_server_keys(str(tmp_path / "none"))
    keys.make_server_keys(str(tmp_path / "k"))
    with pytest.raises(ValueError, match="no client keys"):
        keys.load_server_keys(str(tmp_path / "k"))
    with pytest.raises(FileExistsError):
        keys.make_server_keys(str(tmp_path / "k"))
    keys.make_client_keys(str(tmp_path / "k"), "c")
    manager = JobManager(make_config(tmp_path))
    ctx = zmq.Context()
    try:
        server = ZmqServer(manager, endpoint="tcp://0.0.0.0:*", events="tcp://127.0.0.1:*", context=ctx,
                           curve=keys.load_server_keys(str(tmp_path / "k")))
        server.close()
    finally:
        manager.close()
        ctx.term()


def test_serve_refuses_a_curve_dir_without_keys_with_exit_status_2(tmp_path):
    from bridge import serve
    assert serve.main(["--state-dir", str(tmp_path / "state"), "--output-dir", str(tmp_path / "out"),
                       "--allow-root", str(tmp_path), "--osc-port", "-1", "--device", "cpu",
                       "--zmq", "tcp://127.0.0.1:*", "--events", "tcp://127.0.0.1:*",
                       "--curve-dir", str(tmp_path / "no-keys")]) == 2
