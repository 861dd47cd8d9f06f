"""ZeroMQ front end: a ROUTER socket for requests and a PUB socket for job events.

Requests may come from REQ sockets (which put an empty delimiter frame after the
routing id) or DEALER sockets (which need not); the reply goes back in the same
envelope. Every request gets exactly one reply. A `wait` request is answered
when its job ends (or its own timeout passes), so even a strict REQ client can
block for the result. Job events go out on PUB with the topic `segue/job/<id>/`.

All socket work happens on the thread that runs `serve`; job events from the
supervisor threads are handed over through a queue and a wake-up pipe. Frames
are received without a copy; the header and the token are checked on the serving
thread before any PCM is touched, and a render that carries PCM is then decoded,
spooled and recorded on a small thread pool, whose replies come back through the
same wake-up pipe, so one large job does not stall every other client.
"""
from __future__ import annotations

import ctypes
import json
import logging
import os
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Optional

import zmq

from engine.errors import SegueError

from . import protocol
from .daemon import JobEvent, JobManager
from .jobstore import STATES
from .protocol import DEFAULT_ENDPOINT, DEFAULT_EVENTS, Limits, Message, is_loopback_endpoint, reply

log = logging.getLogger("segue.zmq")

MAX_WAIT_S = 3600.0
PCM_THREADS = 2                         # renders with PCM decoded and spooled at once
MAX_PCM_IN_FLIGHT = 2 * 1024 ** 3  # PCM bytes handed to the pool, not yet recorded (two full-size jobs); beyond: queue_full


