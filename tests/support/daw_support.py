"""Shared pieces of the DAW end-to-end tests: a real `segue serve` daemon process (and its fixtures) and test audio."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import pytest
from pedalboard.io import AudioFile

ROOT = Path(__file__).resolve().parents[2]
DAW_SCRIPTS = ROOT / "daw_scripts"


class ServeProcess:
    """`python -m bridge.serve` on ephemeral loopback ports, as a DAW user would run `segue serve`."""

    def __init__(self, root: Path, *, allow_root: Path, extra_env: Optional[dict] = None) -> None:
        self.root = root
        self.ready = root / "ready.json"
        self.log = root / "daemon.log"
        cmd = [sys.executable, "-m", "bridge.serve", "--zmq", "tcp://127.0.0.1:*", "--events", "tcp://127.0.0.1:*",
               "--osc-port", "-1", "--state-dir", str(root / "state"), "--output-dir", str(root / "renders"),
               "--allow-root", str(allow_root), "--device", "cpu", "--threads", "1", "--ready-file", str(self.ready)]
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
                   **(extra_env or {}))
        self._log = open(self.log, "w")
        self.proc = subprocess.Popen(cmd, cwd=str(ROOT), stdout=self._log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 60
        while not self.ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"segue serve did not start: {self.log.read_text()[-2000:]}")
            time.sleep(0.1)
        info = json.loads(self.ready.read_text())
        self.endpoint: str = info["zmq"]
        self.env = dict(os.environ, SEGUE_ENDPOINT=self.endpoint,
                        SEGUE_CLIENT=f"{sys.executable} -m bridge.client",
                        PYTHONPATH=env["PYTHONPATH"])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


@pytest.fixture(scope="module")
def serve(tmp_path_factory) -> Iterator[ServeProcess]:
    """One daemon per test module (import this fixture into the module), allowed to read every test's files."""
    root = tmp_path_factory.mktemp("serve")
    d = ServeProcess(root, allow_root=Path(str(tmp_path_factory.getbasetemp())))
    yield d
    d.stop()


@pytest.fixture
def env(serve, monkeypatch) -> None:
    """Point in-process DAW scripts at that daemon, as `segue serve` tells a user to."""
    for k in ("SEGUE_ENDPOINT", "SEGUE_CLIENT", "PYTHONPATH"):
        monkeypatch.setenv(k, serve.env[k])


def music(seconds: float, rate: int, seed: int = 0) -> np.ndarray:
    """A stereo test clip with broadband content (chords with harmonics, clicks, a little noise), so a
    misalignment of a sample or two shows in a correlation. (2, n) float32."""
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(seed)
    out = np.zeros((2, t.size))
    for i, root in enumerate((220.0, 174.6, 196.0, 261.6)):
        seg = (t >= i * seconds / 4) & (t < (i + 1) * seconds / 4)
        for k, ratio in enumerate((1.0, 1.26, 1.5, 2.0)):
            for h in range(1, 6):
                out[k % 2, seg] += 0.05 / h * np.sin(2 * np.pi * root * ratio * h * t[seg] + k)
    clicks = np.zeros(t.size)
    clicks[:: rate // 4] = 0.5
    out += np.convolve(clicks, np.exp(-np.arange(200) / 30.0), mode="same")[None]
    out += 0.01 * rng.standard_normal(out.shape)
    return out.astype(np.float32)


def write_wav(path: Path, audio: np.ndarray, rate: int, bit_depth: int = 24) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with AudioFile(str(path), "w", rate, audio.shape[0], bit_depth=bit_depth) as f:
        f.write(audio)
    return path


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    with AudioFile(str(path)) as f:
        return f.read(f.frames), int(round(f.samplerate))


def fft_resample(audio: np.ndarray, src: int, dst: int) -> np.ndarray:
    """Band-limited resampling of a whole clip by zero-padding/truncating its spectrum; an independent
    check on the project's streaming resampler."""
    n = audio.shape[1]
    m = int(round(n * dst / src))
    spec = np.fft.rfft(audio, axis=1)
    out = np.zeros((audio.shape[0], m // 2 + 1), dtype=complex)
    k = min(spec.shape[1], out.shape[1])
    out[:, :k] = spec[:, :k]
    return (np.fft.irfft(out, m, axis=1) * (m / n)).astype(np.float32)


def best_lag(x: np.ndarray, y: np.ndarray, max_lag: int = 20) -> tuple[int, float]:
    """The shift of y against x (samples) with the highest normalised correlation, and that correlation."""
    best = (0, -2.0)
    for lag in range(-max_lag, max_lag + 1):
        a = x[max_lag:len(x) - max_lag]
        b = y[max_lag + lag:len(y) - max_lag + lag]
        c = float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))
        if c > best[1]:
            best = (lag, c)
    return best
