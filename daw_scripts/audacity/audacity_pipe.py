"""Talking to Audacity through mod-script-pipe, and starting a headless Audacity (Xvfb) for tests/CI.

mod-script-pipe reads one command per line from `/tmp/audacity_script_pipe.to.<uid>` and answers on
`.from.<uid>` with the command's output, a `BatchCommand finished: OK|Failed` line and a blank
line. A command with a bad parameter can open a modal dialog and never answer, so every exchange
here has a time limit. Checked with Audacity 3.2.4 (Debian bookworm).
"""
from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

MODULE_SO = "/usr/lib/audacity/modules/mod-script-pipe.so"


class AudacityError(RuntimeError):
    """Audacity is not reachable, did not answer in time, or reported a failed command."""


def pipe_paths(uid: Optional[int] = None) -> tuple[str, str]:
    uid = os.getuid() if uid is None else uid
    return f"/tmp/audacity_script_pipe.to.{uid}", f"/tmp/audacity_script_pipe.from.{uid}"


def quote(value: Any) -> str:
    """A command parameter value: numbers plain, text in double quotes (Audacity's own syntax)."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (int, float)):
        return repr(float(value)) if isinstance(value, float) else str(value)
    text = str(value)
    if '"' in text or "\n" in text:
        raise ValueError(f"Audacity command values cannot contain quotes or newlines: {text!r}")
    return f'"{text}"'


class AudacityPipe:
    """One connection to a running Audacity's mod-script-pipe."""

    def __init__(self, *, timeout_s: float = 30.0, uid: Optional[int] = None) -> None:
        to_path, from_path = pipe_paths(uid)
        if not (os.path.exists(to_path) and os.path.exists(from_path)):
            raise AudacityError(f"no Audacity scripting pipe at {to_path}: start Audacity with mod-script-pipe "
                                "enabled (Preferences > Modules), see daw_scripts/audacity/README.md")
        self.timeout_s = timeout_s
        # Opening a FIFO for writing blocks until Audacity has it open for reading: do it non-blocking.
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fd = os.open(to_path, os.O_WRONLY | os.O_NONBLOCK)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise AudacityError(f"Audacity is not reading {to_path} (is it running?)") from None
                time.sleep(0.1)
        os.set_blocking(fd, True)
        self._to = os.fdopen(fd, "w")
        self._from_fd = os.open(from_path, os.O_RDONLY | os.O_NONBLOCK)
        self._buf = b""
        self._drain()

    def _drain(self) -> None:
        """Drop a reply left in the pipe by an earlier client that gave up waiting for it."""
        while True:
            ready, _, _ = select.select([self._from_fd], [], [], 0.05)
            if not ready:
                return
            try:
                if not os.read(self._from_fd, 65536):
                    return
            except BlockingIOError:
                return

    def close(self) -> None:
        self._to.close()
        os.close(self._from_fd)

    def __enter__(self) -> "AudacityPipe":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _readline(self, deadline: float) -> str:
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AudacityError("Audacity did not answer in time (a modal dialog may be open)")
            ready, _, _ = select.select([self._from_fd], [], [], min(left, 0.5))
            if ready:
                chunk = os.read(self._from_fd, 65536)
                if chunk:
                    self._buf += chunk
                else:
                    time.sleep(0.02)  # no writer yet (between replies)
        line, _, self._buf = self._buf.partition(b"\n")
        return line.decode("utf-8", "replace")

    def do(self, command: str, *, timeout_s: Optional[float] = None) -> str:
        """Send one command; return its output (without the status line) or raise AudacityError."""
        self._to.write(command + "\n")
        self._to.flush()
        deadline = time.monotonic() + (timeout_s or self.timeout_s)
        lines: list[str] = []
        while True:
            line = self._readline(deadline)
            if line.startswith("BatchCommand finished:"):
                self._readline(deadline)  # the blank line that ends every reply
                if not line.endswith("OK"):
                    raise AudacityError(f"{command!r} failed: {' '.join(lines).strip() or line}")
                return "\n".join(lines).strip()
            lines.append(line)

    def command(self, name: str, **params: Any) -> str:
        args = " ".join(f"{k}={quote(v)}" for k, v in params.items() if v is not None)
        return self.do(f"{name}: {args}".rstrip())

    def info(self, kind: str) -> Any:
        """GetInfo as parsed JSON (Tracks, Clips, Labels, ...)."""
        return json.loads(self.command("GetInfo", Type=kind, Format="JSON") or "[]")


# --- a headless Audacity for tests and CI ---------------------------------------------------------

