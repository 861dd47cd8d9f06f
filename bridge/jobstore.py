"""Durable job records in sqlite: a job is written (and its PCM spooled) before it is acknowledged.

States: queued -> running -> done | failed | cancelled. After a crash the daemon
calls `recover`: queued jobs stay queued, jobs caught running are re-queued
while they have attempts left and otherwise failed with `interrupted`, so no
accepted job is silently dropped. In-memory PCM from ZeroMQ is spooled to
`.npy` files beside the database (fsynced, renamed into place) and deleted when
the job reaches a final state.

At start the database's integrity is checked, and its highest job number is
compared with a high-water mark kept beside it (`jobs.highwater`): a corrupt
database, or one that lost jobs (a zero-length file, a WAL lost after SIGKILL),
is copied aside and refused with a message naming it, never silently replaced by
an empty one.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

import numpy as np

from engine.errors import SegueError
from engine.request import PCMAudio, RenderRequest, request_from_mapping

from .protocol import DUPLICATE_ID, INTERRUPTED, STORAGE_FULL

FINAL_STATES = ("done", "failed", "cancelled")
DB_NAME = "jobs.sqlite3"
HIGHWATER_NAME = "jobs.highwater"   # the highest job number ever recorded, to notice a database that lost jobs
STATES = ("queued", "running") + FINAL_STATES

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    state TEXT NOT NULL,
    params TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    origin TEXT NOT NULL,
    timeout_s REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    received_at REAL,
    accepted_at REAL,
    started_at REAL,
    finished_at REAL,
    result TEXT,
    error_code TEXT,
    error_message TEXT
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, seq);
"""


class StoreDamaged(ValueError):
    """The job database is corrupt or has lost jobs; the daemon refuses to start on it."""


@dataclass
class Job:
    """One row of the store, decoded. `params` is JSON-safe (PCM appears as spool references)."""

    id: str
    seq: int
    state: str
    params: dict
    origin: dict
    timeout_s: Optional[float]
    attempts: int
    received_at: Optional[float]
    accepted_at: Optional[float]
    started_at: Optional[float]
    finished_at: Optional[float]
    result: Optional[dict] = None
    error: Optional[dict] = None
    fingerprint: str = field(default="", repr=False)

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    def summary(self) -> dict:
        """What status replies carry: state, attempts, timings, and the result or error."""
        out: dict[str, Any] = {"job": self.id, "state": self.state, "task": self.params.get("task"),
                               "attempts": self.attempts, "received_at": self.received_at,
                               "accepted_at": self.accepted_at, "started_at": self.started_at,
                               "finished_at": self.finished_at}
        if self.result is not None:
            out["result"] = self.result
        if self.error is not None:
            out["error"] = self.error
        return out


