"""The engine daemon's core: a durable job queue and one supervised worker process per device.

Front ends call `JobManager.submit` (which records the job in sqlite before
returning, so an acknowledgement always means "stored"), `cancel`, `status` and
`health`, and receive `JobEvent`s through listeners. One `DeviceSupervisor`
thread per device takes queued jobs in order, hands them to its worker
subprocess (`bridge.worker`), relays progress, enforces the job's time limit,
and restarts the worker when it dies.
"""
from __future__ import annotations

import logging
import multiprocessing as mp
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import engine
from engine.errors import SegueError
from engine.safe_io import remove_stale_temps
from engine.models.base import available_models
from engine.request import request_from_mapping

from . import protocol
from . import worker_messages as wm
from .jobstore import Job, JobStore
from .paths import PathPolicy
from .protocol import Limits, Message

log = logging.getLogger("segue.daemon")

RENDER_ENTRY = "engine.render:render_takes"   # a list of takes (one unless the request asks for variations)
QUICK_DEATH_S = 10.0      # a worker dying this soon after it started is restarted with a growing delay
MAX_RESTART_DELAY_S = 30.0
PRUNE_INTERVAL_S = 3600.0


@dataclass(frozen=True)
class DaemonConfig:
    """Where state and results live, which devices to use, and the limits every job obeys."""

    state_dir: str
    output_dir: str
    input_roots: tuple[str, ...] = ()
    model_roots: tuple[str, ...] = ()  # the only folders a `kind:/folder` model name may point into
    devices: tuple[str, ...] = ("cpu",)
    job_timeout_s: float = 600.0
    max_attempts: int = 2             # a job interrupted by a daemon crash is re-run until it started this often
    cancel_grace_s: float = 5.0       # after a cancel or timeout, how long before the worker is killed
    shutdown_grace_s: float = 10.0    # on SIGTERM, how long a running job may take to finish
    threads: int = 0                  # torch threads in each worker (0: torch's default)
    max_models: int = 2
    min_free_bytes: int = 0           # unload models when free device memory drops below this
    limits: Limits = field(default_factory=Limits)
    keep_days: Optional[float] = 30.0  # finished job records older than this are pruned (None: never)
    keep_jobs: Optional[int] = 10000   # ... and beyond the newest this many (None: no count limit)
    render_entry: str = RENDER_ENTRY  # "module:function"; tests inject slow or crashing renders here


def restart_delay(quick_deaths: int) -> float:
    """Seconds before restarting a worker that died soon after starting `quick_deaths` times in a row."""
    return min(0.5 * 2 ** (quick_deaths - 1), MAX_RESTART_DELAY_S) if quick_deaths > 0 else 0.0


@dataclass(frozen=True)
class JobEvent:
    """Something that happened to a job: accepted, started, progress, done, or error."""

    kind: str
    job_id: str
    origin: dict
    data: dict


Listener = Callable[[JobEvent], None]


