"""Bounded load test of the bridge on loopback: many concurrent ZeroMQ and OSC clients, one daemon.

Checks that every request gets exactly one final answer (none lost, none
duplicated, on the request socket, on PUB and over OSC), and measures
requests/s and the bridge's own latency: request received -> job started
(timestamps taken by the daemon and the worker), both on an idle daemon and
under load (where it includes the wait in the queue).

    python bench/bridge_load.py --zmq-clients 16 --osc-clients 16 --requests 10 --write BENCHMARKS.md

Renders use the real engine (`engine.render.render`) with the instant
`analytic` model, so the numbers are about the bridge, not the model.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import zmq
from pedalboard.io import AudioFile
from pythonosc.osc_packet import OscPacket

from _common import ROOT as REPO  # noqa: E402  (the checkout on sys.path: bench/_common.py)

from bridge import protocol  # noqa: E402
from bridge.osc_server import build  # noqa: E402


def write_clip(path: Path, seconds: float = 1.0, rate: int = 44100) -> Path:
    t = np.arange(int(seconds * rate)) / rate
    audio = np.stack([0.3 * np.sin(2 * np.pi * 220 * t), 0.3 * np.sin(2 * np.pi * 330 * t)]).astype(np.float32)
    with AudioFile(str(path), "w", rate, 2) as f:
        f.write(audio)
    return path


def render_params(clip: str, seed: int) -> dict:
    return {"task": "infill", "audio": clip, "start_s": 0.4, "end_s": 0.6, "model": "analytic", "steps": 2,
            "context_s": 0.2, "seed": seed, "span": "region"}


@dataclass
class Daemon:
    """`python -m bridge.serve` on ephemeral loopback ports."""

    root: Path
    threads: int = 1
    proc: Optional[subprocess.Popen] = None
    info: dict = field(default_factory=dict)

    def start(self, extra: tuple[str, ...] = ()) -> "Daemon":
        ready = self.root / "ready.json"
        env = dict(os.environ, PYTHONPATH=str(REPO))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bridge.serve", "--zmq", "tcp://127.0.0.1:*", "--events", "tcp://127.0.0.1:*",
             "--osc-port", "0", "--state-dir", str(self.root / "state"), "--output-dir", str(self.root / "out"),
             "--allow-root", str(self.root / "in"), "--ready-file", str(ready), "--threads", str(self.threads),
             "--device", "cpu", "--log-level", "WARNING", "--max-queue", "100000", *extra],
            cwd=str(REPO), env=env, stderr=open(self.root / "daemon.log", "wb"))
        deadline = time.monotonic() + 120
        while not ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((self.root / "daemon.log").read_text()[-2000:])
            time.sleep(0.05)
        self.info = json.loads(ready.read_text())
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(60)


@dataclass
class LoadReport:
    requests: int
    zmq_requests: int
    osc_requests: int
    wall_s: float
    finals: Counter
    pub_finals: Counter
    outcomes: Counter
    submit_rtt_ms: list[float]
    received_to_accepted_ms: list[float]
    received_to_started_ms: list[float]
    problems: list[str]

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.wall_s


def _zmq_client(endpoint: str, clip: str, ids: list[str], seeds: list[int], out: dict, rtts: list[float],
                ctx: zmq.Context) -> None:
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 120000)
    sock.connect(endpoint)
    try:
        for job_id, seed in zip(ids, seeds):
            t0 = time.perf_counter()
            sock.send_multipart(protocol.encode_render(render_params(clip, seed), mid=job_id))
            acc = json.loads(sock.recv())
            rtts.append((time.perf_counter() - t0) * 1000)
            if acc.get("type") != "accepted":
                out.setdefault(job_id, []).append(("refused", acc))
        for job_id in ids:
            while True:
                sock.send_multipart(protocol.encode_request("wait", mid=job_id, timeout_s=60))
                r = json.loads(sock.recv())
                if r["type"] in ("done", "error"):
                    out.setdefault(job_id, []).append((r["type"], r))
                    break
    finally:
        sock.close()


def _osc_client(address: tuple, clip: str, ids: list[str], seeds: list[int], out: dict, timeout_s: float,
                lock: threading.Lock) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.settimeout(0.5)
    for job_id, seed in zip(ids, seeds):
        sock.sendto(build("/segue/infill", clip, 0.4, 0.6, "model=analytic", "steps=2", "context=0.2", "span=region",
                          f"seed={seed}", f"id={job_id}", f"reply_port={port}"), address)
    pending = set(ids)
    deadline = time.monotonic() + timeout_s
    while pending and time.monotonic() < deadline:
        try:
            data, _ = sock.recvfrom(65536)
        except socket.timeout:
            continue
        for m in OscPacket(data).messages:
            addr, params = m.message.address, list(m.message.params)
            if addr in ("/segue/done", "/segue/error"):
                with lock:
                    out.setdefault(params[0], []).append((addr.rsplit("/", 1)[1], params))
                pending.discard(params[0])
    # linger briefly so a duplicate final answer would be seen
    end = time.monotonic() + 0.5
    while time.monotonic() < end:
        try:
            data, _ = sock.recvfrom(65536)
        except socket.timeout:
            continue
        for m in OscPacket(data).messages:
            if m.message.address in ("/segue/done", "/segue/error"):
                with lock:
                    out.setdefault(m.message.params[0], []).append(("late", m.message.params))
    sock.close()


def _pub_monitor(events: str, ctx: zmq.Context, counts: Counter, stop: threading.Event, ready: threading.Event) -> None:
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"segue/job/")
    sub.setsockopt(zmq.RCVHWM, 0)
    sub.connect(events)
    time.sleep(0.3)
    ready.set()
    while not stop.is_set():
        if sub.poll(100):
            _topic, body = sub.recv_multipart()
            ev = json.loads(body)
            if ev["type"] in ("done", "error"):
                counts[ev["id"]] += 1
    sub.close()


def job_summaries(endpoint: str, ctx: zmq.Context, limit: int) -> dict[str, dict]:
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.RCVTIMEO, 30000)
    sock.connect(endpoint)
    sock.send_multipart(protocol.encode_request("jobs", limit=limit))
    reply = json.loads(sock.recv())
    sock.close()
    return {j["job"]: j for j in reply["jobs"]}


def run_load(info: dict, clip: str, *, zmq_clients: int, osc_clients: int, per_client: int,
             tag: str = "load", timeout_s: float = 300.0) -> LoadReport:
    """Fire all clients at once; return what came back and the daemon's own timings."""
    ctx = zmq.Context()
    finals: dict[str, list] = {}
    rtts: list[float] = []
    lock = threading.Lock()
    pub_counts: Counter = Counter()
    stop, ready = threading.Event(), threading.Event()
    monitor = threading.Thread(target=_pub_monitor, args=(info["events"], ctx, pub_counts, stop, ready), daemon=True)
    monitor.start()
    ready.wait(10)
    threads = []
    zmq_ids, osc_ids = [], []
    for c in range(zmq_clients):
        ids = [f"{tag}-z{c}-{i}" for i in range(per_client)]
        zmq_ids += ids
        threads.append(threading.Thread(target=_zmq_client, args=(info["zmq"], clip, ids,
                                                                   [c * 1000 + i for i in range(per_client)],
                                                                   finals, rtts, ctx)))
    for c in range(osc_clients):
        ids = [f"{tag}-o{c}-{i}" for i in range(per_client)]
        osc_ids += ids
        threads.append(threading.Thread(target=_osc_client, args=(tuple(info["osc"]), clip, ids,
                                                                   [500000 + c * 1000 + i for i in range(per_client)],
                                                                   finals, timeout_s, lock)))
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout_s + 30)
    wall = time.perf_counter() - t0
    time.sleep(0.5)
    stop.set()
    monitor.join(5)
    all_ids = zmq_ids + osc_ids
    jobs = job_summaries(info["zmq"], ctx, limit=len(all_ids) + 1000)
    ctx.term()

    problems = []
    finals_count = Counter({i: len(finals.get(i, [])) for i in all_ids})
    for i in all_ids:
        if finals_count[i] != 1:
            problems.append(f"{i}: {finals_count[i]} final answers on its own channel")
        if pub_counts[i] != 1:
            problems.append(f"{i}: {pub_counts[i]} final events on PUB")
        if i not in jobs:
            problems.append(f"{i}: not recorded")
    outcomes = Counter(jobs[i]["state"] for i in all_ids if i in jobs)
    recv_acc = [1000 * (jobs[i]["accepted_at"] - jobs[i]["received_at"]) for i in all_ids if i in jobs]
    recv_start = [1000 * (jobs[i]["started_at"] - jobs[i]["received_at"]) for i in all_ids
                  if i in jobs and jobs[i]["started_at"]]
    return LoadReport(len(all_ids), len(zmq_ids), len(osc_ids), wall, finals_count, pub_counts, outcomes, rtts,
                      recv_acc, recv_start, problems)


