"""Shared pieces of the bridge tests: test audio, an in-process daemon, and small socket helpers."""
from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import zmq
from pedalboard.io import AudioFile
from pythonosc.osc_packet import OscPacket

from bridge import protocol
from bridge.daemon import DaemonConfig, JobManager
from bridge.osc_server import OscServer
from bridge.zmq_server import ZmqServer

TESTS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # tests/ (this file: tests/support/)
RATE = 44100


@contextlib.contextmanager
def zmq_serving(manager: JobManager, **server_kw: Any):
    """A ZmqServer on loopback for `manager`, served from a thread; yields (server, context) and closes all."""
    ctx = zmq.Context()
    server = ZmqServer(manager, endpoint="tcp://127.0.0.1:*", events="tcp://127.0.0.1:*", context=ctx, **server_kw)
    stop = threading.Event()
    thread = threading.Thread(target=server.serve, args=(stop,), daemon=True)
    thread.start()
    try:
        yield server, ctx
    finally:
        stop.set()
        thread.join(5)
        server.close()
        manager.close()
        ctx.term()


def tone(seconds: float, freq: float = 220.0, rate: int = RATE) -> np.ndarray:
    """A stereo test signal: a sine plus a little deterministic noise, (2, n) float32."""
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(0)
    left = 0.3 * np.sin(2 * np.pi * freq * t) + 0.02 * rng.standard_normal(t.size)
    right = 0.3 * np.sin(2 * np.pi * freq * 1.5 * t) + 0.02 * rng.standard_normal(t.size)
    return np.stack([left, right]).astype(np.float32)


def write_wav(path: Path, audio: np.ndarray, rate: int = RATE) -> Path:
    with AudioFile(str(path), "w", rate, audio.shape[0]) as f:
        f.write(audio)
    return path


def read_wav(path: str) -> tuple[np.ndarray, int]:
    with AudioFile(path) as f:
        return f.read(f.frames), int(f.samplerate)


@dataclass
class InProcessDaemon:
    """JobManager + ZeroMQ + OSC servers on ephemeral loopback ports, with a real worker subprocess."""

    root: Path
    config: DaemonConfig
    manager: JobManager = field(init=False)
    zmq: ZmqServer = field(init=False)
    osc: OscServer = field(init=False)

    def __post_init__(self) -> None:
        if TESTS_DIR not in sys.path:  # the spawned worker imports support.bridge_renders
            sys.path.insert(0, TESTS_DIR)
        self.manager = JobManager(self.config)
        self.zmq = ZmqServer(self.manager, endpoint="tcp://127.0.0.1:*", events="tcp://127.0.0.1:*",
                             context=zmq.Context())
        self.osc = OscServer(self.manager, host="127.0.0.1", port=0)
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self.zmq.serve, args=(self._stop,), daemon=True),
                         threading.Thread(target=self.osc.serve, args=(self._stop,), daemon=True)]

    def start(self) -> "InProcessDaemon":
        self.manager.start()
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self.manager.shutdown()
        self._stop.set()
        for t in self._threads:
            t.join(5)
        self.zmq.close()
        self.osc.close()
        self.manager.close()
        self.zmq.ctx.term()


def make_config(root: Path, **overrides: Any) -> DaemonConfig:
    (root / "in").mkdir(parents=True, exist_ok=True)
    kw: dict[str, Any] = dict(state_dir=str(root / "state"), output_dir=str(root / "out"),
                              input_roots=(str(root / "in"),), threads=1, job_timeout_s=60.0, cancel_grace_s=1.0,
                              shutdown_grace_s=2.0, render_entry="support.bridge_renders:render")
    kw.update(overrides)
    return DaemonConfig(**kw)


class ZmqPeer:
    """A REQ or DEALER client socket with a receive timeout, for talking to the daemon in tests."""

    def __init__(self, endpoint: str, kind: int = zmq.DEALER, ctx: Optional[zmq.Context] = None) -> None:
        self.ctx = ctx or zmq.Context.instance()
        self.sock = self.ctx.socket(kind)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RCVTIMEO, 20000)
        self.sock.connect(endpoint)
        self.kind = kind

    def call(self, frames: list[bytes]) -> dict:
        self.sock.send_multipart(frames)
        return self.recv()

    def recv(self) -> dict:
        frames = self.sock.recv_multipart()
        assert len(frames) == 1, f"a reply is one JSON frame, got {len(frames)}"
        return json.loads(frames[0])

    def close(self) -> None:
        self.sock.close()


def render_frames(params: dict, **kw: Any) -> list[bytes]:
    return protocol.encode_render(params, **kw)


class OscListener:
    """A UDP socket that collects the daemon's OSC replies."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.sock.settimeout(0.2)

    def collect(self, until: Any, timeout_s: float = 20.0) -> list[tuple[str, list]]:
        """Messages until `until(messages)` is true or the time runs out."""
        got: list[tuple[str, list]] = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not until(got):
            try:
                data, _ = self.sock.recvfrom(65536)
            except socket.timeout:
                continue
            for m in OscPacket(data).messages:
                got.append((m.message.address, list(m.message.params)))
        return got

    def close(self) -> None:
        self.sock.close()


def final_count(messages: list[tuple[str, list]], job_id: Optional[str] = None) -> int:
    return sum(1 for a, p in messages if a in ("/segue/done", "/segue/error") and (job_id is None or p[0] == job_id))
