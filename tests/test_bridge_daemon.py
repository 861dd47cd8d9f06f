"""The daemon through its ZeroMQ and OSC front ends: real worker subprocess, real renders (analytic model)."""
from __future__ import annotations

import json
import os
import signal
import threading
import time

import numpy as np
import pytest
import zmq

from bridge import protocol
from bridge.daemon import JobManager, restart_delay
from bridge.osc_server import OscServer, build
from bridge.protocol import Limits
from bridge.zmq_server import ZmqServer
from engine.request import PCMAudio

from support.bridge_fixtures import (InProcessDaemon, OscListener, ZmqPeer, final_count, make_config, read_wav,
                             render_frames, tone, write_wav)
from support.bridge_renders import CRASH_SEED, HANG_SEED, SLOW_SEED


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    root = tmp_path_factory.mktemp("daemon")
    d = InProcessDaemon(root, make_config(root)).start()
    write_wav(root / "in" / "clip.wav", tone(2.0))
    (root / "in" / "broken.wav").write_bytes(b"RIFF\x00\x00not really a wav file" * 10)
    yield d
    d.stop()


@pytest.fixture
def peer(daemon):
    p = ZmqPeer(daemon.zmq.endpoint, zmq.DEALER)
    yield p
    p.close()


def clip(daemon) -> str:
    return str(daemon.root / "in" / "clip.wav")


def infill(daemon, **kw) -> dict:
    return {"task": "infill", "audio": clip(daemon), "start_s": 0.8, "end_s": 1.2, "model": "analytic",
            "steps": 4, "context_s": 0.5, **kw}


def wait(peer, job_id: str, timeout_s: float = 30.0) -> dict:
    return peer.call(protocol.encode_request("wait", mid=job_id, timeout_s=timeout_s))


