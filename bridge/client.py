"""`segue-client`: a blocking client (command line and Python API) for scripts that cannot open sockets.

It submits one render over ZeroMQ with a request id it chooses, so a resend after
a lost reply (or a daemon restart) finds the same job instead of starting a
second one; then it long-polls `wait` until the job ends, printing progress from
the PUB socket to stderr.

Exit status: 0 success (stdout: `PATH<TAB>OFFSET_S`, one line per take, or one JSON object with
`--json`, a list of one per take when `--variations` is given), 1 the daemon reported an error, 2 a bad command line, 3 the daemon
could not be reached or the time limit passed, 130 interrupted (the job is
cancelled).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import zmq

from engine import schema
from engine.errors import SegueError
from engine.progress import interrupt_cancels
from engine.request import TASKS, PCMAudio

from . import protocol
from .transition_joins import read_transition_joins

UNREACHABLE = "unreachable"
POLL_S = 0.05


@dataclass(frozen=True)
class JobResult:
    """The rendered clip: where it is and where it goes on the timeline of the first input."""

    id: str
    path: str
    offset_s: float
    duration_s: float
    sample_rate: int
    raw: dict

    def to_json(self) -> dict:
        """What `--json` prints; a transition take adds "transition", the joins the engine chose (from its sidecar)."""
        out = {"id": self.id, "path": self.path, "offset_s": self.offset_s, "duration_s": self.duration_s,
               "sample_rate": self.sample_rate}
        sidecar = self.raw.get("sidecar_path")
        if isinstance(sidecar, str) and sidecar:
            out["sidecar_path"] = sidecar
            joins = read_transition_joins(sidecar)
            if joins is not None:
                out["transition"] = joins.to_json()
        return out

    @classmethod
    def from_reply(cls, job_id: str, r: dict) -> "JobResult":
        return cls(id=job_id, path=str(r.get("path")), offset_s=float(r.get("offset_s", 0.0)),
                   duration_s=float(r.get("duration_s", 0.0)), sample_rate=int(r.get("sample_rate", 44100)), raw=r)

    @property
    def takes(self) -> list["JobResult"]:
        """Every take of the job (a request with `variations` N has N; take 1 is this result itself)."""
        return [JobResult.from_reply(self.id, t) for t in self.raw.get("takes") or [self.raw]]


class ClientError(SegueError):
    """An error reply from the daemon (its code kept), or a transport failure (`unreachable`, `timeout`)."""


ProgressFn = Callable[[dict], None]


class SegueClient:
    """A DEALER connection to the daemon's ROUTER, plus a SUB socket for progress while waiting."""

    def __init__(self, endpoint: str = protocol.DEFAULT_ENDPOINT, *, token: Optional[str] = None,
                 reply_timeout_s: float = 5.0, reconnect_s: float = 60.0, wait_chunk_s: float = 10.0,
                 context: Optional[zmq.Context] = None) -> None:
        self.endpoint = endpoint
        self.token = token
        self.reply_timeout_s = reply_timeout_s
        self.reconnect_s = reconnect_s  # how long a wait keeps asking a daemon that stopped answering
        self.wait_chunk_s = wait_chunk_s  # one long-poll `wait`; a silent daemon is noticed after this + reply_timeout_s
        self.ctx = context or zmq.Context.instance()
        self._sock: Optional[zmq.Socket] = None
        self._sub: Optional[zmq.Socket] = None
        self._sub_endpoint: Optional[str] = None

    def close(self) -> None:
        for s in (self._sock, self._sub):
            if s is not None:
                s.close(linger=0)
        self._sock = self._sub = None

    def __enter__(self) -> "SegueClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- plumbing ------------------------------------------------------------------------------------

    def _socket(self) -> zmq.Socket:
        if self._sock is None:
            self._sock = self.ctx.socket(zmq.DEALER)
            self._sock.setsockopt(zmq.LINGER, 0)
            self._sock.connect(self.endpoint)
        return self._sock

    def _reset(self) -> None:
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None

    def call(self, frames: list[bytes], mid: str, *, wait_s: Optional[float] = None,
             on_event: Optional[ProgressFn] = None) -> dict:
        """Send one request and return its reply (stale replies to earlier requests are skipped).

        Raises `ClientError(code="unreachable")` when no reply comes within `wait_s`
        (default: the reply timeout). The socket is then recreated, so a resend works
        after the daemon restarts.
        """
        sock = self._socket()
        sock.send_multipart(frames)
        deadline = time.monotonic() + (self.reply_timeout_s if wait_s is None else wait_s)
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        if self._sub is not None:
            poller.register(self._sub, zmq.POLLIN)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self._reset()
                raise ClientError(f"no reply from {self.endpoint} within {wait_s or self.reply_timeout_s:g} s",
                                  code=UNREACHABLE)
            ready = dict(poller.poll(int(min(left, 0.5) * 1000) + 1))
            if self._sub is not None and self._sub in ready:
                self._drain_events(on_event)
            if sock in ready:
                frames_in = sock.recv_multipart()
                if frames_in and frames_in[0] == b"":
                    frames_in = frames_in[1:]
                try:
                    obj = json.loads(frames_in[0])
                except (ValueError, IndexError):
                    continue
                if obj.get("id") == mid or (obj.get("type") == "error" and obj.get("id") == ""):
                    return obj

    def _drain_events(self, on_event: Optional[ProgressFn]) -> None:
        assert self._sub is not None
        while True:
            try:
                _topic, body = self._sub.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            except ValueError:
                continue
            if on_event is not None:
                try:
                    on_event(json.loads(body))
                except ValueError:
                    pass

    def _subscribe(self, events: Optional[str], job_id: str) -> None:
        if not events:
            return
        if self._sub is None or self._sub_endpoint != events:
            if self._sub is not None:
                self._sub.close(linger=0)
            self._sub = self.ctx.socket(zmq.SUB)
            self._sub.setsockopt(zmq.LINGER, 0)
            self._sub.connect(events)
            self._sub_endpoint = events
        self._sub.setsockopt(zmq.SUBSCRIBE, f"segue/job/{job_id}/".encode())

    @staticmethod
    def _check(obj: dict) -> dict:
        if obj.get("type") == "error":
            err = obj.get("error") or {}
            raise ClientError(str(err.get("message", "")), code=str(err.get("code", "internal")))
        return obj

    # -- API -----------------------------------------------------------------------------------------

    def health(self) -> dict:
        mid = protocol.new_id()
        return self._check(self.call(protocol.encode_request("health", mid=mid, token=self.token), mid))

    def status(self, job_id: str) -> dict:
        return self._check(self.call(protocol.encode_request("status", mid=job_id, token=self.token), job_id))

    def cancel(self, job_id: str) -> dict:
        return self._check(self.call(protocol.encode_request("cancel", mid=job_id, token=self.token), job_id))

    def submit(self, params: dict, *, pcm: Sequence[PCMAudio] = (), job_id: Optional[str] = None,
               timeout_s: Optional[float] = None, retry_until: Optional[float] = None) -> dict:
        """Queue a render; returns the `accepted` reply. Resends (same id) until `retry_until` if unanswered."""
        job_id = job_id or protocol.new_id()
        frames = protocol.encode_render(params, mid=job_id, pcm=pcm, timeout_s=timeout_s, token=self.token)
        while True:
            wait_s = self.reply_timeout_s
            if retry_until is not None:
                wait_s = max(min(wait_s, retry_until - time.monotonic()), 0.001)
            try:
                obj = self._check(self.call(frames, job_id, wait_s=wait_s))
            except ClientError as e:
                if e.code != UNREACHABLE or retry_until is None or time.monotonic() >= retry_until:
                    raise
                continue
            self._subscribe(obj.get("events"), job_id)
            return obj

    def wait(self, job_id: str, *, timeout_s: Optional[float] = None,
             on_progress: Optional[ProgressFn] = None) -> JobResult:
        """Block until the job ends; raises `ClientError` with the job's error code if it failed."""
        deadline = math.inf if timeout_s is None else time.monotonic() + timeout_s
        lost_since: Optional[float] = None  # when the daemon stopped answering
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ClientError(f"job {job_id} did not finish within {timeout_s:g} s", code=protocol.TIMEOUT)
            chunk = min(left, self.wait_chunk_s if lost_since is None else 1.0)
            frames = protocol.encode_request("wait", mid=job_id, token=self.token, timeout_s=chunk)
            try:
                obj = self._check(self.call(frames, job_id, wait_s=chunk + self.reply_timeout_s,
                                            on_event=on_progress))
            except ClientError as e:
                now = time.monotonic()
                lost_since = lost_since or now
                if e.code == UNREACHABLE and now < deadline and now - lost_since < self.reconnect_s:
                    time.sleep(min(0.5, max(deadline - now, 0)))
                    continue  # the daemon may be restarting; the job is durable, ask again
                raise
            lost_since = None
            if obj.get("type") == "done":
                return JobResult.from_reply(job_id, obj.get("result") or {})

    def render(self, params: dict, *, pcm: Sequence[PCMAudio] = (), job_id: Optional[str] = None,
               timeout_s: Optional[float] = None, on_progress: Optional[ProgressFn] = None) -> JobResult:
        """Submit and wait: the one call a script needs."""
        job_id = job_id or protocol.new_id()
        start = time.monotonic()
        retry_until = start + (timeout_s if timeout_s is not None else 10.0)
        self.submit(params, pcm=pcm, job_id=job_id, timeout_s=timeout_s, retry_until=retry_until)
        left = None if timeout_s is None else max(timeout_s - (time.monotonic() - start), 0.001)
        return self.wait(job_id, timeout_s=left, on_progress=on_progress)


