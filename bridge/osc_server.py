"""OSC front end: `/segue/<task> ...` over UDP, replies to the sender or to a named reply port.

Datagrams are parsed by `bridge.osc_parse` (bounds-checked; python-osc's own
parser hangs on a negative bundle element size), so a malformed or hostile
datagram is dropped with an `/segue/error` reply, and bundles are never delayed by
their time tags. One thread only reads the socket into an in-memory queue (with a
large `SO_RCVBUF`), another handles what was read, so a burst of clients is not
lost in the kernel while a job is being recorded. Log lines caused by clients are
rate-limited.
Positional arguments carry paths and times; optional settings travel as
`key=value` strings (see bridge/PROTOCOL.md). Render messages become the same
`Message` the ZeroMQ front end builds, and go through `JobManager.submit`.
"""
from __future__ import annotations

import collections
import logging
import re
import socket
import threading
import time
from typing import Any, Optional

from pythonosc.osc_message_builder import OscMessageBuilder

from engine import schema
from engine.errors import SegueError

from . import protocol
from .daemon import JobEvent, JobManager
from .osc_parse import parse_packet
from .protocol import Limits, Message, ProtocolError, check_token, is_loopback_host

log = logging.getLogger("segue.osc")

DEFAULT_PORT = 9010
MAX_DATAGRAM = 65507
PROGRESS_MIN_STEP = 0.05     # OSC progress replies: at most one per 5 % ...
PROGRESS_MIN_INTERVAL_S = 0.25  # ... unless this long has passed
RCVBUF_BYTES = 8 * 1024 * 1024  # asked of the kernel (Linux caps it at net.core.rmem_max)
INBOX_MAX_BYTES = 32 * 1024 * 1024  # datagrams read but not yet handled; beyond this new ones are dropped
LOG_BURST = 20                  # client-caused log lines per key and window ...
LOG_WINDOW_S = 60.0             # ... after which they are counted, not written

# Positional arguments of each render address, as request fields.
POSITIONAL: dict[str, tuple[str, ...]] = {
    "infill": ("audio", "start_s", "end_s"),
    "regenerate": ("audio", "start_s", "end_s"),
    "continue": ("audio", "duration_s"),
    "transition": ("audio", "audio"),
    "style": ("audio",),
}
# key=value options: OSC key -> request field, declared once in engine/schema.py.
OPTIONS: dict[str, schema.FieldSpec] = schema.osc_options()
# Options about the message rather than the render.
META = ("id", "reply_port", "token", "timeout")


def _convert(key: str, value: Any, kind: type) -> Any:
    if kind is str:
        if not isinstance(value, str):
            raise ProtocolError(f"{key} must be a string, got {type(value).__name__}")
        return value
    if isinstance(value, bool):
        raise ProtocolError(f"{key} must be a number, got {value}")
    try:
        if kind is int:
            if isinstance(value, float):
                raise ValueError
            return int(value, 10) if isinstance(value, str) else int(value)
        return float(value)
    except (ValueError, TypeError, OverflowError):
        raise ProtocolError(f"{key} must be {'an integer' if kind is int else 'a number'}, got {value!r:.40}") from None


