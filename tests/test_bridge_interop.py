"""Interoperability with peers not written in Python: liblo's oscsend/oscdump and a C libzmq client.

CI installs them with .ci/install_bridge.sh; the tests skip (saying which tool is
missing) only where they are absent.
"""
from __future__ import annotations

import json
import os
import queue
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from bridge import protocol

from support.bridge_fixtures import InProcessDaemon, TESTS_DIR, make_config, read_wav, tone, write_wav

PEER_SOURCE = Path(TESTS_DIR) / "peers" / "zmq_client.c"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    root = tmp_path_factory.mktemp("interop")
    d = InProcessDaemon(root, make_config(root)).start()
    write_wav(root / "in" / "clip.wav", tone(2.0))
    yield d
    d.stop()


@pytest.fixture(scope="module")
def c_client(tmp_path_factory):
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is not installed (run .ci/install_bridge.sh)")
    if not any(os.path.exists(p) for p in ("/usr/include/zmq.h", "/usr/local/include/zmq.h")):
        pytest.skip("libzmq headers (zmq.h) are not installed: apt-get install libzmq3-dev (.ci/install_bridge.sh)")
    exe = tmp_path_factory.mktemp("peer") / "zmq_client"
    subprocess.run([gcc, "-O1", "-Wall", "-Werror", "-o", str(exe), str(PEER_SOURCE), "-lzmq"], check=True,
                   capture_output=True, timeout=120)
    return str(exe)


def run_c(exe: str, endpoint: str, mode: str, *requests: str) -> list[dict]:
    out = subprocess.run([exe, endpoint, mode, *requests], capture_output=True, text=True, timeout=90)
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines() if line]


@pytest.mark.parametrize("mode", ["req", "dealer", "dealer-envelope"])
def test_a_c_libzmq_client_renders_pcm_and_waits_for_the_result(daemon, c_client, tmp_path, mode):
    pcm = tone(1.0, freq=440.0)
    raw = tmp_path / "clip.f32"
    raw.write_bytes(np.ascontiguousarray(pcm, "<f4").tobytes())
    job = f"c-{mode}"
    render = json.dumps({"v": 1, "type": "render", "id": job,
                         "params": {"task": "infill", "audio": {"frame": 0}, "start_s": 0.4, "end_s": 0.6,
                                    "model": "analytic", "steps": 3, "context_s": 0.3, "span": "region"},
                         "frames": [{"shape": [2, pcm.shape[1]], "sample_rate": 44100, "dtype": "float32"}]})
    wait = json.dumps({"v": 1, "type": "wait", "id": job, "args": {"timeout_s": 30}})
    health = json.dumps({"v": 1, "type": "health", "id": "c-health"})
    accepted, done, h = run_c(c_client, daemon.zmq.endpoint, mode, render, f"@{raw}", wait, health)
    assert (accepted["type"], accepted["id"]) == ("accepted", job)
    assert done["type"] == "done" and done["result"]["offset_s"] == pytest.approx(0.4)
    audio, rate = read_wav(done["result"]["path"])
    assert rate == 44100 and audio.shape[1] == pytest.approx(0.2 * 44100, abs=2)
    assert (h["type"], h["id"], h["protocol"]) == ("health", "c-health", protocol.PROTOCOL_VERSION)


def test_a_c_client_sending_garbage_gets_error_replies(daemon, c_client, tmp_path):
    short = tmp_path / "short.f32"
    short.write_bytes(b"\x00" * 6)
    bad_frame = json.dumps({"v": 1, "type": "render", "id": "c-bad",
                            "params": {"task": "infill", "audio": {"frame": 0}, "start_s": 0, "end_s": 0.1},
                            "frames": [{"shape": [2, 4], "sample_rate": 44100}]})
    replies = run_c(c_client, daemon.zmq.endpoint, "req", "not json", bad_frame, f"@{short}",
                    '{"v": 3, "type": "health"}')
    assert [(r["type"], r["error"]["code"]) for r in replies] == [
        ("error", "bad_message"), ("error", "bad_message"), ("error", "unsupported_version")]
    assert replies[1]["id"] == "c-bad"


def free_udp_port() -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture
def oscdump():
    exe, sender = shutil.which("oscdump"), shutil.which("oscsend")
    if exe is None or sender is None:
        pytest.skip("liblo-tools (oscsend/oscdump) is not installed: apt-get install liblo-tools "
                    "(.ci/install_bridge.sh)")
    port = free_udp_port()
    proc = subprocess.Popen([exe, "-L", str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.3)
    yield port, proc
    proc.terminate()
    proc.wait(5)


def read_dump(proc: subprocess.Popen, until, timeout_s: float = 30.0) -> list[str]:
    """oscdump prints one message per line: `[timetag] /address types value...`; returned without the tag.

    Lines are read on a thread: a selector on the pipe misses lines already sitting in Python's buffer.
    """
    if not hasattr(proc, "lines"):
        proc.lines = queue.Queue()
        threading.Thread(target=lambda: [proc.lines.put(l) for l in proc.stdout], daemon=True).start()
    lines: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not until(lines):
        try:
            line = proc.lines.get(timeout=0.2)
        except queue.Empty:
            continue
        words = line.split()
        if words and not words[0].startswith("/"):  # a time tag printed before the address
            words = words[1:]
        lines.append(" ".join(words))
    return lines


def test_oscsend_request_gets_progress_and_done_at_oscdump(daemon, oscdump):
    port, dump = oscdump
    host, osc_port = daemon.osc.address
    clip = str(daemon.root / "in" / "clip.wav")
    subprocess.run(["oscsend", host, str(osc_port), "/segue/infill", "sffssss", clip, "0.8", "1.2",
                    "model=analytic", "steps=5", "id=liblo-1", f"reply_port={port}"], check=True, timeout=10)
    lines = read_dump(dump, lambda ls: any(l.startswith(("/segue/done", "/segue/error")) for l in ls))
    assert lines[0].split()[:2] == ["/segue/accepted", "s"] and "liblo-1" in lines[0]
    done = [l for l in lines if l.startswith("/segue/done")]
    assert len(done) == 1, lines
    parts = done[0].split()
    assert parts[1] == "ssff" and parts[2].strip('"') == "liblo-1"
    path = parts[3].strip('"')
    audio, _ = read_wav(path)
    assert audio.shape == (2, 2 * 44100)  # span=full by default: the whole 2 s clip
    assert float(parts[5]) == pytest.approx(2.0, abs=1e-3)
    assert any(l.startswith("/segue/progress sf") for l in lines)


def test_oscsend_bad_requests_get_error_codes_at_oscdump(daemon, oscdump):
    port, dump = oscdump
    host, osc_port = daemon.osc.address
    subprocess.run(["oscsend", host, str(osc_port), "/segue/infill", "sffss", "/etc/hostname", "0", "1",
                    "id=liblo-etc", f"reply_port={port}"], check=True, timeout=10)
    subprocess.run(["oscsend", host, str(osc_port), "/segue/bogus", "is", "3", f"reply_port={port}"],
                   check=True, timeout=10)
    lines = read_dump(dump, lambda ls: len(ls) >= 2)
    assert len(lines) == 2
    codes = sorted(l.split()[3].strip('"') for l in lines if l.startswith("/segue/error sss"))
    assert codes == ["bad_message", "path_not_allowed"]