def write_config(home: Path) -> Path:
    """A fresh Audacity profile under `home` with mod-script-pipe enabled and no start-up dialogs.

    The [Version] keys stop Audacity from treating the file as a first run (which would reset it),
    the module's date must equal the .so's mtime, and the splash ("Welcome") dialog would block."""
    cfg_dir = home / ".config" / "audacity"
    cfg_dir.mkdir(parents=True, exist_ok=True)
    mtime = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(os.path.getmtime(MODULE_SO)))
    cfg = cfg_dir / "audacity.cfg"
    cfg.write_text(
        "PrefsVersion=1.1.1r1\n[Version]\nMajor=3\nMinor=2\nMicro=4\n"
        f"[Module]\nmod-script-pipe=1\n[ModulePath]\nmod-script-pipe={MODULE_SO}\n"
        f"[ModuleDateTime]\nmod-script-pipe={mtime}\n"
        "[GUI]\nShowSplashScreen=0\n"
        "[Quality]\nDitherAlgorithm=0\nHQDitherAlgorithm=0\n"
        "[FileFormats/ExportFormat_SF1_Type]\nWAV_10000=65542\n"
        f"[Directories]\nTempDir={home / 'tmp'}\n")
    return cfg


@dataclass
class HeadlessAudacity:
    """Xvfb + Audacity with a throw-away profile; `stop()` ends both (and removes the pipes)."""

    home: Path
    xvfb: subprocess.Popen
    audacity: subprocess.Popen
    display: str

    def stop(self) -> None:
        for proc in (self.audacity, self.xvfb):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
        for p in pipe_paths():
            if os.path.exists(p):
                os.unlink(p)


def launch_headless(home: Path, *, timeout_s: float = 90.0) -> HeadlessAudacity:
    """Start Xvfb on a free display and Audacity on it; return once the scripting pipe answers."""
    for tool in ("Xvfb", "audacity"):
        if shutil.which(tool) is None:
            raise AudacityError(f"{tool} is not installed (Debian packages `xvfb`, `audacity`)")
    if not os.path.exists(MODULE_SO):
        raise AudacityError(f"mod-script-pipe is missing ({MODULE_SO})")
    for p in pipe_paths():  # stale pipes from a dead Audacity make the new one silent
        if os.path.exists(p):
            if subprocess.run(["pgrep", "-u", str(os.getuid()), "-x", "audacity"], capture_output=True).returncode == 0:
                raise AudacityError("another Audacity of this user is running; its scripting pipe is shared")
            os.unlink(p)
    write_config(home)
    r, w = os.pipe()
    xvfb = subprocess.Popen(["Xvfb", "-displayfd", str(w), "-screen", "0", "1280x800x24", "-nolisten", "tcp"],
                            pass_fds=(w,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(w)
    # Xvfb writes the number, then a newline, and dies if the pipe is gone in between: read both.
    got = b""
    deadline = time.monotonic() + 20
    while not got.endswith(b"\n") and time.monotonic() < deadline:
        ready, _, _ = select.select([r], [], [], 1.0)
        if ready:
            chunk = os.read(r, 64)
            if not chunk:
                break
            got += chunk
    os.close(r)
    number = got.decode().strip() if got.endswith(b"\n") else ""
    if not number:
        xvfb.kill()
        raise AudacityError("Xvfb did not start")
    display = f":{number}"
    env = dict(os.environ, HOME=str(home), DISPLAY=display)
    log = open(home / "audacity.log", "w")
    aud = subprocess.Popen(["audacity"], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    inst = HeadlessAudacity(home, xvfb, aud, display)
    deadline = time.monotonic() + timeout_s
    while not all(os.path.exists(p) for p in pipe_paths()):
        if aud.poll() is not None or time.monotonic() > deadline:
            inst.stop()
            raise AudacityError(f"Audacity (exit status {aud.poll()}) did not create its scripting pipe on "
                                f"display {display}; log: {(home / 'audacity.log').read_text()[-1500:]}")
        time.sleep(0.2)
    # Audacity can swallow a command sent while it is still starting up; the client then gives up,
    # reconnects (dropping any late reply) and asks again, a little more patiently each time.
    attempt_s, last = 5.0, None
    while time.monotonic() < deadline:
        try:
            with AudacityPipe(timeout_s=min(attempt_s, max(deadline - time.monotonic(), 1.0))) as pipe:
                pipe.info("Tracks")
            return inst
        except AudacityError as e:
            last = e
            attempt_s = min(attempt_s * 1.5, 20.0)
        if aud.poll() is not None:
            break
    inst.stop()
    raise AudacityError(f"Audacity did not answer on its scripting pipe ({last}); "
                        f"log: {(home / 'audacity.log').read_text()[-1500:]}")
