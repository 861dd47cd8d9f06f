"""What the daemon leaves on disk: job records are pruned, and a full disk or a crash leaves no debris.

Replays of the fault run: the job database grew ~630 B per job forever; a full disk left orphan
sidecars and `.npy.tmp` spool files behind.
"""
from __future__ import annotations

import errno
import os
import time

import numpy as np
import pytest

from bridge.daemon import JobManager
from bridge.jobstore import JobStore
from engine import safe_io
from engine.audio_io import write_audio_atomic
from engine.errors import SegueError
from engine.request import PCMAudio

from support.bridge_fixtures import make_config, tone


def add(store: JobStore, job_id: str, params: dict | None = None) -> None:
    store.add(job_id, params or {"task": "infill", "audio": "/a.wav", "start_s": 0.0, "end_s": 0.1},
              origin={"via": "test"}, timeout_s=None, received_at=time.time())


def test_prune_forgets_old_and_surplus_finished_jobs_but_never_live_ones(tmp_path):
    store = JobStore(tmp_path)
    for i in range(6):
        add(store, f"j{i}")
    for i in range(4):
        store.finish(f"j{i}", "done", result={"path": f"/r{i}.wav"})
    add(store, "running")
    store.mark_running("running")
    # j0..j3 finished now; "an hour later" only age counts
    assert store.prune(max_age_s=7200, now=time.time() + 3600) == 0
    assert store.prune(max_age_s=1800, keep=None, now=time.time() + 3600) == 4
    assert {j.id for j in store.list()} == {"j4", "j5", "running"}
    for i in (4, 5):
        store.finish(f"j{i}", "failed", error=("x", "y"))
    add(store, "j6")
    store.finish("j6", "cancelled", error=("cancelled", ""))
    assert store.prune(keep=1) == 2
    assert {j.id for j in store.list()} == {"j6", "running"}
    store.close()


def test_the_daemon_prunes_at_start_by_its_retention_settings(tmp_path):
    store = JobStore(tmp_path / "state")
    for i in range(5):
        add(store, f"old{i}")
        store.finish(f"old{i}", "done", result={})
    store.close()
    manager = JobManager(make_config(tmp_path, keep_jobs=2, devices=()))
    try:
        manager.start()
        assert sorted(j.id for j in manager.store.list()) == ["old3", "old4"]
    finally:
        manager.shutdown()
        manager.close()


def test_start_removes_spool_and_temp_files_a_crash_left_but_keeps_live_spool(tmp_path):
    config = make_config(tmp_path, devices=())
    store = JobStore(config.state_dir)
    add(store, "live", {"task": "infill", "audio": PCMAudio(tone(0.2), 44100), "start_s": 0.0, "end_s": 0.1})
    store.close()
    spool = os.path.join(config.state_dir, "spool")
    live = set(os.listdir(spool))
    for name in ("gone.audio0.1.2.npy", "gone.audio0.1.3.npy.tmp"):
        open(os.path.join(spool, name), "wb").close()
    os.makedirs(config.output_dir, exist_ok=True)
    stale = os.path.join(config.output_dir, ".x.wav.0123456789ab.tmp")
    mine = os.path.join(config.output_dir, ".hidden-but-not-ours.tmp")
    for p in (stale, mine):
        open(p, "wb").close()
    manager = JobManager(config)
    try:
        manager.start()
        assert set(os.listdir(spool)) == live and len(live) == 1
        assert not os.path.exists(stale) and os.path.exists(mine)
        assert manager.store.load_request(manager.store.get("live")).audio[0].samples.shape[0] == 2
    finally:
        manager.shutdown()
        manager.close()


def test_a_full_disk_while_spooling_leaves_no_spool_files_and_a_coded_error(tmp_path, monkeypatch):
    store = JobStore(tmp_path)
    real_save = np.save
    calls = []

    def save(f, arr, **kw):
        calls.append(1)
        if len(calls) == 2:
            f.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(f, arr, **kw)
    monkeypatch.setattr(np, "save", save)
    params = {"task": "transition", "audio": [PCMAudio(tone(0.2), 44100), PCMAudio(tone(0.2), 44100)]}
    with pytest.raises(SegueError) as e:
        add(store, "full", params)
    assert e.value.code == "storage_full"
    assert os.listdir(store.spool_dir) == [] and store.get("full") is None
    store.close()


@pytest.mark.parametrize("failing_suffix", [".wav", ".json"])
def test_a_full_disk_while_writing_the_wav_or_its_sidecar_leaves_neither_and_no_temp_file(tmp_path, monkeypatch,
                                                                                          failing_suffix):
    real_stage = safe_io.stage
    staged = []

    def stage(dir_fd, name, write):
        staged.append(name)
        if name.endswith(failing_suffix):
            def failing(f):
                f.write(b"RIFF....")
                raise OSError(errno.ENOSPC, "No space left on device")
            return real_stage(dir_fd, name, failing)
        return real_stage(dir_fd, name, write)
    monkeypatch.setattr(safe_io, "stage", stage)
    with pytest.raises(OSError):
        write_audio_atomic(tmp_path / "r.wav", tone(0.1), 44100, sidecar={"segue_version": "t"})
    # The WAV is staged first (the sidecar records its hash), and nothing is committed until both are.
    assert staged == (["r.wav"] if failing_suffix == ".wav" else ["r.wav", "r.json"])
    assert os.listdir(tmp_path) == []