class JobManager:
    """Owns the store, the queue and the supervisors; the API both front ends share."""

    def __init__(self, config: DaemonConfig) -> None:
        self.config = config
        from .worker import resolve
        try:
            resolve(config.render_entry)  # fail here, not in a worker restart loop
        except (ImportError, AttributeError, ValueError) as e:
            raise ValueError(f"render entry {config.render_entry!r} cannot be loaded: {e}") from None
        self.policy = PathPolicy.create(config.input_roots, config.output_dir, config.limits.max_file_bytes,
                                        model_roots=config.model_roots)
        self.store = JobStore(config.state_dir)
        self.queue: "queue.Queue[str]" = queue.Queue()
        self.listeners: list[Listener] = []
        self.stopping = threading.Event()
        self.started_at = time.time()
        self._submit_lock = threading.Lock()
        self.supervisors = [DeviceSupervisor(self, d) for d in config.devices]

    # -- life cycle ----------------------------------------------------------------------------------

    def start(self) -> None:
        """Recover after a crash, clean what a crash left, queue what is pending, then start the workers."""
        requeued, failed = self.store.recover(self.config.max_attempts)
        stale = self.store.clean_spool() + remove_stale_temps(self.policy.output_root)
        if stale:
            log.warning("removed %d file(s) an earlier run left unfinished: %s", len(stale), ", ".join(stale[:5]))
        self.prune()
        for job_id in failed:
            job = self.store.get(job_id)
            assert job is not None and job.error is not None
            self.emit("error", job, job.error)
        for job_id in self.store.queued_ids():
            self.queue.put(job_id)
        if requeued or failed:
            log.warning("recovered after an unclean stop: %d job(s) re-queued, %d failed", len(requeued), len(failed))
        for s in self.supervisors:
            s.start()
        threading.Thread(target=self._maintain, name="segue-maintain", daemon=True).start()

    def prune(self) -> int:
        """Apply the retention settings to the job records (never to queued or running jobs)."""
        c = self.config
        n = self.store.prune(max_age_s=c.keep_days * 86400.0 if c.keep_days is not None else None, keep=c.keep_jobs)
        if n:
            log.info("pruned %d finished job record(s) (keep %s days, %s jobs)", n, c.keep_days, c.keep_jobs)
        return n

    def _maintain(self) -> None:
        while not self.stopping.wait(PRUNE_INTERVAL_S):
            try:
                self.prune()
            except Exception:  # a busy or full database: try again next time
                log.exception("pruning the job records failed")

    def shutdown(self) -> None:
        """Stop taking jobs, let running ones finish within the grace period, stop the workers."""
        self.stopping.set()
        for s in self.supervisors:
            s.join(self.config.shutdown_grace_s + self.config.cancel_grace_s + 10.0)

    def close(self) -> None:
        self.store.close()

    # -- front-end API -------------------------------------------------------------------------------

    def submit(self, msg: Message, origin: dict, received_at: float) -> tuple[Job, bool]:
        """Validate, record and queue a render; returns (job, created). The one validation path of both front ends.

        Paths (and preset names) are confined before `request_from_mapping` runs, since
        applying a preset reads its file.
        """
        if self.stopping.is_set():
            raise SegueError("the daemon is shutting down", code=protocol.SHUTTING_DOWN)
        params = self.policy.confine(msg.params)
        request = request_from_mapping(params)
        protocol.check_durations(request, self.config.limits)
        timeout = min(msg.timeout_s or self.config.job_timeout_s, self.config.job_timeout_s)
        with self._submit_lock:
            existing = self.store.get(msg.id)
            # count live queued jobs: the in-memory queue still holds the ids of cancelled ones
            if existing is None and self.store.counts()["queued"] >= self.config.limits.max_queue:
                raise SegueError(f"the queue is full ({self.config.limits.max_queue} jobs)", code=protocol.QUEUE_FULL)
            job, created = self.store.add(msg.id, params, origin=origin, timeout_s=timeout, received_at=received_at)
            if created:
                self.queue.put(job.id)
        if created:
            self.emit("accepted", job, {})
        return job, created

    def cancel(self, job_id: str) -> Job:
        job = self._job(job_id)
        if job.state == "queued":
            done = self.store.finish(job_id, "cancelled", error=("cancelled", "cancelled before it started"),
                                     from_states=("queued",))
            if done is not None:
                self.emit("error", done, done.error or {})
                return done
            job = self._job(job_id)  # it started meanwhile
        if job.state == "running":
            for s in self.supervisors:
                s.request_cancel(job_id)
        return job

    def status(self, job_id: str) -> Job:
        return self._job(job_id)

    def unload(self, model: Optional[str]) -> None:
        for s in self.supervisors:
            s.control.put(wm.Unload(model))

    def health(self) -> dict:
        counts = self.store.counts()
        return {"version": engine.__version__, "protocol": protocol.PROTOCOL_VERSION,
                "uptime_s": round(time.time() - self.started_at, 3),
                "models": {"available": available_models(),
                           "loaded": sorted({m for s in self.supervisors for m in s.loaded_models})},
                "devices": [s.describe() for s in self.supervisors],
                "queue_length": counts["queued"], "running": counts["running"], "jobs": counts,
                "accepting": not self.stopping.is_set()}

    def _job(self, job_id: str) -> Job:
        job = self.store.get(job_id)
        if job is None:
            raise SegueError(f"no job with id {job_id!r}", code=protocol.UNKNOWN_JOB)
        return job

    # -- events --------------------------------------------------------------------------------------

    def add_listener(self, fn: Listener) -> None:
        self.listeners.append(fn)

    def emit(self, kind: str, job: Job, data: dict) -> None:
        ev = JobEvent(kind, job.id, job.origin, data)
        for fn in self.listeners:
            try:
                fn(ev)
            except Exception:  # one broken front end must not stop the others hearing about the job
                log.exception("listener failed on %s event for %s", kind, job.id)