# ---- command line ------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    """The task, its input files, every request field with a flag (engine/schema.py), and the client's own options."""
    p = argparse.ArgumentParser(prog="segue-client", description="Render one clip through a running Segue daemon.")
    p.add_argument("task", choices=TASKS)
    p.add_argument("audio", nargs="+", metavar="AUDIO", help="input file(s); transition takes two")
    schema.add_cli_options(p, group_titles=lambda spec: "request fields (see bridge/PROTOCOL.md)")
    c = p.add_argument_group("client")
    c.add_argument("--endpoint", default=os.environ.get("SEGUE_ENDPOINT", protocol.DEFAULT_ENDPOINT))
    c.add_argument("--token", default=os.environ.get("SEGUE_TOKEN"))
    c.add_argument("--timeout", type=float, help="give up (and cancel the job) after this many seconds")
    c.add_argument("--id", help="request id (default: a fresh one); reuse it to re-attach to the same job")
    c.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    c.add_argument("--quiet", action="store_true", help="no progress on stderr")
    return p


def params_from_args(args: argparse.Namespace) -> dict:
    """Command-line options -> request fields (unset options left to the daemon).

    Input paths are made absolute against this folder; a relative `-o` is left relative,
    and the daemon places it in its output folder (the only place it writes).
    """
    params: dict[str, Any] = {"task": args.task, "audio": [os.path.abspath(a) for a in args.audio]}
    params.update(schema.fields_from_args(args))
    if params.get("reference") is not None:
        params["reference"] = os.path.abspath(params["reference"])
    if params.get("sources"):
        params["sources"] = [os.path.abspath(s) for s in params["sources"]]
    return params


