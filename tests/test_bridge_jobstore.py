"""The durable job table, the worker's model cache, and the daemon's admission limits (no worker started)."""
from __future__ import annotations

import os
import time

import numpy as np
import pytest

from bridge.daemon import JobManager
from bridge.jobstore import JobStore
from bridge.protocol import Limits, Message
from bridge.worker import ModelCache, free_memory_bytes
from engine.errors import SegueError
from engine.request import PCMAudio

from support.bridge_fixtures import make_config, tone, write_wav


def params(**kw) -> dict:
    return {"task": "infill", "audio": "/music/a.wav", "start_s": 1.0, "end_s": 2.0, **kw}


def test_a_job_is_on_disk_once_add_returns_and_survives_reopening(tmp_path):
    store = JobStore(tmp_path)
    job, created = store.add("j1", params(seed=3), origin={"via": "zmq"}, timeout_s=9.0, received_at=100.0)
    assert created and job.state == "queued" and job.seq == 1 and job.attempts == 0
    store.close()
    again = JobStore(tmp_path)
    job = again.get("j1")
    assert (job.state, job.params["seed"], job.timeout_s, job.received_at) == ("queued", 3, 9.0, 100.0)
    assert again.queued_ids() == ["j1"]
    assert [j.id for j in again.list(states=["queued"])] == ["j1"]
    assert again.list(states=[]) == [] and again.list(states=["nonsense"]) == []
    job2, _ = again.add("j2", params(), origin={}, timeout_s=None, received_at=101.0)
    assert job2.seq == 2  # numbering continues after a restart, so queue order is kept


def test_the_same_id_reattaches_only_to_the_same_request(tmp_path):
    store = JobStore(tmp_path)
    pcm = PCMAudio(tone(0.2), 44100)
    store.add("p1", params(audio=[pcm]), origin={}, timeout_s=None, received_at=1.0)
    job, created = store.add("p1", params(audio=[PCMAudio(pcm.samples.copy(), 44100)]), origin={},
                             timeout_s=None, received_at=2.0)
    assert not created and job.received_at == 1.0
    changed = pcm.samples.copy()
    changed[0, 0] += 0.5
    with pytest.raises(SegueError) as e:
        store.add("p1", params(audio=[PCMAudio(changed, 44100)]), origin={}, timeout_s=None, received_at=3.0)
    assert e.value.code == "duplicate_id"
    with pytest.raises(SegueError):
        store.add("p1", params(seed=1), origin={}, timeout_s=None, received_at=3.0)
    assert len(os.listdir(store.spool_dir)) == 1  # refused and repeated adds leave no spool files behind


def test_spooled_pcm_comes_back_bit_exact_and_is_deleted_when_the_job_ends(tmp_path):
    store = JobStore(tmp_path)
    a, ref = PCMAudio(tone(0.3), 44100), PCMAudio(tone(0.1, freq=99.0)[:1], 22050)
    job, _ = store.add("s1", {"task": "style", "audio": a, "reference": ref, "strength": 0.5}, origin={},
                       timeout_s=None, received_at=1.0)
    assert len(os.listdir(store.spool_dir)) == 2
    request = store.load_request(store.get("s1"))
    np.testing.assert_array_equal(request.audio[0].samples, a.samples)
    np.testing.assert_array_equal(request.reference.samples, ref.samples)
    assert (request.reference.sample_rate, request.strength) == (22050, 0.5)
    store.mark_running("s1")
    assert store.finish("s1", "done", result={"path": "/out/x.wav"}).result == {"path": "/out/x.wav"}
    assert os.listdir(store.spool_dir) == []
    assert store.finish("s1", "failed", error=("internal", "late")) is None  # one final state, never two
    assert store.get("s1").state == "done"


def test_recovery_requeues_interrupted_jobs_with_attempts_left_and_fails_the_rest(tmp_path):
    store = JobStore(tmp_path)
    for i in range(4):
        store.add(f"r{i}", params(seed=i), origin={}, timeout_s=None, received_at=float(i))
    store.mark_running("r0")                       # interrupted once
    store.mark_running("r1")
    store.requeue("r1")
    store.mark_running("r1")                       # interrupted twice
    store.mark_running("r2")
    store.finish("r2", "done", result={"path": "p"})
    store.close()
    store = JobStore(tmp_path)
    requeued, failed = store.recover(max_attempts=2)
    assert (requeued, failed) == (["r0"], ["r1"])
    assert store.get("r1").error == {"code": "interrupted", "message": store.get("r1").error["message"]}
    assert store.queued_ids() == ["r0", "r3"]
    assert store.counts() == {"queued": 2, "running": 0, "done": 1, "failed": 1, "cancelled": 0}