class DeviceSupervisor:
    """One thread and one worker subprocess for one device."""

    def __init__(self, manager: JobManager, device: str) -> None:
        self.manager = manager
        self.device = device
        self.control: "queue.Queue[tuple]" = queue.Queue()
        self.loaded_models: list[str] = []
        self.restarts = 0
        self._quick_deaths = 0
        self._spawned_at = 0.0
        self.current: Optional[str] = None
        self._cancel_for: Optional[str] = None
        self._ctx = mp.get_context("spawn")
        self._cancel_event = self._ctx.Event()
        self._proc: Optional[Any] = None
        self._running: Optional[Job] = None
        self._conn: Optional[Any] = None
        self._thread = threading.Thread(target=self._loop, name=f"segue-{device}", daemon=True)

    def start(self) -> None:
        self._spawn()
        self._thread.start()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def describe(self) -> dict:
        proc = self._proc
        return {"device": self.device, "pid": proc.pid if proc else None,
                "alive": bool(proc and proc.is_alive()), "job": self.current, "restarts": self.restarts,
                "loaded": list(self.loaded_models)}

    def request_cancel(self, job_id: str) -> None:
        if self.current == job_id:
            self._cancel_for = job_id

    # -- worker process ------------------------------------------------------------------------------

    def _spawn(self) -> None:
        from .worker import worker_main
        cfg = self.manager.config
        parent, child = self._ctx.Pipe()
        proc = self._ctx.Process(target=worker_main, name=f"segue-worker-{self.device}", daemon=True,
                                 args=(child, self._cancel_event, self.device, cfg.render_entry, cfg.output_dir,
                                       cfg.threads, cfg.max_models, cfg.min_free_bytes, self.manager.policy.input_roots))
        proc.start()
        child.close()
        self._proc, self._conn = proc, parent
        self._spawned_at = time.monotonic()
        self.loaded_models = []

    def _restart(self) -> None:
        """Replace the worker; one that keeps dying right after it starts is retried ever more slowly."""
        self._kill()
        self.restarts += 1
        quick = time.monotonic() - self._spawned_at < QUICK_DEATH_S
        self._quick_deaths = self._quick_deaths + 1 if quick else 0
        delay = restart_delay(self._quick_deaths)
        log.warning("restarting the %s worker (restart %d%s)", self.device, self.restarts,
                    f", after {delay:.1f} s: it died {self._quick_deaths} time(s) soon after starting" if delay else "")
        if delay:
            self.manager.stopping.wait(delay)
        self._spawn()

    def _kill(self) -> None:
        if self._proc is not None and self._proc.is_alive():
            self._proc.kill()
        if self._proc is not None:
            self._proc.join(5.0)
        if self._conn is not None:
            self._conn.close()

    def _stop_worker(self) -> None:
        try:
            if self._conn is not None:
                self._conn.send(wm.Stop())
            if self._proc is not None:
                self._proc.join(5.0)
        except (OSError, BrokenPipeError):
            pass
        self._kill()

    # -- the loop ------------------------------------------------------------------------------------

    def _loop(self) -> None:
        m = self.manager
        try:
            while not m.stopping.is_set():
                self._do_control()
                try:
                    job_id = m.queue.get(timeout=0.1)
                except queue.Empty:
                    if self._proc is not None and not self._proc.is_alive():
                        self._restart()  # it died between jobs: have a fresh one ready
                    continue
                try:
                    self._run_job(job_id)
                except Exception:  # a bug here must not stop the device from serving
                    log.exception("supervisor error on job %s", job_id)
                    done = m.store.finish(job_id, "failed", error=("internal", "the supervisor failed; see the log"))
                    if done is not None:
                        m.emit("error", done, done.error or {})
                finally:
                    self.current = None
        finally:
            self._stop_worker()

    def _do_control(self) -> None:
        while True:
            try:
                cmd = self.control.get_nowait()
            except queue.Empty:
                return
            if isinstance(cmd, wm.Unload) and self._conn is not None:
                try:
                    self._conn.send(cmd)
                    if self._conn.poll(30.0):
                        reply = self._conn.recv()
                        if isinstance(reply, wm.Unloaded):
                            self.loaded_models = list(reply.loaded)
                except (EOFError, OSError):
                    self._restart()

    def _run_job(self, job_id: str) -> None:
        m = self.manager
        job = m.store.get(job_id)
        if job is None or job.state != "queued":
            return  # cancelled while queued, or a duplicate queue entry
        try:
            request = m.store.load_request(job)
        except SegueError as e:
            self._finish(job_id, "failed", error=(e.code, e.message))
            return
        self._cancel_for = None
        self._cancel_event.clear()
        self.current = job_id  # before the state changes, so a cancel that sees "running" reaches us
        running = m.store.mark_running(job_id)
        if running is None:
            return  # cancelled between the read above and now
        job = self._running = running
        if self._proc is None or not self._proc.is_alive():
            self._restart()
        try:
            self._conn.send(wm.RenderJob(job_id, request))  # type: ignore[union-attr]
        except (OSError, BrokenPipeError):
            self._restart()
            self._conn.send(wm.RenderJob(job_id, request))  # type: ignore[union-attr]
        deadline = time.monotonic() + (job.timeout_s or m.config.job_timeout_s)
        shutdown_deadline: Optional[float] = None
        reason: Optional[str] = None   # why we asked the worker to stop: cancelled / timeout / shutdown
        kill_at: Optional[float] = None
        while True:
            now = time.monotonic()
            if reason is None:
                if self._cancel_for == job_id:
                    reason = "cancelled"
                elif now > deadline:
                    reason = "timeout"
                elif m.stopping.is_set():
                    shutdown_deadline = shutdown_deadline or now + m.config.shutdown_grace_s
                    if now > shutdown_deadline:
                        reason = "shutdown"
                if reason is not None:
                    self._cancel_event.set()
                    kill_at = now + m.config.cancel_grace_s
            try:
                ready = self._conn.poll(0.05)  # type: ignore[union-attr]
                msg = self._conn.recv() if ready else None  # type: ignore[union-attr]
            except (EOFError, OSError):
                msg, ready = None, False
                self._proc.join(1.0)  # type: ignore[union-attr]
            if msg is not None:
                if self._handle(job_id, msg, reason):
                    return
                continue
            if not self._proc.is_alive():  # type: ignore[union-attr]
                code = self._proc.exitcode  # type: ignore[union-attr]
                self._restart()
                self._end_stopped(job_id, reason, f"the worker process died (exit code {code}) during this job")
                return
            if kill_at is not None and now > kill_at:
                self._restart()
                self._end_stopped(job_id, reason, "the worker did not stop in time and was killed")
                return

    def _handle(self, job_id: str, msg: object, reason: Optional[str]) -> bool:
        """Act on one worker message (bridge/worker_messages.py); True when the job has reached its end."""
        m = self.manager
        if isinstance(msg, wm.Progress):
            m.emit("progress", self._running, {"step": msg.step, "total": msg.total, "elapsed_s": msg.elapsed_s,
                                               "eta_s": msg.eta_s, "stage": msg.stage,
                                               "fraction": msg.step / msg.total if msg.total else 1.0})
            return False
        if isinstance(msg, wm.Started):
            m.store.set_started_at(job_id, msg.at)
            m.emit("started", self._running, {"started_at": msg.at})
            return False
        if isinstance(msg, wm.Done):
            self.loaded_models = list(msg.loaded)
            self._finish(job_id, "done", result=msg.result)
            return True
        if isinstance(msg, wm.Failed):
            self.loaded_models = list(msg.loaded)
            code, text = msg.code, msg.message
            if code == "cancelled" and reason in ("timeout", "shutdown"):
                self._end_stopped(job_id, reason, text)
            else:
                self._finish(job_id, "cancelled" if code == "cancelled" else "failed", error=(code, text))
            return True
        return False

    def _end_stopped(self, job_id: str, reason: Optional[str], detail: str) -> None:
        """Close a job the daemon stopped (or lost): timeouts fail, shutdowns re-queue, crashes fail."""
        m = self.manager
        if reason == "shutdown":
            m.store.requeue(job_id, count_attempt=False)
        elif reason == "timeout":
            self._finish(job_id, "failed", error=(protocol.TIMEOUT, f"the job ran past its time limit; {detail}"))
        elif reason == "cancelled":
            self._finish(job_id, "cancelled", error=("cancelled", detail))
        else:
            self._finish(job_id, "failed", error=(protocol.WORKER_CRASHED, detail))

    def _finish(self, job_id: str, state: str, *, result: Optional[dict] = None,
                error: Optional[tuple[str, str]] = None) -> None:
        m = self.manager
        job = m.store.finish(job_id, state, result=result, error=error)
        if job is None:
            return
        if state == "done":
            m.emit("done", job, job.result or {})
        else:
            m.emit("error", job, job.error or {})
