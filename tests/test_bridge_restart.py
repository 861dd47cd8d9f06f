"""The daemon as a real process: SIGKILL mid-job and restart, SIGTERM shutdown, and the segue-client CLI."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bridge.client import ClientError, SegueClient

from support.bridge_fixtures import TESTS_DIR, tone, write_wav
from support.bridge_renders import HANG_SEED, SLOW_SEED

REPO = os.path.dirname(TESTS_DIR)


class DaemonProcess:
    """`python -m bridge.serve` on ephemeral loopback ports, over a state folder that outlives it."""

    def __init__(self, root: Path, *extra: str, zmq: str = "tcp://127.0.0.1:*") -> None:
        ready = root / "ready.json"
        if ready.exists():
            ready.unlink()
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([TESTS_DIR, REPO]), SEGUE_TEST_STEP_DELAY="0.1")
        self.log = open(root / "daemon.log", "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bridge.serve", "--zmq", zmq, "--events", "tcp://127.0.0.1:*",
             "--osc-port", "0", "--state-dir", str(root / "state"), "--output-dir", str(root / "out"),
             "--allow-root", str(root / "in"), "--ready-file", str(ready), "--threads", "1",
             "--render-entry", "support.bridge_renders:render", "--device", "cpu", *extra],
            cwd=REPO, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert self.proc.poll() is None, (root / "daemon.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "the daemon did not become ready"
            time.sleep(0.05)
        self.info = json.loads(ready.read_text())
        self.client = SegueClient(self.info["zmq"], reply_timeout_s=10)

    def stop(self, sig: int) -> int:
        self.client.close()
        self.proc.send_signal(sig)
        code = self.proc.wait(60)
        self.log.close()
        return code


@pytest.fixture
def root(tmp_path):
    (tmp_path / "in").mkdir()
    write_wav(tmp_path / "in" / "clip.wav", tone(2.0))
    return tmp_path


def params(root: Path, **kw) -> dict:
    return {"task": "infill", "audio": str(root / "in" / "clip.wav"), "start_s": 0.8, "end_s": 1.2,
            "model": "analytic", "steps": 4, "context_s": 0.5, **kw}


def alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wait_running(client: SegueClient, job_id: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while client.status(job_id)["state"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.05)


def free_tcp_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_sigkill_mid_job_then_restart_reruns_it_and_keeps_finished_results(root):
    endpoint = f"tcp://127.0.0.1:{free_tcp_port()}"
    d = DaemonProcess(root, zmq=endpoint)
    finished = d.client.render(params(root, seed=3), job_id="finished-1")
    d.client.submit(params(root, steps=20, seed=SLOW_SEED), job_id="killed-1")
    d.client.submit(params(root, seed=4), job_id="queued-1")
    wait_running(d.client, "killed-1")
    # a client already waiting keeps waiting through the crash and the restart
    waited: dict = {}
    waiter = SegueClient(endpoint, reply_timeout_s=2)
    thread = threading.Thread(target=lambda: waited.update(r=waiter.wait("killed-1", timeout_s=90)))
    thread.start()
    time.sleep(0.3)
    assert d.stop(signal.SIGKILL) == -signal.SIGKILL

    d = DaemonProcess(root, zmq=endpoint)
    try:
        thread.join(90)
        waiter.close()
        done = d.client.wait("killed-1", timeout_s=60)
        queued = d.client.wait("queued-1", timeout_s=30)
        listed = d.client.status("finished-1")
        rerun = d.client.status("killed-1")
        health = d.client.health()
    finally:
        assert d.stop(signal.SIGTERM) == 0
    assert os.path.exists(done.path) and os.path.exists(queued.path)
    assert waited["r"].path == done.path
    assert rerun["state"] == "done" and rerun["attempts"] == 2  # started before the kill, and once more after
    assert listed["state"] == "done" and listed["result"]["path"] == finished.path
    assert health["jobs"]["done"] == 3 and health["jobs"]["failed"] == 0 and health["queue_length"] == 0


def test_sigterm_requeues_unfinished_work_and_a_job_killed_past_its_attempts_is_reported_failed(root):
    d = DaemonProcess(root, "--shutdown-grace", "0.3", "--max-attempts", "1")
    d.client.submit(params(root, steps=20, seed=SLOW_SEED), job_id="long-1")
    d.client.submit(params(root, seed=6), job_id="waiting-1")
    wait_running(d.client, "long-1")
    t0 = time.monotonic()
    assert d.stop(signal.SIGTERM) == 0
    assert time.monotonic() - t0 < 10.0

    d = DaemonProcess(root, "--max-attempts", "1")
    long_result = d.client.wait("long-1", timeout_s=60)
    d.client.wait("waiting-1", timeout_s=30)
    assert d.client.status("long-1")["attempts"] == 1  # a clean shutdown does not use up an attempt
    assert os.path.exists(long_result.path)
    d.client.submit(params(root, seed=HANG_SEED), job_id="doomed-1")  # a render that never returns
    wait_running(d.client, "doomed-1")
    worker = d.client.health()["devices"][0]["pid"]
    d.stop(signal.SIGKILL)
    deadline = time.monotonic() + 3
    while alive(worker):  # the worker dies with the daemon: no orphan goes on rendering
        assert time.monotonic() < deadline, "the worker outlived the daemon"
        time.sleep(0.05)

    d = DaemonProcess(root, "--max-attempts", "1")
    try:
        with pytest.raises(ClientError) as e:
            d.client.wait("doomed-1", timeout_s=10)
        status = d.client.status("doomed-1")
    finally:
        d.stop(signal.SIGTERM)
    assert e.value.code == "interrupted"
    assert status["state"] == "failed" and status["attempts"] == 1


def final_state(client: SegueClient, job_id: str, timeout_s: float = 10.0) -> str:
    deadline = time.monotonic() + timeout_s
    while (state := client.status(job_id)["state"]) in ("queued", "running") and time.monotonic() < deadline:
        time.sleep(0.05)
    return state


def test_segue_client_cli_prints_the_path_or_the_error_code(root):
    d = DaemonProcess(root)
    env = dict(os.environ, PYTHONPATH=REPO)
    clip = str(root / "in" / "clip.wav")
    base = [sys.executable, "-m", "bridge.client", "--endpoint", d.info["zmq"], "--model", "analytic",
            "--steps", "4"]
    try:
        ok = subprocess.run(base + ["infill", clip, "--start", "0.8", "--end", "1.2", "--span", "region"],
                            capture_output=True, text=True, env=env, timeout=60)
        js = subprocess.run(base + ["continue", clip, "--duration", "0.5", "--json", "--seed", "2"],
                            capture_output=True, text=True, env=env, timeout=60)
        bad = subprocess.run(base + ["infill", clip, "--start", "1.2", "--end", "0.8"],
                             capture_output=True, text=True, env=env, timeout=60)
        outside = subprocess.run(base + ["infill", "/etc/hostname", "--start", "0", "--end", "0.1"],
                                 capture_output=True, text=True, env=env, timeout=60)
        slow = base + ["infill", clip, "--start", "0.8", "--end", "1.2", "--seed", str(SLOW_SEED), "--steps", "100"]
        # Ctrl-C (what the DAW scripts send to stop a render) cancels the job and exits 130
        interrupted = subprocess.Popen(slow + ["--id", "cli-int"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       text=True, env=env)
        first_line = interrupted.stderr.readline()
        interrupted.send_signal(signal.SIGINT)
        _, int_err = interrupted.communicate(timeout=30)
        int_state = final_state(d.client, "cli-int")
        # ... also when whoever launched it ignored SIGINT (nohup, a background job, a DAW that spawns so):
        # the ignore is inherited, and without the client's own handler the cancel would be lost
        ignoring = subprocess.Popen(slow + ["--id", "cli-int-ign"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True, env=env, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
        ign_first = ignoring.stderr.readline()
        ignoring.send_signal(signal.SIGINT)
        _, ign_err = ignoring.communicate(timeout=30)
        ign_state = final_state(d.client, "cli-int-ign")
        late = subprocess.run(slow + ["--id", "cli-late", "--timeout", "1.5"], capture_output=True, text=True,
                              env=env, timeout=60)
        late_state = final_state(d.client, "cli-late")
    finally:
        d.stop(signal.SIGTERM)
    gone = subprocess.run(base + ["infill", clip, "--start", "0.8", "--end", "1.2", "--timeout", "1"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert ok.returncode == 0, ok.stderr
    path, offset = ok.stdout.strip().split("\t")
    assert os.path.exists(path) and float(offset) == pytest.approx(0.8)
    assert "100.0%" in ok.stderr
    assert js.returncode == 0, js.stderr
    obj = json.loads(js.stdout)
    assert set(obj) == {"id", "path", "offset_s", "duration_s", "sample_rate", "sidecar_path"}
    assert obj["sample_rate"] == 44100 and obj["sidecar_path"] == os.path.splitext(obj["path"])[0] + ".json"
    assert obj["duration_s"] == pytest.approx(2.5, abs=1e-3)  # the 2 s clip plus 0.5 s continued
    assert bad.returncode == 1 and "invalid_request" in bad.stderr
    assert outside.returncode == 1 and "path_not_allowed" in outside.stderr
    assert gone.returncode == 3 and "unreachable" in gone.stderr
    assert "segue:" in first_line and interrupted.returncode == 130 and "cancelled" in int_err
    assert int_state == "cancelled"
    assert "segue:" in ign_first and ignoring.returncode == 130 and "cancelled" in ign_err
    assert ign_state == "cancelled"
    assert late.returncode == 3 and "error timeout" in late.stderr
    assert late_state in ("cancelled", "failed")  # the client's cancel or the daemon's own time limit, first wins


def test_a_job_killed_after_writing_a_take_keeps_it_on_the_rerun_and_finishes_done(root, monkeypatch):
    monkeypatch.setenv("SEGUE_TEST_CRASH_MARKER", str(root / "crashed"))
    entry = ("--render-entry", "support.crash_after_write:render")   # the daemon dies once take 1 is written
    out = root / "out" / "kept.wav"
    job = params(root, seed=5, variations=2, output=str(out))
    d = DaemonProcess(root, *entry)
    d.client.submit(job, job_id="written-1")
    assert d.proc.wait(60) == -signal.SIGKILL
    d.client.close()
    d.log.close()
    take1, take2 = root / "out" / "kept.take1.wav", root / "out" / "kept.take2.wav"
    assert take1.exists() and not take2.exists()
    before = (take1.read_bytes(), take1.stat().st_mtime_ns)

    d = DaemonProcess(root, *entry)
    try:
        d.client.wait("written-1", timeout_s=60)
        status = d.client.status("written-1")
    finally:
        assert d.stop(signal.SIGTERM) == 0
    assert status["state"] == "done" and status["attempts"] == 2
    takes = status["result"]["takes"]
    assert [t["path"] for t in takes] == [str(take1), str(take2)] and take2.exists()
    assert (take1.read_bytes(), take1.stat().st_mtime_ns) == before   # kept, not rendered again
    assert "kept" in takes[0]["warnings"][-1] and not any("kept" in w for w in takes[1]["warnings"])