def _progress_printer(quiet: bool) -> ProgressFn:
    def show(ev: dict) -> None:
        if quiet or ev.get("type") != "progress":
            return
        eta = ev.get("eta_s")
        eta_text = f", {eta:.1f} s left" if isinstance(eta, (int, float)) else ""
        stage = ev.get("stage")
        doing = f": {stage}" if isinstance(stage, str) and stage != "sampling" else ""
        sys.stderr.write(f"segue: {100 * float(ev.get('fraction', 0)):5.1f}% "
                         f"(step {ev.get('step')}/{ev.get('total')}{eta_text}){doing}\n")
        sys.stderr.flush()
    return show


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    interrupt_cancels()              # SIGINT is the cancel every DAW script sends
    job_id = args.id or protocol.new_id()
    client = SegueClient(args.endpoint, token=args.token)
    try:
        result = client.render(params_from_args(args), job_id=job_id, timeout_s=args.timeout,
                               on_progress=_progress_printer(args.quiet))
    except KeyboardInterrupt:
        _try_cancel(client, job_id)
        sys.stderr.write("segue: interrupted; job cancelled\n")
        return 130
    except ClientError as e:
        if e.code == protocol.TIMEOUT:
            _try_cancel(client, job_id)
        if args.json:
            print(json.dumps({"id": job_id, "error": {"code": e.code, "message": e.message}}))
        sys.stderr.write(f"segue: error {e.code}: {e.message}\n")
        return 3 if e.code in (UNREACHABLE, protocol.TIMEOUT) else 1
    finally:
        client.close()
    if args.json and args.variations is not None:
        print(json.dumps([take.to_json() for take in result.takes]))
    elif args.json:
        print(json.dumps(result.to_json()))
    else:
        for take in result.takes:
            print(f"{take.path}\t{take.offset_s:g}")
    return 0


def _try_cancel(client: SegueClient, job_id: str) -> None:
    try:
        client.cancel(job_id)
    except ClientError:
        pass


if __name__ == "__main__":
    sys.exit(main())
