"""A bounded load on loopback: concurrent ZeroMQ and OSC clients, every request answered exactly once.

The full-size run and its numbers are `bench/bridge_load.py` (BENCHMARKS.md, ## Bridge);
this is the same code at a size that fits the test suite.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from support.bridge_fixtures import InProcessDaemon, make_config

BENCH = Path(__file__).resolve().parent.parent / "bench" / "bridge_load.py"


@pytest.fixture(scope="module")
def load():
    spec = importlib.util.spec_from_file_location("bridge_load", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bridge_load"] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


def test_concurrent_clients_on_both_front_ends_each_get_exactly_one_final_answer(tmp_path, load):
    d = InProcessDaemon(tmp_path, make_config(tmp_path, render_entry="engine.render:render")).start()
    try:
        clip = str(load.write_clip(tmp_path / "in" / "clip.wav"))
        info = {"zmq": d.zmq.endpoint, "events": d.zmq.events_endpoint, "osc": list(d.osc.address)}
        report = load.run_load(info, clip, zmq_clients=4, osc_clients=4, per_client=4, timeout_s=120)
    finally:
        d.stop()
    assert report.problems == []
    assert report.requests == 32 and report.zmq_requests == 16 and report.osc_requests == 16
    assert report.outcomes == {"done": 32}
    assert set(report.finals.values()) == {1} and len(report.finals) == 32
    assert all(report.pub_finals[i] == 1 for i in report.finals)
    # the daemon's own clock: nothing starts before it is received and recorded
    assert min(report.received_to_accepted_ms) >= 0 and min(report.received_to_started_ms) >= 0
    assert len(report.received_to_started_ms) == 32