def wait_state(daemon, job_id: str, state: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while daemon.manager.store.get(job_id).state != state:
        assert time.monotonic() < deadline, f"job {job_id} never reached {state}"
        time.sleep(0.02)


def test_a_req_client_gets_accepted_then_the_rendered_clip(daemon):
    req = ZmqPeer(daemon.zmq.endpoint, zmq.REQ)
    try:
        acc = req.call(render_frames(infill(daemon, span="region"), mid="req-1"))
        assert (acc["type"], acc["id"], acc["v"], acc["created"]) == ("accepted", "req-1", 1, True)
        done = req.call(protocol.encode_request("wait", mid="req-1", timeout_s=30))
    finally:
        req.close()
    assert done["type"] == "done", done
    result = done["result"]
    audio, rate = read_wav(result["path"])
    assert rate == 44100 and audio.shape[0] == 2
    # span=region: the clip covers exactly the 0.4 s region, placed at its start
    assert result["offset_s"] == pytest.approx(0.8, abs=1e-6)
    assert audio.shape[1] == pytest.approx(0.4 * 44100, abs=2)
    sidecar = json.load(open(result["sidecar_path"]))
    assert sidecar["seed"] == 0 and sidecar["request"]["task"] == "infill"
    job = daemon.manager.store.get("req-1")
    assert job.received_at <= job.accepted_at <= job.started_at <= job.finished_at
    assert job.attempts == 1


def test_a_dealer_client_can_send_pcm_frames_and_the_spool_is_cleaned(daemon, peer):
    pcm = PCMAudio(tone(1.5, freq=330.0), 44100)
    params = {"task": "infill", "audio": {"frame": 0}, "start_s": 0.5, "end_s": 0.9, "model": "analytic",
              "steps": 3, "span": "full", "context_s": 0.3}
    acc = peer.call(render_frames(params, mid="pcm-1", pcm=[pcm]))
    assert acc["type"] == "accepted"
    done = wait(peer, "pcm-1")
    assert done["type"] == "done", done
    audio, _ = read_wav(done["result"]["path"])
    assert audio.shape == (2, 66150)  # span=full: the whole 1.5 s input timeline
    # outside the edited window (context 0.3 s + seam) the input comes back unchanged (24-bit rounding)
    np.testing.assert_allclose(audio[:, :4410], pcm.samples[:, :4410], atol=1e-4)
    assert os.listdir(daemon.manager.store.spool_dir) == []


def test_progress_is_published_per_job_then_exactly_one_done(daemon, peer):
    sub = daemon.zmq.ctx.socket(zmq.SUB)
    sub.connect(daemon.zmq.events_endpoint)
    sub.setsockopt(zmq.SUBSCRIBE, b"segue/job/prog-1/")
    sub.setsockopt(zmq.RCVTIMEO, 20000)
    time.sleep(0.3)  # let the subscription reach the publisher
    try:
        peer.call(render_frames(infill(daemon, steps=5, seed=SLOW_SEED), mid="prog-1"))
        events = []
        while not events or events[-1]["type"] not in ("done", "error"):
            topic, body = sub.recv_multipart()
            assert topic == b"segue/job/prog-1/"
            events.append(json.loads(body))
    finally:
        sub.close()
    fractions = [e["fraction"] for e in events if e["type"] == "progress"]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and len(fractions) >= 3
    assert {e["stage"] for e in events if e["type"] == "progress"} == {"sampling"}   # an infill: sampler steps only
    assert [e["type"] for e in events].count("done") == 1
    assert all(e["id"] == "prog-1" for e in events)


def test_cancelling_a_running_job_stops_it_without_writing(daemon, peer):
    before = set(os.listdir(daemon.config.output_dir))
    peer.call(render_frames(infill(daemon, steps=200, seed=SLOW_SEED), mid="cancel-run"))
    wait_state(daemon, "cancel-run", "running")
    t0 = time.monotonic()
    status = peer.call(protocol.encode_request("cancel", mid="cancel-run"))
    assert status["type"] == "status" and status["state"] == "running"
    final = wait(peer, "cancel-run")
    assert time.monotonic() - t0 < 3.0
    assert (final["type"], final["error"]["code"]) == ("error", "cancelled")
    assert set(os.listdir(daemon.config.output_dir)) == before


def test_cancelling_a_queued_job_answers_at_once(daemon, peer):
    peer.call(render_frames(infill(daemon, steps=200, seed=SLOW_SEED), mid="busy"))
    peer.call(render_frames(infill(daemon, seed=5), mid="queued-1"))
    status = peer.call(protocol.encode_request("cancel", mid="queued-1"))
    assert status["state"] == "cancelled"
    assert wait(peer, "queued-1")["error"]["code"] == "cancelled"
    peer.call(protocol.encode_request("cancel", mid="busy"))
    assert wait(peer, "busy")["error"]["code"] == "cancelled"
    assert daemon.manager.store.get("queued-1").started_at is None


def test_a_job_past_its_time_limit_is_killed_and_the_worker_restarted(daemon, peer):
    restarts = daemon.manager.health()["devices"][0]["restarts"]
    t0 = time.monotonic()
    peer.call(render_frames(infill(daemon, seed=HANG_SEED), mid="hang-1", timeout_s=0.5))
    final = wait(peer, "hang-1")
    assert (final["type"], final["error"]["code"]) == ("error", "timeout")
    assert 0.5 <= time.monotonic() - t0 < 6.0   # time limit + cancel grace (1 s) + kill
    assert daemon.manager.health()["devices"][0]["restarts"] == restarts + 1
    peer.call(render_frames(infill(daemon, seed=11), mid="after-hang"))
    assert wait(peer, "after-hang")["type"] == "done"


def test_a_crashed_worker_fails_its_job_and_is_restarted(daemon, peer):
    before = daemon.manager.health()["devices"][0]
    peer.call(render_frames(infill(daemon, seed=CRASH_SEED), mid="crash-1"))
    final = wait(peer, "crash-1")
    assert (final["type"], final["error"]["code"]) == ("error", "worker_crashed")
    assert "-9" in final["error"]["message"]
    peer.call(render_frames(infill(daemon, seed=12), mid="after-crash"))
    assert wait(peer, "after-crash")["type"] == "done"
    after = daemon.manager.health()["devices"][0]
    assert after["restarts"] == before["restarts"] + 1 and after["pid"] != before["pid"] and after["alive"]


def test_a_worker_that_dies_while_idle_is_replaced_before_the_next_job(daemon, peer):
    before = daemon.manager.health()["devices"][0]
    os.kill(before["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 10
    while daemon.manager.health()["devices"][0]["pid"] == before["pid"]:
        assert time.monotonic() < deadline, "the dead worker was not replaced"
        time.sleep(0.05)
    after = daemon.manager.health()["devices"][0]
    assert after["alive"] and after["restarts"] == before["restarts"] + 1
    peer.call(render_frames(infill(daemon, seed=16), mid="after-idle-death"))
    assert wait(peer, "after-idle-death")["type"] == "done"


def test_a_failing_job_returns_its_error_and_the_daemon_keeps_serving(daemon, peer):
    peer.call(render_frames(infill(daemon, audio=str(daemon.root / "in" / "broken.wav")), mid="broken-1"))
    final = wait(peer, "broken-1")
    assert final["type"] == "error" and final["error"]["code"] == "corrupt_audio"
    peer.call(render_frames(infill(daemon, seed=13), mid="after-broken"))
    assert wait(peer, "after-broken")["type"] == "done"


def test_health_reports_version_models_device_and_queue(daemon, peer):
    peer.call(render_frames(infill(daemon, seed=14), mid="for-health"))
    wait(peer, "for-health")
    h = peer.call(protocol.encode_request("health", mid="h1"))
    assert h["type"] == "health" and h["version"] == "0.1.0" and h["protocol"] == 1
    assert "analytic" in h["models"]["available"] and h["models"]["loaded"] == ["analytic"]
    assert h["devices"][0]["device"] == "cpu" and h["devices"][0]["alive"]
    assert h["queue_length"] == 0 and h["running"] == 0 and h["accepting"]


def test_unload_empties_the_model_cache(daemon, peer):
    peer.call(render_frames(infill(daemon, seed=15), mid="for-unload"))
    wait(peer, "for-unload")
    assert daemon.manager.health()["models"]["loaded"] == ["analytic"]
    assert peer.call(protocol.encode_request("unload", mid="u1"))["type"] == "ok"
    deadline = time.monotonic() + 5
    while daemon.manager.health()["models"]["loaded"]:
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_resending_an_id_reattaches_and_a_different_request_under_it_is_refused(daemon, peer):
    first = peer.call(render_frames(infill(daemon, seed=21), mid="dup-1"))
    again = peer.call(render_frames(infill(daemon, seed=21), mid="dup-1"))
    assert (first["created"], again["created"]) == (True, False)
    clash = peer.call(render_frames(infill(daemon, seed=22), mid="dup-1"))
    assert clash["error"]["code"] == "duplicate_id"
    assert wait(peer, "dup-1")["type"] == "done"
    assert daemon.manager.store.counts()["done"] >= 1
    assert sum(1 for j in daemon.manager.store.list(limit=1000) if j.id == "dup-1") == 1


def test_paths_outside_the_roots_and_symlink_escapes_are_refused_before_queueing(daemon, peer, tmp_path):
    outside = write_wav(tmp_path / "secret.wav", tone(1.0))
    link = daemon.root / "in" / "link.wav"
    if not link.exists():
        link.symlink_to(outside)
    queued = daemon.manager.store.counts()
    for path in (str(outside), str(link), "relative/clip.wav", str(daemon.root / "in" / ".." / ".." / "x.wav")):
        r = peer.call(render_frames(infill(daemon, audio=path)))
        assert r["error"]["code"] == "path_not_allowed", (path, r)
    r = peer.call(render_frames(infill(daemon, output=str(tmp_path / "out.wav"))))
    assert r["error"]["code"] == "path_not_allowed"
    assert daemon.manager.store.counts() == queued


def test_bad_requests_get_their_engine_error_codes(daemon, peer):
    cases = [
        (render_frames(infill(daemon, end_s=0.5)), "invalid_request"),
        (render_frames({**infill(daemon), "bogus": 1}), "invalid_request"),
        ([b'{"v": 99, "type": "health"}'], "unsupported_version"),
        ([b"\xff\xfe"], "bad_message"),
        ([protocol.encode({"v": 1, "type": "render", "params": {"task": "infill"},
                           "frames": [{"shape": [2, 10], "sample_rate": 44100}]}), b"\x00" * 79], "bad_message"),
        (protocol.encode_request("status", mid="no-such-job"), "unknown_job"),
    ]
    for frames, code in cases:
        r = peer.call(frames)
        assert (r["type"], r["error"]["code"]) == ("error", code), (frames[0][:80], r)


def test_osc_render_replies_to_the_named_port_with_progress_and_done(daemon):
    listener = OscListener()
    try:
        daemon.osc.sock.sendto(b"", daemon.osc.address)  # an empty datagram is answered, not fatal
        msg = build("/segue/infill", clip(daemon), 0.8, 1.2, "model=analytic", "steps=6", f"seed={SLOW_SEED}",
                    "id=osc-1", f"reply_port={listener.port}", "context=0.5")
        listener.sock.sendto(msg, daemon.osc.address)
        got = listener.collect(lambda m: final_count(m, "osc-1") > 0)
    finally:
        listener.close()
    addresses = [a for a, _ in got]
    assert addresses[0] == "/segue/accepted" and got[0][1] == ["osc-1"]
    progress = [p[1] for a, p in got if a == "/segue/progress"]
    assert progress and progress == sorted(progress) and progress[-1] == pytest.approx(1.0)
    done = [p for a, p in got if a == "/segue/done"]
    assert len(done) == 1 and done[0][0] == "osc-1" and os.path.exists(done[0][1])
    assert done[0][2] == pytest.approx(0.0) and done[0][3] == pytest.approx(2.0, abs=1e-3)


def test_osc_status_cancel_and_health(daemon):
    listener = OscListener()
    reply = f"reply_port={listener.port}"
    send = lambda *m: listener.sock.sendto(build(*m), daemon.osc.address)  # noqa: E731
    try:
        send("/segue/infill", clip(daemon), 0.8, 1.2, "model=analytic", "steps=200", f"seed={SLOW_SEED}",
             "id=osc-cancel", reply)
        got = listener.collect(lambda m: any(a == "/segue/progress" for a, _ in m))
        send("/segue/status", "osc-cancel", reply)
        send("/segue/cancel", "osc-cancel", reply)
        got += listener.collect(lambda m: final_count(m, "osc-cancel") > 0)
        send("/segue/status", "osc-cancel", reply)
        send("/segue/health", reply)
        send("/segue/status", "no-such-job", reply)
        got += listener.collect(lambda m: len([a for a, _ in m if a in ("/segue/health", "/segue/error")]) >= 3)
    finally:
        listener.close()
    statuses = [p for a, p in got if a == "/segue/status"]
    assert statuses[0] == ["osc-cancel", "running"] and statuses[-1] == ["osc-cancel", "cancelled"]
    errors = [p for a, p in got if a == "/segue/error"]
    assert ["osc-cancel", "cancelled"] in [e[:2] for e in errors]   # the job's one final answer ...
    assert sum(1 for e in errors if e[0] == "osc-cancel") == 2      # ... repeated once for the last status query
    assert ["no-such-job", "unknown_job"] in [e[:2] for e in errors]
    health = [p for a, p in got if a == "/segue/health"][0]
    assert health[0] == "0.1.0" and health[1] == "cpu" and isinstance(health[2], int)


def test_osc_errors_name_the_code(daemon):
    listener = OscListener()
    try:
        for m in (build("/segue/infill", clip(daemon), 1.2, 0.8, "id=osc-bad"), build("/segue/nope", 1),
                  build("/segue/infill", "/etc/passwd", 0.1, 0.2, "id=osc-etc"), b"#bundle\x00garbage"):
            listener.sock.sendto(m, daemon.osc.address)
        got = listener.collect(lambda m: len(m) >= 4)
    finally:
        listener.close()
    errors = sorted((p[0], p[1]) for a, p in got if a == "/segue/error")
    assert errors == sorted([("osc-bad", "invalid_request"), ("", "bad_message"), ("osc-etc", "path_not_allowed"),
                             ("", "bad_message")])


def test_a_token_is_required_to_bind_beyond_loopback_and_then_checked(tmp_path):
    manager = JobManager(make_config(tmp_path))
    ctx = zmq.Context()
    try:
        with pytest.raises(ValueError, match="token"):
            ZmqServer(manager, endpoint="tcp://0.0.0.0:*", events="tcp://127.0.0.1:*", context=ctx)
        server = ZmqServer(manager, endpoint="tcp://127.0.0.1:*", events="tcp://127.0.0.1:*", token="s3cret",
                           context=ctx)
        denied = ctx.socket(zmq.DEALER)
        denied.connect(server.endpoint)
        denied.send_multipart(protocol.encode_request("health", mid="t2", token="wrong"))
        denied.send_multipart(protocol.encode_request("health", mid="t3", token="s3cret"))
        stop = threading.Event()
        t = threading.Thread(target=server.serve, args=(stop,))
        t.start()
        denied.setsockopt(zmq.RCVTIMEO, 5000)
        r2, r3 = json.loads(denied.recv()), json.loads(denied.recv())
        stop.set()
        t.join()
        denied.close()
        server.close()
        assert (r2["id"], r2["error"]["code"]) == ("t2", "unauthorized")
        assert (r3["id"], r3["type"]) == ("t3", "health")
    finally:
        manager.close()
        ctx.term()


def test_an_oversized_frame_is_dropped_by_libzmq_and_other_clients_are_still_served(tmp_path):
    manager = JobManager(make_config(tmp_path, limits=Limits(max_frame_bytes=4096)))
    ctx = zmq.Context()
    server = ZmqServer(manager, endpoint="tcp://127.0.0.1:*", events="tcp://127.0.0.1:*", context=ctx)
    stop = threading.Event()
    t = threading.Thread(target=server.serve, args=(stop,))
    t.start()
    hostile, friendly = ctx.socket(zmq.DEALER), ctx.socket(zmq.DEALER)
    try:
        for s in (hostile, friendly):
            s.setsockopt(zmq.LINGER, 0)
            s.connect(server.endpoint)
        hostile.send_multipart(protocol.encode_request("health", mid="big") + [b"\x00" * 100_000])
        assert hostile.poll(500) == 0  # never read, so never answered: the connection is dropped instead
        friendly.send_multipart(protocol.encode_request("health", mid="small"))
        assert friendly.poll(5000) and json.loads(friendly.recv())["id"] == "small"
        # within the frame limit but over the frame count: read, and refused with a code
        friendly.send_multipart(protocol.encode_request("health", mid="many") + [b"x"] * 4)
        assert friendly.poll(5000) and json.loads(friendly.recv())["error"]["code"] == "too_large"
    finally:
        stop.set()
        t.join()
        hostile.close()
        friendly.close()
        server.close()
        manager.close()
        ctx.term()


def test_osc_needs_the_token_when_one_is_set_and_refuses_to_bind_beyond_loopback_without(tmp_path):
    manager = JobManager(make_config(tmp_path))
    try:
        with pytest.raises(ValueError, match="token"):
            OscServer(manager, host="0.0.0.0", port=0)
        server = OscServer(manager, host="127.0.0.1", port=0, token="k3y")
        listener = OscListener()
        try:
            for m in (build("/segue/health", f"reply_port={listener.port}"),
                      build("/segue/health", "token=nope", f"reply_port={listener.port}"),
                      build("/segue/health", "token=k3y", f"reply_port={listener.port}")):
                server.handle_datagram(m, ("127.0.0.1", 9), time.time())
            got = listener.collect(lambda m: len(m) >= 3, timeout_s=5)
        finally:
            listener.close()
            server.close()
        assert [(a, p[1] if a == "/segue/error" else None) for a, p in got] == [
            ("/segue/error", "unauthorized"), ("/segue/error", "unauthorized"), ("/segue/health", None)]
    finally:
        manager.close()


def test_a_waiting_client_gives_up_on_a_daemon_that_never_comes_back():
    from bridge.client import ClientError, SegueClient
    sock = zmq.Context.instance().socket(zmq.ROUTER)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    sock.close()  # an address where no daemon answers any more
    client = SegueClient(f"tcp://127.0.0.1:{port}", reply_timeout_s=0.2, reconnect_s=1.0, wait_chunk_s=0.3)
    t0 = time.monotonic()
    try:
        with pytest.raises(ClientError) as e:
            client.wait("some-job")
    finally:
        client.close()
    assert e.value.code == "unreachable"
    assert 1.0 <= time.monotonic() - t0 < 5.0  # kept asking for reconnect_s, then stopped: no endless hang


def test_a_render_entry_that_cannot_load_is_refused_at_start(tmp_path):
    with pytest.raises(ValueError, match="no_such_module"):
        JobManager(make_config(tmp_path, render_entry="no_such_module:render"))


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_a_worker_that_dies_at_start_fails_jobs_instead_of_hanging_them(tmp_path):
    # cuda:0 on a machine without CUDA: the worker dies while starting, as with a broken driver
    d = InProcessDaemon(tmp_path, make_config(tmp_path, devices=("cuda:0",))).start()
    try:
        write_wav(tmp_path / "in" / "clip.wav", tone(1.0))
        peer = ZmqPeer(d.zmq.endpoint)
        peer.call(render_frames({"task": "infill", "audio": str(tmp_path / "in" / "clip.wav"), "start_s": 0.2,
                                 "end_s": 0.4, "model": "analytic", "steps": 2}, mid="doomed"))
        final = wait(peer, "doomed")
        time.sleep(3.0)
        restarts = d.manager.health()["devices"][0]["restarts"]
        peer.close()
    finally:
        d.stop()
    assert (final["type"], final["error"]["code"]) == ("error", "worker_crashed")
    assert 1 <= restarts <= 6  # not a spawn storm


def test_restarts_of_a_worker_that_keeps_dying_at_start_back_off():
    assert [restart_delay(n) for n in range(9)] == [0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


def test_serve_refuses_to_start_on_a_bad_device_or_an_exposed_address_without_a_token(tmp_path, monkeypatch):
    from bridge import serve
    monkeypatch.delenv("SEGUE_TOKEN", raising=False)
    base = ["--state-dir", str(tmp_path / "state"), "--output-dir", str(tmp_path / "out"), "--allow-root",
            str(tmp_path), "--osc-port", "-1", "--events", "tcp://127.0.0.1:*"]
    assert serve.main(base + ["--zmq", "tcp://127.0.0.1:*", "--device", "bogus"]) == 2
    assert serve.main(base + ["--zmq", "tcp://0.0.0.0:*", "--device", "cpu"]) == 2


def test_each_device_has_its_own_worker_and_they_take_queued_jobs_in_parallel(tmp_path):
    # two CPU "devices" stand in for two GPUs (serve itself refuses a device named twice)
    d = InProcessDaemon(tmp_path, make_config(tmp_path, devices=("cpu", "cpu"))).start()
    try:
        write_wav(tmp_path / "in" / "clip.wav", tone(1.0))
        peer = ZmqPeer(d.zmq.endpoint)
        for i in range(2):
            peer.call(render_frames({"task": "infill", "audio": str(tmp_path / "in" / "clip.wav"), "start_s": 0.2,
                                     "end_s": 0.4, "model": "analytic", "steps": 30, "seed": SLOW_SEED,
                                     "context_s": float(i + 1)}, mid=f"par-{i}"))
        deadline = time.monotonic() + 30
        while not all(d.manager.store.get(f"par-{i}").state == "running" for i in range(2)):
            assert time.monotonic() < deadline, "the two jobs never ran at the same time"
            time.sleep(0.02)
        devices = d.manager.health()["devices"]
        assert {x["job"] for x in devices} == {"par-0", "par-1"} and len({x["pid"] for x in devices}) == 2
        for i in range(2):
            peer.call(protocol.encode_request("cancel", mid=f"par-{i}"))
            assert wait(peer, f"par-{i}")["error"]["code"] == "cancelled"
        peer.close()
    finally:
        d.stop()