def decode_osc(address: str, args: list, limits: Limits = Limits()) -> Message:
    """An OSC address + arguments -> Message (reply_port is checked here and applied by `reply_target`)."""
    if not isinstance(address, str) or not address.startswith("/segue/"):
        raise ProtocolError(f"unknown address {address!r:.80}; addresses start with /segue/")
    name = address[len("/segue/"):]
    positional: list = []
    options: dict[str, Any] = {}
    for a in args:
        key = a.split("=", 1)[0] if isinstance(a, str) and "=" in a else None
        if key is not None and (key in OPTIONS or key in META):
            value = a.split("=", 1)[1]
            if key in OPTIONS and schema.repeatable(OPTIONS[key]):
                options.setdefault(key, []).append(value)   # source=A source=B: a list of paths
                continue
            if key in options:
                raise ProtocolError(f"option {key} given twice")
            options[key] = value
        else:
            positional.append(a)
    if "reply_port" in options:
        port = _convert("reply_port", options.pop("reply_port"), int)
        if not 1 <= port <= 65535:
            raise ProtocolError(f"reply_port must be within 1..65535, got {port}")
    token = options.pop("token", None)
    mid = options.pop("id", None)
    mid = protocol.check_id(mid) if mid is not None else protocol.new_id()
    timeout = options.pop("timeout", None)
    if timeout is not None:
        timeout = _convert("timeout", timeout, float)
        if not 0.001 <= timeout <= limits.max_timeout_s:
            raise ProtocolError(f"timeout must be within [0.001, {limits.max_timeout_s}] s, got {timeout}")

    if name in POSITIONAL:
        spec = POSITIONAL[name]
        if len(positional) != len(spec):
            raise ProtocolError(f"{address} takes {len(spec)} positional argument(s) "
                                f"({', '.join(spec)}) plus key=value options; got {len(positional)}")
        params: dict[str, Any] = {"task": name, "audio": []}
        for field_name, value in zip(spec, positional):
            if field_name == "audio":
                params["audio"].append(_convert("audio path", value, str))
            else:
                params[field_name] = _convert(field_name, value, float)
        for key, value in options.items():
            spec = OPTIONS[key]
            try:
                params[spec.name] = value if isinstance(value, list) else schema.from_text(spec, value)
            except ValueError as e:
                raise ProtocolError(f"{key} {e}") from None
        return Message(type="render", id=mid, params=params, timeout_s=timeout, token=token)
    if name in ("cancel", "status", "wait"):
        if len(positional) != 1 or not isinstance(positional[0], str):
            raise ProtocolError(f"{address} takes one argument: the job id")
        if options:
            raise ProtocolError(f"{address} takes no options other than reply_port and token")
        return Message(type=name, id=protocol.check_id(positional[0]), token=token)
    if name == "health":
        if positional or options:
            raise ProtocolError("/segue/health takes no arguments other than reply_port and token")
        return Message(type="health", id=mid, token=token)
    if name == "unload":
        if len(positional) > 1 or (positional and not isinstance(positional[0], str)) or options:
            raise ProtocolError("/segue/unload takes an optional model name")
        return Message(type="unload", id=mid, args={"model": positional[0]} if positional else {}, token=token)
    raise ProtocolError(f"unknown address {address!r:.80}")


def peek_option(args: Any, key: str) -> Optional[str]:
    """A `key=value` option of a message that may not decode, so its error can still be addressed."""
    for a in args if isinstance(args, (list, tuple)) else ():
        if isinstance(a, str) and a.startswith(key + "="):
            return a[len(key) + 1:]
    return None


def reply_target(sender: tuple, args: Any) -> tuple:
    """The sender's host, at the port named by a valid `reply_port=` option, else the sender's port."""
    port = peek_option(args, "reply_port")
    if port is not None and re.fullmatch(r"[0-9]{1,5}", port) and 1 <= int(port) <= 65535:
        return (sender[0], int(port))
    return sender


def build(address: str, *args: Any) -> bytes:
    b = OscMessageBuilder(address)
    for a in args:
        if isinstance(a, bool) or a is None:
            a = str(a)
        b.add_arg(a)
    return b.build().dgram