class JobStore:
    """Thread-safe sqlite job table plus a PCM spool folder under `state_dir`."""

    def __init__(self, state_dir: str | os.PathLike) -> None:
        self.state_dir = os.fspath(state_dir)
        self.spool_dir = os.path.join(self.state_dir, "spool")
        os.makedirs(self.spool_dir, exist_ok=True)
        self._lock = threading.Lock()
        self.path = os.path.join(self.state_dir, DB_NAME)
        self._highwater_path = os.path.join(self.state_dir, HIGHWATER_NAME)
        seen = self._read_highwater()
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            check = self._db.execute("PRAGMA quick_check").fetchone()
            if check is None or check[0] != "ok":
                raise sqlite3.DatabaseError(f"integrity check: {check[0] if check else 'no answer'}")
            self._db.executescript(_SCHEMA)
            row = self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM jobs").fetchone()
        except sqlite3.DatabaseError as e:
            copy = self._keep_copy()
            raise StoreDamaged(f"the job database {self.path} is damaged ({e}); a copy is kept at {copy}. Move "
                               f"{self.state_dir} away to start with an empty history") from None
        self._seq = int(row[0])
        if self._seq > seen:  # a database from before the high-water mark existed
            self._write_highwater()
        if self._seq < seen:  # e.g. a zero-length file, or a WAL lost after SIGKILL: never start empty over it
            self._db.close()
            copy = self._keep_copy()
            raise StoreDamaged(f"the job database {self.path} ends at job #{self._seq}, but #{seen} were recorded "
                               f"(it was truncated, replaced, or its -wal file was lost); a copy is kept at {copy}. "
                               f"Restore the file, or move {self.state_dir} away to start with an empty history")

    def _read_highwater(self) -> int:
        try:
            with open(self._highwater_path) as f:
                return int(f.read().strip() or 0)
        except FileNotFoundError:
            return 0
        except (OSError, ValueError):
            return 0

    def _write_highwater(self) -> None:
        """Remember how many jobs were ever recorded (not fsynced: it must survive a kill, not a power cut)."""
        tmp = self._highwater_path + ".tmp"
        with open(tmp, "w") as f:
            f.write(str(self._seq))
        os.replace(tmp, self._highwater_path)

    def _keep_copy(self) -> str:
        """Copy the database (and its -wal/-shm files) aside before anything touches it again."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        copy = f"{self.path}.damaged-{stamp}"
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(self.path + suffix):
                shutil.copy2(self.path + suffix, copy + suffix)
        return copy

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- writing -------------------------------------------------------------------------------------

    def add(self, job_id: str, params: dict, *, origin: dict, timeout_s: Optional[float],
            received_at: float) -> tuple[Job, bool]:
        """Record a new queued job; returns (job, created). Re-sending the same id and params is idempotent."""
        stored, spooled, digest = self._spool(job_id, params)
        kept = False
        try:
            with self._lock:
                existing = self._get(job_id)
                if existing is not None:
                    if existing.fingerprint != digest:
                        raise SegueError(f"job id {job_id!r} is already used by a different request",
                                         code=DUPLICATE_ID)
                    return existing, False
                self._seq += 1
                self._db.execute(
                    "INSERT INTO jobs (id, seq, state, params, fingerprint, origin, timeout_s, received_at, accepted_at)"
                    " VALUES (?, ?, 'queued', ?, ?, ?, ?, ?, ?)",
                    (job_id, self._seq, json.dumps(stored), digest, json.dumps(origin), timeout_s, received_at,
                     time.time()))
                kept = True
                self._write_highwater()
                return self._get(job_id), True  # type: ignore[return-value]
        finally:
            if not kept:  # spool files of a refused or repeated job must not linger
                self._remove_files(spooled)

    def mark_running(self, job_id: str) -> Optional[Job]:
        """Start a queued job (counting the attempt); None if it is no longer queued (cancelled meanwhile)."""
        with self._lock:
            cur = self._db.execute("UPDATE jobs SET state = 'running', attempts = attempts + 1, started_at = ? "
                                   "WHERE id = ? AND state = 'queued'", (time.time(), job_id))
            return self._get(job_id) if cur.rowcount else None

    def set_started_at(self, job_id: str, t: float) -> None:
        with self._lock:
            self._db.execute("UPDATE jobs SET started_at = ? WHERE id = ?", (t, job_id))

    def requeue(self, job_id: str, *, count_attempt: bool = True) -> None:
        """Put a running job back in the queue (shutdown, or recovery with attempts left)."""
        with self._lock:
            self._db.execute("UPDATE jobs SET state = 'queued', started_at = NULL, attempts = attempts - ? "
                             "WHERE id = ?", (0 if count_attempt else 1, job_id))

    def finish(self, job_id: str, state: str, *, result: Optional[dict] = None,
               error: Optional[tuple[str, str]] = None,
               from_states: tuple[str, ...] = ("queued", "running")) -> Optional[Job]:
        """Move a job to a final state once; None if it was not in `from_states` (so never two answers)."""
        assert state in FINAL_STATES and all(s in ("queued", "running") for s in from_states), (state, from_states)
        marks = ",".join("?" * len(from_states))
        with self._lock:
            cur = self._db.execute(
                "UPDATE jobs SET state = ?, finished_at = ?, result = ?, error_code = ?, error_message = ? "
                f"WHERE id = ? AND state IN ({marks})",
                (state, time.time(), json.dumps(result) if result is not None else None,
                 error[0] if error else None, error[1] if error else None, job_id, *from_states))
            if cur.rowcount == 0:
                return None
            job = self._get(job_id)
        self._remove_files(_spool_files(job.params, self.spool_dir))  # type: ignore[union-attr]
        return job

    def recover(self, max_attempts: int) -> tuple[list[str], list[str]]:
        """After a restart: re-queue interrupted jobs with attempts left, fail the others. Returns both id lists."""
        with self._lock:
            rows = self._db.execute("SELECT id, attempts FROM jobs WHERE state = 'running' ORDER BY seq").fetchall()
        requeued, failed = [], []
        for job_id, attempts in rows:
            if attempts < max_attempts:
                self.requeue(job_id)
                requeued.append(job_id)
            else:
                self.finish(job_id, "failed", error=(INTERRUPTED, f"the daemon stopped during this job "
                                                                  f"{attempts} time(s); not retried again"))
                failed.append(job_id)
        return requeued, failed

    def prune(self, *, max_age_s: Optional[float] = None, keep: Optional[int] = None,
              now: Optional[float] = None) -> int:
        """Forget finished jobs older than `max_age_s` or beyond the newest `keep`; returns how many.

        Only done, failed and cancelled jobs are removed (never queued or running ones), and only
        their records: result files stay where they are."""
        now = time.time() if now is None else now
        removed = 0
        marks = ",".join("?" * len(FINAL_STATES))
        with self._lock:
            if max_age_s is not None:
                removed += self._db.execute(f"DELETE FROM jobs WHERE state IN ({marks}) AND finished_at < ?",
                                            (*FINAL_STATES, now - max_age_s)).rowcount
            if keep is not None:
                removed += self._db.execute(
                    f"DELETE FROM jobs WHERE state IN ({marks}) AND seq NOT IN (SELECT seq FROM jobs WHERE state IN "
                    f"({marks}) ORDER BY seq DESC LIMIT ?)", (*FINAL_STATES, *FINAL_STATES, int(keep))).rowcount
        return removed

    def clean_spool(self) -> list[str]:
        """At start: delete spool files no queued or running job refers to (and `.tmp` leftovers)."""
        with self._lock:
            rows = self._db.execute("SELECT params FROM jobs WHERE state IN ('queued', 'running')").fetchall()
        live = {os.path.basename(p) for (params,) in rows for p in _spool_files(json.loads(params), self.spool_dir)}
        removed = []
        for name in os.listdir(self.spool_dir):
            if name not in live:
                self._remove_files([os.path.join(self.spool_dir, name)])
                removed.append(name)
        return removed

    # -- reading -------------------------------------------------------------------------------------

    def get(self, job_id: str) -> Optional[Job]:
        with self._lock:
            return self._get(job_id)

    def queued_ids(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT id FROM jobs WHERE state = 'queued' ORDER BY seq")]

    def list(self, *, limit: int = 100, states: Iterable[str] = STATES) -> list[Job]:
        states = [s for s in states if s in STATES]
        if not states:
            return []
        marks = ",".join("?" * len(states))
        with self._lock:
            rows = self._db.execute(f"SELECT * FROM jobs WHERE state IN ({marks}) ORDER BY seq DESC LIMIT ?",
                                    (*states, int(limit))).fetchall()
            return [self._row(r) for r in rows]

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()
        return {s: 0 for s in STATES} | {s: int(n) for s, n in rows}

    def load_request(self, job: Job) -> RenderRequest:
        """Rebuild the validated request, reading spooled PCM back into memory."""
        return request_from_mapping(_unspool(job.params, self.spool_dir))

    # -- internals -----------------------------------------------------------------------------------

    def _get(self, job_id: str) -> Optional[Job]:
        row = self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else self._row(row)

    def _row(self, r: tuple) -> Job:
        cols = ("id", "seq", "state", "params", "fingerprint", "origin", "timeout_s", "attempts", "received_at",
                "accepted_at", "started_at", "finished_at", "result", "error_code", "error_message")
        d = dict(zip(cols, r))
        return Job(id=d["id"], seq=d["seq"], state=d["state"], params=json.loads(d["params"]),
                   origin=json.loads(d["origin"]), timeout_s=d["timeout_s"], attempts=d["attempts"],
                   received_at=d["received_at"], accepted_at=d["accepted_at"], started_at=d["started_at"],
                   finished_at=d["finished_at"], result=json.loads(d["result"]) if d["result"] else None,
                   error={"code": d["error_code"], "message": d["error_message"]} if d["error_code"] else None,
                   fingerprint=d["fingerprint"])

    def _spool(self, job_id: str, params: dict) -> tuple[dict, list[str], str]:
        """Write PCM entries to fsynced .npy files; return JSON-safe params, the files, and a fingerprint."""
        h = hashlib.sha256()
        files: list[str] = []

        def put(v: Any, name: str) -> Any:
            if not isinstance(v, PCMAudio):
                return v
            h.update(name.encode() + str(v.samples.shape).encode() + str(v.sample_rate).encode())
            h.update(np.ascontiguousarray(v.samples).tobytes())
            fname = f"{job_id}.{name}.{os.getpid()}.{time.monotonic_ns()}.npy"
            path = os.path.join(self.spool_dir, fname)
            tmp = path + ".tmp"
            try:
                with open(tmp, "wb") as f:
                    np.save(f, v.samples, allow_pickle=False)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
            except BaseException:  # e.g. a full disk: leave no partial spool file behind
                self._remove_files([tmp])
                raise
            files.append(path)
            return {"spool": fname, "sample_rate": int(v.sample_rate)}

        stored = dict(params)
        try:
            audio = stored.get("audio")
            if isinstance(audio, (list, tuple)):
                stored["audio"] = [put(a, f"audio{i}") for i, a in enumerate(audio)]
            else:
                stored["audio"] = put(audio, "audio0")
            if "reference" in stored:
                stored["reference"] = put(stored["reference"], "reference")
        except OSError as e:
            self._remove_files(files)
            raise SegueError(f"the PCM could not be stored ({e.strerror}); nothing was recorded",
                             code=STORAGE_FULL if e.errno == errno.ENOSPC else "internal") from None
        except BaseException:
            self._remove_files(files)
            raise
        h.update(json.dumps({k: v for k, v in stored.items() if k not in ("audio", "reference")} | {
            "audio": _strip_spool(stored.get("audio")), "reference": _strip_spool(stored.get("reference"))},
            sort_keys=True).encode())
        if files:
            _fsync_dir(self.spool_dir)
        return stored, files, h.hexdigest()

    @staticmethod
    def _remove_files(paths: Iterable[str]) -> None:
        for p in paths:
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass


def _strip_spool(v: Any) -> Any:
    """A spool reference without its file name, so fingerprints compare content, not file names."""
    if isinstance(v, dict) and "spool" in v:
        return {"pcm": True, "sample_rate": v["sample_rate"]}
    if isinstance(v, list):
        return [_strip_spool(x) for x in v]
    return v


def _spool_files(params: dict, spool_dir: str) -> list[str]:
    out = []
    for v in ([params.get("audio")] if not isinstance(params.get("audio"), list) else params["audio"]) + \
            [params.get("reference")]:
        if isinstance(v, dict) and "spool" in v:
            out.append(os.path.join(spool_dir, v["spool"]))
    return out


def _unspool(params: dict, spool_dir: str) -> dict:
    def get(v: Any) -> Any:
        if isinstance(v, dict) and "spool" in v:
            name = os.path.basename(v["spool"])
            return PCMAudio(np.load(os.path.join(spool_dir, name), allow_pickle=False), int(v["sample_rate"]))
        return v
    out = dict(params)
    audio = out.get("audio")
    out["audio"] = [get(a) for a in audio] if isinstance(audio, list) else get(audio)
    if "reference" in out:
        out["reference"] = get(out["reference"])
    return out


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
