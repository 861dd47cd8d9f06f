"""The job database is never silently lost: damage is refused at start, naming the file, with a copy kept.

Replays of the fault run: a zero-length database, or one whose WAL was lost after SIGKILL,
started empty and dropped every job (0 of 5 kept); a corrupt one failed with a raw traceback.
"""
from __future__ import annotations

import logging
import os
import shutil
import time

import pytest

from bridge import serve
from bridge.jobstore import JobStore, StoreDamaged


def five_jobs(state) -> None:
    store = JobStore(state)
    for i in range(5):
        store.add(f"j{i}", {"task": "infill", "audio": "/a.wav", "start_s": 0.0, "end_s": 0.1},
                  origin={"via": "test"}, timeout_s=None, received_at=time.time())
    store.close()


def test_a_healthy_database_reopens_with_every_job(tmp_path):
    five_jobs(tmp_path)
    store = JobStore(tmp_path)
    assert sorted(j.id for j in store.list()) == [f"j{i}" for i in range(5)]
    store.close()


def test_a_zero_length_database_over_a_history_is_refused_and_kept(tmp_path):
    five_jobs(tmp_path)
    db = tmp_path / "jobs.sqlite3"
    for suffix in ("-wal", "-shm"):
        (tmp_path / f"jobs.sqlite3{suffix}").unlink(missing_ok=True)
    db.write_bytes(b"")
    with pytest.raises(StoreDamaged) as e:
        JobStore(tmp_path)
    assert str(db) in str(e.value) and "#5" in str(e.value)
    assert list(tmp_path.glob("jobs.sqlite3.damaged-*"))


def test_a_database_whose_wal_was_lost_after_a_kill_is_refused(tmp_path):
    live = tmp_path / "live"
    store = JobStore(live)  # still open, as in a daemon killed with SIGKILL: the jobs are in the WAL
    for i in range(5):
        store.add(f"j{i}", {"task": "infill", "audio": "/a.wav", "start_s": 0.0, "end_s": 0.1},
                  origin={"via": "test"}, timeout_s=None, received_at=time.time())
    after_kill = tmp_path / "after-kill"
    after_kill.mkdir()
    for name in ("jobs.sqlite3", "jobs.highwater"):  # everything but jobs.sqlite3-wal survived
        shutil.copy(live / name, after_kill / name)
    store.close()
    with pytest.raises(StoreDamaged, match="wal file was lost"):
        JobStore(after_kill)


def test_a_corrupt_database_is_refused_with_a_message_naming_it(tmp_path):
    five_jobs(tmp_path)
    db = tmp_path / "jobs.sqlite3"
    data = bytearray(db.read_bytes())
    data[100:4000] = os.urandom(3900)
    db.write_bytes(bytes(data))
    with pytest.raises(StoreDamaged) as e:
        JobStore(tmp_path)
    assert str(db) in str(e.value) and "damaged" in str(e.value)
    (copy,) = [p for p in tmp_path.glob("jobs.sqlite3.damaged-*") if not p.name.endswith(("-wal", "-shm"))]
    assert copy.read_bytes() == bytes(data)


def test_serve_refuses_a_damaged_database_with_one_line_and_exit_status_2(tmp_path, caplog):
    state = tmp_path / "state"
    five_jobs(state)
    (state / "jobs.sqlite3").write_bytes(b"not a database at all" * 300)
    with caplog.at_level(logging.ERROR, logger="segue.serve"):
        status = serve.main(["--state-dir", str(state), "--output-dir", str(tmp_path / "out"), "--allow-root",
                             str(tmp_path), "--osc-port", "-1", "--device", "cpu", "--zmq", "tcp://127.0.0.1:*",
                             "--events", "tcp://127.0.0.1:*"])
    assert status == 2
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and str(state / "jobs.sqlite3") in errors[0].getMessage() and not errors[0].exc_info