class OscServer:
    """A UDP socket served by one thread; replies go to the sender's host (at `reply_port` if given)."""

    def __init__(self, manager: JobManager, *, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
                 token: Optional[str] = None, limits: Optional[Limits] = None) -> None:
        if token is not None and not token:
            raise ValueError("the token is empty; give a real secret or none (loopback only)")
        if token is None and not is_loopback_host(host):
            raise ValueError(f"{host} is not a loopback address; a shared-secret token is required to bind it")
        self.manager = manager
        self.token = token
        self.limits = limits or manager.config.limits
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF_BYTES)
        except OSError:  # keep the system default
            pass
        self.rcvbuf = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        self.sock.bind((host, port))
        self.sock.settimeout(0.1)
        self.address = self.sock.getsockname()[:2]
        self._sent_progress: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()
        self._inbox: "collections.deque[tuple[bytes, tuple, float]]" = collections.deque()
        self._inbox_bytes = 0
        self._inbox_ready = threading.Condition()
        self.dropped = 0  # datagrams dropped because the inbox was full
        self.logs = LogLimiter(log)
        manager.add_listener(self._on_event)

    def serve(self, stop: threading.Event) -> None:
        """Read datagrams into the inbox until `stop`; a second thread handles them."""
        handler = threading.Thread(target=self._handle_inbox, args=(stop,), name="segue-osc-handle", daemon=True)
        handler.start()
        try:
            while not stop.is_set():
                try:
                    data, sender = self.sock.recvfrom(MAX_DATAGRAM + 1)
                except socket.timeout:
                    continue
                except OSError as e:
                    if stop.is_set():
                        return
                    self.logs.warning("recv", "OSC receive failed (%s); still serving", e)  # e.g. a queued ICMP error
                    continue
                with self._inbox_ready:
                    if self._inbox_bytes + len(data) > INBOX_MAX_BYTES:
                        self.dropped += 1
                        self.logs.warning("inbox", "OSC inbox full (%d bytes); dropped a datagram from %s",
                                          self._inbox_bytes, sender[:2])
                        continue
                    self._inbox.append((data, sender[:2], time.time()))
                    self._inbox_bytes += len(data)
                    self._inbox_ready.notify()
        finally:
            with self._inbox_ready:
                self._inbox_ready.notify_all()
            handler.join(5.0)

    def _handle_inbox(self, stop: threading.Event) -> None:
        while True:
            with self._inbox_ready:
                while not self._inbox and not stop.is_set():
                    self._inbox_ready.wait(0.1)
                if not self._inbox:
                    return
                data, sender, received_at = self._inbox.popleft()
                self._inbox_bytes -= len(data)
            try:
                self.handle_datagram(data, sender, received_at)
            except Exception:  # nothing a client sends may stop the handler
                self.logs.exception("handle", "unexpected error handling an OSC datagram")

    def close(self) -> None:
        self.sock.close()

    def handle_datagram(self, data: bytes, sender: tuple, received_at: float) -> None:
        """Decode and act on one datagram; every failure becomes an /segue/error reply."""
        target = sender
        mid = ""
        try:
            messages = parse_packet(data)
        except SegueError as e:  # the whole datagram is dropped: nothing in it is acted on
            self._send(target, "/segue/error", "", protocol.BAD_MESSAGE, f"not an OSC packet: {e.message}"[:500])
            return
        for osc in messages:
            target = reply_target(sender, osc.args)
            mid = peek_option(osc.args, "id") or ""
            mid = mid if protocol.ID_PATTERN.fullmatch(mid) else ""
            try:
                msg = decode_osc(osc.address, list(osc.args), self.limits)
                mid = msg.id
                check_token(self.token, msg.token)
                self._dispatch(msg, target, received_at)
            except Exception as e:
                if not isinstance(e, SegueError):
                    self.logs.exception("message", "unexpected error handling an OSC message")
                err = protocol.error_reply(mid, e)["error"]
                self._send(target, "/segue/error", mid, err["code"], err["message"][:1000])

    def _dispatch(self, msg: Message, target: tuple, received_at: float) -> None:
        m = self.manager
        if msg.type == "render":
            job, _created = m.submit(msg, {"via": "osc", "host": target[0], "port": target[1]}, received_at)
            self._send(target, "/segue/accepted", job.id)
            if job.final:  # a repeated id whose job already ended: answer it again
                self._send_final(target, job.id, job)
        elif msg.type in ("status", "wait"):
            job = m.status(msg.id)
            self._send(target, "/segue/status", job.id, job.state)
            if job.final:
                self._send_final(target, job.id, job)
        elif msg.type == "cancel":
            job = m.cancel(msg.id)
            self._send(target, "/segue/status", job.id, job.state)
        elif msg.type == "health":
            h = m.health()
            self._send(target, "/segue/health", h["version"], ",".join(d["device"] for d in h["devices"]),
                       h["queue_length"], ",".join(h["models"]["loaded"]))
        elif msg.type == "unload":
            m.unload(msg.args.get("model"))
            self._send(target, "/segue/ok", msg.id)

    def _send_done(self, target: tuple, job_id: str, result: dict) -> None:
        """One `/segue/take` per take (all of a `variations` job's), then `/segue/done` with take 1.

        `/segue/done` keeps its four arguments, so a receiver written for one take still works."""
        takes = [t for t in (result.get("takes") or [result]) if isinstance(t, dict)] or [result]
        for n, t in enumerate(takes, 1):
            self._send(target, "/segue/take", job_id, n, len(takes), str(t.get("path", "")),
                       float(t.get("offset_s", 0.0)), float(t.get("duration_s", 0.0)))
        first = takes[0]
        self._send(target, "/segue/done", job_id, str(first.get("path", "")), float(first.get("offset_s", 0.0)),
                   float(first.get("duration_s", 0.0)))

    def _send_final(self, target: tuple, job_id: str, job: Any) -> None:
        if job.state == "done":
            self._send_done(target, job_id, job.result or {})
        else:
            err = job.error or {"code": "internal", "message": ""}
            self._send(target, "/segue/error", job_id, err["code"], err["message"][:1000])

    def _on_event(self, ev: JobEvent) -> None:
        if ev.origin.get("via") != "osc":
            return
        target = (ev.origin["host"], int(ev.origin["port"]))
        if ev.kind == "progress":
            now = time.monotonic()
            with self._lock:
                last_f, last_t = self._sent_progress.get(ev.job_id, (-1.0, 0.0))
                f = float(ev.data["fraction"])
                if f - last_f < PROGRESS_MIN_STEP and now - last_t < PROGRESS_MIN_INTERVAL_S:
                    return
                self._sent_progress[ev.job_id] = (f, now)
            self._send(target, "/segue/progress", ev.job_id, f)
        elif ev.kind == "done":
            with self._lock:
                self._sent_progress.pop(ev.job_id, None)
            self._send_done(target, ev.job_id, ev.data)
        elif ev.kind == "error":
            with self._lock:
                self._sent_progress.pop(ev.job_id, None)
            self._send(target, "/segue/error", ev.job_id, str(ev.data.get("code", "internal")),
                       str(ev.data.get("message", ""))[:1000])

    def _send(self, target: tuple, address: str, *args: Any) -> None:
        try:
            self.sock.sendto(build(address, *args), target)
        except OSError as e:  # the peer is gone; the job stays queryable with /segue/status
            self.logs.warning("send", "could not send %s to %s: %s", address, target, e)


class LogLimiter:
    """At most LOG_BURST lines per key and LOG_WINDOW_S; the rest are counted and summarised once.

    Every OSC log line can be caused by whoever can send a datagram, so none may be unbounded."""

    def __init__(self, logger: logging.Logger, burst: int = LOG_BURST, window_s: float = LOG_WINDOW_S) -> None:
        self.logger, self.burst, self.window_s = logger, burst, window_s
        self._state: dict[str, list] = {}  # key -> [window start, lines written, lines suppressed]
        self._lock = threading.Lock()

    def allow(self, key: str) -> bool:
        now = time.monotonic()
        with self._lock:
            st = self._state.setdefault(key, [now, 0, 0])
            if now - st[0] >= self.window_s:
                if st[2]:
                    self.logger.warning("%d more OSC log line(s) of kind %r were suppressed", st[2], key)
                st[:] = [now, 0, 0]
            if st[1] < self.burst:
                st[1] += 1
                return True
            st[2] += 1
            return False

    def warning(self, key: str, fmt: str, *args: Any) -> None:
        if self.allow(key):
            self.logger.warning(fmt, *args)

    def exception(self, key: str, fmt: str, *args: Any) -> None:
        if self.allow(key):
            self.logger.exception(fmt, *args)
