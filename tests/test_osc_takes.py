"""OSC replies for a `variations` job: every take reaches the client, and a one-take receiver still works.

A real python-osc client sends the render and a python-osc server receives the replies, as a
Max/Pd/TouchOSC-style client would: one handler for `/segue/take` (all takes), and one for
`/segue/done` alone (a receiver written before takes existed).
"""
from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest
from pythonosc.dispatcher import Dispatcher
from pythonosc.osc_server import ThreadingOSCUDPServer
from pythonosc.udp_client import SimpleUDPClient

from support.bridge_fixtures import InProcessDaemon, make_config, tone, write_wav


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    root = tmp_path_factory.mktemp("osc-takes")
    d = InProcessDaemon(root, make_config(root, render_entry="engine.render:render_takes")).start()
    write_wav(root / "in" / "clip.wav", tone(2.0))
    yield d
    d.stop()


class Receiver:
    """A python-osc server on an ephemeral port that records what arrives, by address."""

    def __init__(self) -> None:
        self.got: list[tuple[str, tuple]] = []
        self.cond = threading.Condition()
        disp = Dispatcher()
        disp.map("/segue/*", self._on)
        self.server = ThreadingOSCUDPServer(("127.0.0.1", 0), disp)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _on(self, address: str, *args) -> None:
        with self.cond:
            self.got.append((address, args))
            self.cond.notify_all()

    def wait_for(self, address: str, count: int = 1, timeout_s: float = 60.0) -> list[tuple]:
        deadline = time.monotonic() + timeout_s
        with self.cond:
            while sum(a == address for a, _ in self.got) < count and time.monotonic() < deadline:
                self.cond.wait(0.2)
            return [args for a, args in self.got if a == address]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _render(daemon, receiver: Receiver, job_id: str, *options: str) -> None:
    client = SimpleUDPClient(*daemon.osc.address[:2])
    client.send_message("/segue/infill", [str(daemon.root / "in" / "clip.wav"), 0.8, 1.2, "model=analytic",
                                          "steps=4", "context=0.5", "seed=7", "span=region", f"id={job_id}",
                                          f"reply_port={receiver.port}", *options])


def test_every_take_of_a_variations_job_arrives_then_done_with_take_one(daemon):
    rx = Receiver()
    try:
        _render(daemon, rx, "osc-takes-3", "variations=3")
        done = rx.wait_for("/segue/done")
        takes = rx.wait_for("/segue/take", 3, timeout_s=5.0)
        order = [a for a, _ in rx.got if a in ("/segue/take", "/segue/done")]
    finally:
        rx.close()
    assert len(done) == 1 and done[0][0] == "osc-takes-3"
    assert order == ["/segue/take"] * 3 + ["/segue/done"]        # every take, then done
    # /segue/take: job id, take number (1-based), take count, path, offset (s), duration (s)
    assert [t[:3] for t in takes] == [("osc-takes-3", n, 3) for n in (1, 2, 3)]
    paths = [t[3] for t in takes]
    assert len(set(paths)) == 3 and all(os.path.exists(p) for p in paths)
    seeds = [json.loads(Path(p).with_suffix(".json").read_text())["seed"] for p in paths]
    assert seeds == [7, 8, 9]                                     # three different renders
    for t in takes:
        assert t[4] == pytest.approx(0.8, abs=1e-6) and t[5] == pytest.approx(0.4, abs=1e-3)
    # a receiver that only knows /segue/done gets take 1, with the same four arguments as ever
    assert done[0] == ("osc-takes-3", paths[0], takes[0][4], takes[0][5])


def test_a_one_take_job_sends_one_take_and_the_same_done_as_before(daemon):
    rx = Receiver()
    try:
        _render(daemon, rx, "osc-takes-1")
        done = rx.wait_for("/segue/done")
        takes = rx.wait_for("/segue/take", 1, timeout_s=5.0)
    finally:
        rx.close()
    assert len(takes) == 1 and takes[0][:3] == ("osc-takes-1", 1, 1)
    assert done == [("osc-takes-1", takes[0][3], takes[0][4], takes[0][5])]


def test_asking_a_finished_job_again_replays_every_take(daemon):
    rx = Receiver()
    try:
        _render(daemon, rx, "osc-takes-again", "variations=2")
        first = rx.wait_for("/segue/take", 2)
        rx.wait_for("/segue/done")
        SimpleUDPClient(*daemon.osc.address[:2]).send_message("/segue/status",
                                                              ["osc-takes-again", f"reply_port={rx.port}"])
        again = rx.wait_for("/segue/take", 4)
        done = rx.wait_for("/segue/done", 2)
    finally:
        rx.close()
    assert again[2:] == first and len(done) == 2 and done[1] == done[0]