def test_a_shutdown_requeue_gives_the_attempt_back(tmp_path):
    store = JobStore(tmp_path)
    store.add("x", params(), origin={}, timeout_s=None, received_at=0.0)
    store.mark_running("x")
    store.requeue("x", count_attempt=False)
    assert (store.get("x").state, store.get("x").attempts) == ("queued", 0)


def test_the_manager_refuses_work_beyond_the_queue_limit_and_while_stopping(tmp_path):
    manager = JobManager(make_config(tmp_path, limits=Limits(max_queue=2)))
    clip = str(write_wav(tmp_path / "in" / "c.wav", tone(1.0)))
    try:
        def submit(i):
            msg = Message(type="render", id=f"q{i}", params={"task": "infill", "audio": clip, "start_s": 0.1,
                                                             "end_s": 0.2})
            return manager.submit(msg, {"via": "zmq"}, time.time())
        submit(0), submit(1)
        assert submit(1)[1] is False  # re-attaching is not new work
        with pytest.raises(SegueError) as e:
            submit(2)
        assert e.value.code == "queue_full"
        manager.stopping.set()
        with pytest.raises(SegueError) as e:
            submit(3)
        assert e.value.code == "shutting_down"
        assert manager.store.counts()["queued"] == 2
    finally:
        manager.close()


def test_durations_beyond_the_daemon_limit_are_too_large(tmp_path):
    manager = JobManager(make_config(tmp_path, limits=Limits(max_duration_s=30.0)))
    clip = str(write_wav(tmp_path / "in" / "c.wav", tone(0.5)))
    try:
        msg = Message(type="render", id="long", params={"task": "continue", "audio": clip, "duration_s": 31.0})
        with pytest.raises(SegueError) as e:
            manager.submit(msg, {}, time.time())
        assert e.value.code == "too_large"
    finally:
        manager.close()


def test_the_model_cache_keeps_the_most_recent_models_and_unloads_on_request():
    loads = []
    cache = ModelCache("cpu", max_models=2, loader=lambda name: loads.append(name) or f"model:{name}")
    assert cache.get("a") == "model:a" and cache.get("b") == "model:b" and cache.get("a") == "model:a"
    assert loads == ["a", "b"]              # loaded once each
    cache.get("c")                           # evicts b, the least recently used
    assert cache.loaded() == ["a", "c"]
    assert cache.unload("a") == ["a"] and cache.unload() == ["c"] and cache.loaded() == []


def test_the_model_cache_evicts_when_free_memory_is_below_the_floor():
    free = free_memory_bytes("cpu")
    assert free is not None and free > 0
    cache = ModelCache("cpu", max_models=4, min_free_bytes=free * 1000, loader=lambda name: name)
    cache.get("a")
    cache.get("b")                           # memory is "low": a goes before b is loaded
    assert cache.loaded() == ["b"]
    relaxed = ModelCache("cpu", max_models=4, min_free_bytes=1, loader=lambda name: name)
    relaxed.get("a"), relaxed.get("b")
    assert relaxed.loaded() == ["a", "b"]


def test_a_cancelled_job_cannot_start_and_a_started_one_is_not_cancelled_as_queued(tmp_path):
    store = JobStore(tmp_path)
    store.add("c1", params(), origin={}, timeout_s=None, received_at=0.0)
    store.add("c2", params(seed=1), origin={}, timeout_s=None, received_at=0.0)
    assert store.finish("c1", "cancelled", error=("cancelled", "x"), from_states=("queued",)) is not None
    assert store.mark_running("c1") is None and store.get("c1").attempts == 0
    assert store.mark_running("c2").state == "running"
    assert store.finish("c2", "cancelled", error=("cancelled", "x"), from_states=("queued",)) is None
    assert store.get("c2").state == "running"


def test_a_request_cannot_raise_its_time_limit_above_the_daemons(tmp_path):
    manager = JobManager(make_config(tmp_path, job_timeout_s=20.0))
    clip = str(write_wav(tmp_path / "in" / "c.wav", tone(0.5)))
    try:
        base = {"task": "infill", "audio": clip, "start_s": 0.1, "end_s": 0.2}
        long, _ = manager.submit(Message(type="render", id="t1", params=base, timeout_s=3000.0), {}, time.time())
        short, _ = manager.submit(Message(type="render", id="t2", params={**base, "seed": 1}, timeout_s=5.0), {},
                                  time.time())
        default, _ = manager.submit(Message(type="render", id="t3", params={**base, "seed": 2}), {}, time.time())
        assert (long.timeout_s, short.timeout_s, default.timeout_s) == (20.0, 5.0, 20.0)
    finally:
        manager.close()