def _release_memory() -> None:
    """Give freed heap back to the system after a large message (glibc keeps it otherwise)."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def topic(job_id: str) -> bytes:
    return f"segue/job/{job_id}/".encode()


def peek_id(frame: bytes) -> Optional[str]:
    """The request id of a message that failed to decode, if one can be read safely (for the error reply)."""
    try:
        header = json.loads(frame[:65536].decode("utf-8"))
        mid = header.get("id") if isinstance(header, dict) else None
        return protocol.check_id(mid) if mid is not None else None
    except Exception:
        return None


class ZmqServer:
    """Binds the request and event sockets and answers requests until `stop` is set."""

    def __init__(self, manager: JobManager, *, endpoint: str = DEFAULT_ENDPOINT, events: str = DEFAULT_EVENTS,
                 token: Optional[str] = None, limits: Optional[Limits] = None,
                 context: Optional[zmq.Context] = None, curve: Optional[Any] = None) -> None:
        """`curve` (a `bridge.keys.ServerKeys`) turns on CURVE on both sockets: only clients whose
        public key is in its clients folder can connect, and the traffic is encrypted."""
        if token is not None and not token:
            raise ValueError("the token is empty; give a real secret or none (loopback only)")
        for ep in (endpoint, events):
            if token is None and curve is None and not is_loopback_endpoint(ep):
                raise ValueError(f"{ep} is not a loopback address; a shared-secret token (or --curve-dir) is "
                                 f"required to bind it")
        self.manager = manager
        self.token = token
        self.limits = limits or manager.config.limits
        self.ctx = context or zmq.Context.instance()
        self._auth = None
        if curve is not None:
            from zmq.auth.thread import ThreadAuthenticator
            self._auth = ThreadAuthenticator(self.ctx, log=logging.getLogger("segue.zmq.auth"))
            self._auth.start()
            self._auth.configure_curve(domain="*", location=curve.clients_dir)
        self.router = self.ctx.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.MAXMSGSIZE, self.limits.max_frame_bytes)  # libzmq drops larger frames unread
        self.router.setsockopt(zmq.LINGER, 1000)
        self.pub = self.ctx.socket(zmq.PUB)
        self.pub.setsockopt(zmq.LINGER, 1000)
        for sock, ep in ((self.router, endpoint), (self.pub, events)):
            if curve is not None:
                sock.curve_secretkey, sock.curve_publickey, sock.curve_server = curve.secret, curve.public, True
            try:
                sock.bind(ep)
            except zmq.ZMQError as e:  # a port in use, IPv6 disabled, a bad address: one line, not a traceback
                self.router.close(0)
                self.pub.close(0)
                if self._auth is not None:
                    self._auth.stop()
                raise OSError(f"cannot bind {ep}: {e}") from None
        self.endpoint = self.router.getsockopt_string(zmq.LAST_ENDPOINT)
        self.events_endpoint = self.pub.getsockopt_string(zmq.LAST_ENDPOINT)
        self._events: "queue.Queue[JobEvent]" = queue.Queue()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        os.set_blocking(self._wake_r, False)
        self._waiters: dict[str, list[tuple[list[bytes], str, float]]] = {}
        self._pool = ThreadPoolExecutor(PCM_THREADS, thread_name_prefix="segue-pcm")
        self._outbox: "queue.Queue[tuple[list[bytes], Optional[dict]]]" = queue.Queue()
        self._pcm_in_flight = 0
        self._pcm_lock = threading.Lock()
        manager.add_listener(self._on_event)

    # -- events from supervisor threads ----------------------------------------------------------------

    def _on_event(self, ev: JobEvent) -> None:
        self._events.put(ev)
        self._wake()

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"!")
        except BlockingIOError:
            pass  # the loop is already due to wake
        except OSError:  # closed during shutdown
            pass

    # -- the loop --------------------------------------------------------------------------------------

    def serve(self, stop: threading.Event) -> None:
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        poller.register(self._wake_r, zmq.POLLIN)
        while not stop.is_set():
            ready = dict(poller.poll(100))
            if self._wake_r in ready:
                try:
                    os.read(self._wake_r, 4096)
                except BlockingIOError:
                    pass
            for _ in range(256):  # bounded batch so events are not starved by a flood of requests
                try:
                    frames = self.router.recv_multipart(zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    break
                big = sum(len(f) for f in frames) > 16 * 1024 * 1024
                self._handle(frames, time.time())
                del frames
                if big:
                    _release_memory()
            self._drain_outbox()
            try:
                self._drain_events()
                self._expire_waiters()
            except Exception:  # an event that cannot be delivered must not stop request handling
                log.exception("error while delivering job events")
        self._drain_events()

    def close(self) -> None:
        for mid, waiters in list(self._waiters.items()):
            for envelope, rid, _ in waiters:
                self._send(envelope, protocol.error_reply(rid, SegueError("the daemon is shutting down",
                                                                          code=protocol.SHUTTING_DOWN)))
        self._waiters.clear()
        self._pool.shutdown(wait=True)
        self._drain_outbox()
        self.router.close()
        self.pub.close()
        if self._auth is not None:
            self._auth.stop()
        os.close(self._wake_r)
        os.close(self._wake_w)

    # -- requests --------------------------------------------------------------------------------------

    def _handle(self, frames: list[Any], received_at: float) -> None:
        if len(frames) >= 2 and len(frames[1]) == 0:
            envelope, body = [bytes(f) for f in frames[:2]], frames[2:]
        else:
            envelope, body = [bytes(f) for f in frames[:1]], frames[1:]
        mid: Optional[str] = None
        try:
            # token and header first: an unauthenticated client's PCM is never copied or decoded
            protocol.check_envelope(body, self.limits, self.token)
            if len(body) > 1:  # a render with PCM: decode, spool and record it off this thread
                self._hand_to_pool(envelope, body, received_at)
                return
            msg = protocol.decode_message(body, self.limits, self.token)
            mid = msg.id
            out = self._dispatch(msg, envelope, received_at)
        except Exception as e:  # every request gets an answer; nothing here may stop the loop
            if not isinstance(e, SegueError):
                log.exception("unexpected error handling a request")
            out = protocol.error_reply(mid or (peek_id(bytes(body[0])) if body else None), e)
        if out is not None:
            self._send(envelope, out)

    def _hand_to_pool(self, envelope: list[bytes], body: list[Any], received_at: float) -> None:
        size = sum(len(f) for f in body[1:])
        with self._pcm_lock:
            if self._pcm_in_flight + size > MAX_PCM_IN_FLIGHT:
                raise SegueError(f"{self._pcm_in_flight} bytes of PCM are still being recorded; retry shortly",
                                 code=protocol.QUEUE_FULL)
            self._pcm_in_flight += size
        self._pool.submit(self._render_with_pcm, envelope, body, received_at, size)

    def _render_with_pcm(self, envelope: list[bytes], body: list[Any], received_at: float, size: int) -> None:
        """Pool thread: decode the PCM, record the job, and queue the reply for the serving thread."""
        mid: Optional[str] = None
        try:
            msg = protocol.decode_message(body, self.limits, self.token)
            mid = msg.id
            del body[:]  # the frames are copied into the request: let libzmq's buffers go
            job, created = self.manager.submit(msg, {"via": "zmq"}, received_at)
            out: Optional[dict] = reply("accepted", job.id, job=job.id, state=job.state, created=created,
                                        events=self.events_endpoint, topic=topic(job.id).decode())
        except Exception as e:
            if not isinstance(e, SegueError):
                log.exception("unexpected error handling a render with PCM")
            out = protocol.error_reply(mid or (peek_id(bytes(body[0])) if body else None), e)
        finally:
            with self._pcm_lock:
                self._pcm_in_flight -= size
        self._outbox.put((envelope, out))
        self._wake()
        _release_memory()

    def _drain_outbox(self) -> None:
        while True:
            try:
                envelope, out = self._outbox.get_nowait()
            except queue.Empty:
                return
            if out is not None:
                self._send(envelope, out)

    def _dispatch(self, msg: Message, envelope: list[bytes], received_at: float) -> Optional[dict]:
        m = self.manager
        if msg.type == "render":
            job, created = m.submit(msg, {"via": "zmq"}, received_at)
            return reply("accepted", job.id, job=job.id, state=job.state, created=created,
                         events=self.events_endpoint, topic=topic(job.id).decode())
        if msg.type == "wait":
            job = m.status(msg.id)
            if job.final:
                return final_reply(job)
            timeout = msg.args.get("timeout_s", 30.0)
            if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 <= timeout <= MAX_WAIT_S:
                raise protocol.ProtocolError(f"args.timeout_s must be a number within [0, {MAX_WAIT_S}]")
            self._waiters.setdefault(job.id, []).append((envelope, msg.id, time.monotonic() + timeout))
            return None
        if msg.type == "status":
            return reply("status", msg.id, **m.status(msg.id).summary())
        if msg.type == "cancel":
            return reply("status", msg.id, **m.cancel(msg.id).summary())
        if msg.type == "jobs":
            limit = msg.args.get("limit", 100)
            if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 10000:
                raise protocol.ProtocolError("args.limit must be an integer within [1, 10000]")
            states = msg.args.get("states", list(STATES))
            if not isinstance(states, list) or not all(isinstance(s, str) for s in states):
                raise protocol.ProtocolError("args.states must be a list of state names")
            return reply("jobs", msg.id, jobs=[j.summary() for j in m.store.list(limit=limit, states=states)])
        if msg.type == "health":
            return reply("health", msg.id, **m.health(), endpoint=self.endpoint, events=self.events_endpoint)
        if msg.type == "unload":
            model = msg.args.get("model")
            if model is not None and not isinstance(model, str):
                raise protocol.ProtocolError("args.model must be a model name or absent (all models)")
            m.unload(model)
            return reply("ok", msg.id)
        raise protocol.ProtocolError(f"unhandled request type {msg.type!r}")

    def _send(self, envelope: list[bytes], obj: dict) -> None:
        try:
            self.router.send_multipart(envelope + [protocol.encode(obj)], zmq.NOBLOCK)
        except zmq.ZMQError as e:  # peer gone or its queue full: the job stays queryable by id
            log.warning("could not reply to a client: %s", e)

    # -- job events ------------------------------------------------------------------------------------

    def _drain_events(self) -> None:
        while True:
            try:
                ev = self._events.get_nowait()
            except queue.Empty:
                return
            obj = event_message(ev)
            try:
                self.pub.send_multipart([topic(ev.job_id), protocol.encode(obj)], zmq.NOBLOCK)
            except zmq.ZMQError as e:
                log.warning("could not publish an event: %s", e)
            if ev.kind in ("done", "error"):
                job = self.manager.store.get(ev.job_id)
                for envelope, rid, _ in self._waiters.pop(ev.job_id, []):
                    self._send(envelope, final_reply(job) if job else obj)

    def _expire_waiters(self) -> None:
        now = time.monotonic()
        for job_id in list(self._waiters):
            keep = []
            for envelope, rid, deadline in self._waiters[job_id]:
                if now >= deadline:
                    job = self.manager.store.get(job_id)
                    self._send(envelope, reply("status", rid, **job.summary()) if job else
                               protocol.error_reply(rid, SegueError("job vanished", code=protocol.UNKNOWN_JOB)))
                else:
                    keep.append((envelope, rid, deadline))
            if keep:
                self._waiters[job_id] = keep
            else:
                del self._waiters[job_id]


def final_reply(job: Any) -> dict:
    """The one final answer for a finished job: `done` with the result, or `error` with code and message."""
    if job.state == "done":
        return reply("done", job.id, job=job.id, result=job.result)
    err = job.error or {"code": "internal", "message": "the job ended without a result"}
    return reply("error", job.id, job=job.id, state=job.state, error=err)


def event_message(ev: JobEvent) -> dict:
    if ev.kind == "progress":
        return reply("progress", ev.job_id, job=ev.job_id, **ev.data)
    if ev.kind == "done":
        return reply("done", ev.job_id, job=ev.job_id, result=ev.data)
    if ev.kind == "error":
        return reply("error", ev.job_id, job=ev.job_id, error=ev.data)
    state = {"accepted": "queued", "started": "running"}[ev.kind]
    return reply("status", ev.job_id, job=ev.job_id, state=state, **ev.data)