def idle_overhead(info: dict, clip: str, n: int, tag: str = "idle") -> tuple[list[float], list[float]]:
    """(received -> started, client submit round trip), in ms, for requests sent one at a time to an idle daemon."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.RCVTIMEO, 60000)
    sock.connect(info["zmq"])
    ids, rtts = [], []
    for i in range(n):
        job_id = f"{tag}-{i}"
        t0 = time.perf_counter()
        sock.send_multipart(protocol.encode_render(render_params(clip, 900000 + i), mid=job_id))
        sock.recv()
        rtts.append((time.perf_counter() - t0) * 1000)
        sock.send_multipart(protocol.encode_request("wait", mid=job_id, timeout_s=60))
        sock.recv()
        ids.append(job_id)
    sock.close()
    jobs = job_summaries(info["zmq"], ctx, limit=n + 10)
    ctx.term()
    return [1000 * (jobs[i]["started_at"] - jobs[i]["received_at"]) for i in ids], rtts


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def markdown(report: LoadReport, idle: list[float], idle_rtt: list[float], args: argparse.Namespace) -> str:
    r = report
    lines = [
        "## Bridge",
        "",
        f"Produced by `python bench/bridge_load.py --zmq-clients {args.zmq_clients} --osc-clients {args.osc_clients} "
        f"--requests {args.requests} --idle {args.idle}` on {platform.machine()} with {os.cpu_count()} CPU core(s) "
        f"({time.strftime('%Y-%m-%d')}; load average {args.load_before:.1f} when it started, the cores being shared), "
        "daemon worker on CPU with 1 torch thread; every job is a real "
        "`engine.render.render` call with the instant `analytic` model (2 steps, 0.2 s region of a 1 s clip), "
        "so these are bridge + queue numbers, not model speed.",
        "",
        f"- Load: {r.requests} requests from {args.zmq_clients} ZeroMQ DEALER clients and {args.osc_clients} OSC "
        f"clients ({args.requests} each), all at once. Outcomes: {dict(r.outcomes)}.",
        f"- Exactly one final answer per request: "
        f"{'yes' if not r.problems else 'NO'} ({sum(1 for v in r.finals.values() if v == 1)}/{r.requests} on the "
        f"request channel, {sum(1 for i in r.finals if r.pub_finals[i] == 1)}/{r.requests} on PUB; "
        f"{len(r.problems)} problem(s)).",
        f"- Throughput: {r.requests_per_s:.1f} requests/s end to end ({r.wall_s:.2f} s for all, renders included).",
        "",
        "| latency (ms) | median | p95 | max |",
        "| --- | ---: | ---: | ---: |",
        f"| idle daemon: request received -> job started ({len(idle)} sequential requests) | "
        f"{pct(idle, 50):.2f} | {pct(idle, 95):.2f} | {max(idle):.2f} |",
        f"| idle daemon: ZeroMQ submit round trip seen by the client | {pct(idle_rtt, 50):.2f} | "
        f"{pct(idle_rtt, 95):.2f} | {max(idle_rtt):.2f} |",
        f"| under load: request received -> accepted (validated, stored in sqlite, fsync) | "
        f"{pct(r.received_to_accepted_ms, 50):.2f} | {pct(r.received_to_accepted_ms, 95):.2f} | "
        f"{max(r.received_to_accepted_ms):.2f} |",
        f"| under load: ZeroMQ submit round trip seen by the client (waits behind the other clients' requests: "
        f"one thread reads and records them in turn) | {pct(r.submit_rtt_ms, 50):.2f} | "
        f"{pct(r.submit_rtt_ms, 95):.2f} | {max(r.submit_rtt_ms):.2f} |",
        f"| under load: request received -> job started (includes the queue wait behind earlier jobs) | "
        f"{pct(r.received_to_started_ms, 50):.1f} | {pct(r.received_to_started_ms, 95):.1f} | "
        f"{max(r.received_to_started_ms):.1f} |",
        "",
    ]
    return "\n".join(lines)


def write_section(path: Path, section: str) -> None:
    """Replace the `## Bridge` section of BENCHMARKS.md (or append it), leaving other sections alone."""
    text = path.read_text() if path.exists() else "# Benchmarks\n\n"
    start = text.find("## Bridge\n")
    if start == -1:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        end = text.find("\n## ", start + 1)
        text = text[:start] + section + ("\n" + text[end + 1:] if end != -1 else "")
    path.write_text(text)


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--zmq-clients", type=int, default=16)
    p.add_argument("--osc-clients", type=int, default=16)
    p.add_argument("--requests", type=int, default=10, help="requests per client")
    p.add_argument("--idle", type=int, default=30, help="sequential requests for the idle-latency figure")
    p.add_argument("--write", type=Path, help="update the ## Bridge section of this markdown file")
    args = p.parse_args(argv)
    args.load_before = os.getloadavg()[0]
    root = Path(tempfile.mkdtemp(prefix="segue-bridge-load-"))
    (root / "in").mkdir()
    clip = str(write_clip(root / "in" / "clip.wav"))
    daemon = Daemon(root).start()
    try:
        idle_overhead(daemon.info, clip, 3, tag="warmup")  # warm up: model load, first imports
        idle, idle_rtt = idle_overhead(daemon.info, clip, args.idle)
        report = run_load(daemon.info, clip, zmq_clients=args.zmq_clients, osc_clients=args.osc_clients,
                          per_client=args.requests)
    finally:
        daemon.stop()
        shutil.rmtree(root, ignore_errors=True)
    section = markdown(report, idle, idle_rtt, args)
    print(section)
    for problem in report.problems[:20]:
        print("PROBLEM:", problem, file=sys.stderr)
    if args.write:
        write_section(args.write, section)
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
