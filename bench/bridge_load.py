"""Bounded load test of the bridge on loopback: many concurrent ZeroMQ and OSC clients, one daemon.

Checks that every request gets exactly one final answer (none lost, none
duplicated, on the request socket, on PUB and over OSC), and measures
requests/s and the bridge's own latency: request received -> job started
(timestamps taken by the daemon and the worker), both on an idle daemon and
under load (where it includes the wait in the queue).

    python bench/bridge_load.py --zmq-clients 64 --osc-clients 32 --requests 10 --flood-clients 4 --write BENCHMARKS.md

Renders use the real engine (`engine.render.render`) with the instant
`analytic` model, so the numbers are about the bridge, not the model. The
daemon runs with a token (as it must off loopback); OSC clients resend a render
(same id) when no `/segue/accepted` comes back within a second, as
bridge/PROTOCOL.md tells them to. Before the load, `--flood-clients` clients
without the token each send renders of 3 x 200 MB PCM frames at once, and the
daemon's peak RSS (VmHWM) is read before and after.
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

TOKEN = "bench-bridge-load-shared-secret"

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
        env = dict(os.environ, PYTHONPATH=str(REPO), SEGUE_TOKEN=TOKEN)
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

    def memory_kib(self) -> dict[str, int]:
        """The daemon process's VmRSS and VmHWM (peak RSS) in KiB (its worker is a separate process)."""
        out = {}
        with open(f"/proc/{self.proc.pid}/status") as f:  # type: ignore[union-attr]
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    out[line.split(":")[0]] = int(line.split()[1])
        return out

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
    osc_resends: int = 0

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.wall_s


def _zmq_client(endpoint: str, clip: str, ids: list[str], seeds: list[int], out: dict, rtts: list[float],
                ctx: zmq.Context, token: Optional[str] = None) -> None:
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 120000)
    sock.connect(endpoint)
    try:
        for job_id, seed in zip(ids, seeds):
            t0 = time.perf_counter()
            sock.send_multipart(protocol.encode_render(render_params(clip, seed), mid=job_id, token=token))
            acc = json.loads(sock.recv())
            rtts.append((time.perf_counter() - t0) * 1000)
            if acc.get("type") != "accepted":
                out.setdefault(job_id, []).append(("refused", acc))
        for job_id in ids:
            while True:
                sock.send_multipart(protocol.encode_request("wait", mid=job_id, timeout_s=60, token=token))
                r = json.loads(sock.recv())
                if r["type"] in ("done", "error"):
                    out.setdefault(job_id, []).append((r["type"], r))
                    break
    finally:
        sock.close()


OSC_RETRY_S = 1.0   # resend a render (same id) when no /segue/accepted came back this long after sending it


def _osc_client(address: tuple, clip: str, ids: list[str], seeds: list[int], out: dict, timeout_s: float,
                lock: threading.Lock, token: Optional[str] = None, resends: Optional[list] = None) -> None:
    """Send every render at once; resend those not yet accepted after OSC_RETRY_S; collect final answers.

    A final answer that arrives again because of a resend (the daemon answers a repeated id of an
    ended job again) is counted once: retrying is the client's side of "answered exactly once"."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.settimeout(0.1)
    extra = [f"token={token}"] if token else []
    messages = {job_id: build("/segue/infill", clip, 0.4, 0.6, "model=analytic", "steps=2", "context=0.2",
                              "span=region", f"seed={seed}", f"id={job_id}", f"reply_port={port}", *extra)
                for job_id, seed in zip(ids, seeds)}
    sent_at = {}
    for job_id in ids:
        sock.sendto(messages[job_id], address)
        sent_at[job_id] = time.monotonic()
    unaccepted, pending, finished = set(ids), set(ids), set()
    deadline = time.monotonic() + timeout_s
    while pending and time.monotonic() < deadline:
        now = time.monotonic()
        for job_id in [j for j in unaccepted if now - sent_at[j] > OSC_RETRY_S]:
            sock.sendto(messages[job_id], address)
            sent_at[job_id] = now
            if resends is not None:
                resends.append(job_id)
        try:
            data, _ = sock.recvfrom(65536)
        except socket.timeout:
            continue
        for m in OscPacket(data).messages:
            addr, params = m.message.address, list(m.message.params)
            if addr == "/segue/accepted":
                unaccepted.discard(params[0])
            elif addr in ("/segue/done", "/segue/error"):
                unaccepted.discard(params[0])
                if params[0] not in finished:
                    with lock:
                        out.setdefault(params[0], []).append((addr.rsplit("/", 1)[1], params))
                    finished.add(params[0])
                pending.discard(params[0])
    # linger briefly so a duplicate final answer would be seen
    end = time.monotonic() + 0.5
    while time.monotonic() < end:
        try:
            data, _ = sock.recvfrom(65536)
        except socket.timeout:
            continue
        for m in OscPacket(data).messages:
            if m.message.address in ("/segue/done", "/segue/error") and m.message.params[0] not in finished:
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


def job_summaries(endpoint: str, ctx: zmq.Context, limit: int, token: Optional[str] = None) -> dict[str, dict]:
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.RCVTIMEO, 30000)
    sock.connect(endpoint)
    sock.send_multipart(protocol.encode_request("jobs", limit=limit, token=token))
    reply = json.loads(sock.recv())
    sock.close()
    return {j["job"]: j for j in reply["jobs"]}


def run_load(info: dict, clip: str, *, zmq_clients: int, osc_clients: int, per_client: int,
             tag: str = "load", timeout_s: float = 300.0, token: Optional[str] = None) -> LoadReport:
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
    resends: list[str] = []
    zmq_ids, osc_ids = [], []
    for c in range(zmq_clients):
        ids = [f"{tag}-z{c}-{i}" for i in range(per_client)]
        zmq_ids += ids
        threads.append(threading.Thread(target=_zmq_client, args=(info["zmq"], clip, ids,
                                                                   [c * 1000 + i for i in range(per_client)],
                                                                   finals, rtts, ctx, token)))
    for c in range(osc_clients):
        ids = [f"{tag}-o{c}-{i}" for i in range(per_client)]
        osc_ids += ids
        threads.append(threading.Thread(target=_osc_client, args=(tuple(info["osc"]), clip, ids,
                                                                   [500000 + c * 1000 + i for i in range(per_client)],
                                                                   finals, timeout_s, lock, token, resends)))
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
    jobs = job_summaries(info["zmq"], ctx, limit=len(all_ids) + 1000, token=token)
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
                      recv_acc, recv_start, problems, len(resends))


@dataclass
class FloodReport:
    clients: int
    messages: int
    frame_bytes: int
    answers: Counter
    hwm_before_kib: int
    hwm_after_kib: int
    rss_after_kib: int
    health_after: bool


def pcm_flood(daemon: "Daemon", *, clients: int, messages: int = 1, frames: int = 3,
              frame_bytes: int = 200 * 1000 * 1000) -> FloodReport:
    """Clients without the token each send `messages` renders of `frames` PCM frames at once.

    One buffer of `frame_bytes` is shared by every frame and sent without a copy, so the bench
    itself stays small; the daemon's peak RSS (VmHWM) is read before and after."""
    info = daemon.info
    before = daemon.memory_kib()
    samples = frame_bytes // 8  # stereo float32
    buf = np.zeros(frame_bytes, dtype=np.uint8)
    header = protocol.encode({"v": 1, "type": "render", "id": "flood", "params": {
        "task": "infill", "audio": {"frame": 0}, "start_s": 1.0, "end_s": 2.0, "model": "analytic"},
        "frames": [{"shape": [2, samples], "sample_rate": 44100, "dtype": "float32"}] * frames})
    ctx = zmq.Context()
    answers: Counter = Counter()
    lock = threading.Lock()

    def client(c: int) -> None:
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVTIMEO, 120000)
        sock.setsockopt(zmq.SNDHWM, 0)
        sock.connect(info["zmq"])
        for _ in range(messages):
            sock.send_multipart([header] + [memoryview(buf)] * frames, copy=False)
        for _ in range(messages):
            try:
                r = json.loads(sock.recv())
                code = r.get("error", {}).get("code", r["type"])
            except zmq.Again:
                code = "no answer"
            with lock:
                answers[code] += 1
        sock.close()
    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    time.sleep(1.0)
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.RCVTIMEO, 10000)
    sock.connect(info["zmq"])
    sock.send_multipart(protocol.encode_request("health", token=TOKEN))
    try:
        healthy = json.loads(sock.recv())["type"] == "health"
    except zmq.Again:
        healthy = False
    sock.close()
    ctx.term()
    after = daemon.memory_kib()
    return FloodReport(clients, clients * messages, frame_bytes, answers, before["VmHWM"], after["VmHWM"],
                       after["VmRSS"], healthy)


def idle_overhead(info: dict, clip: str, n: int, tag: str = "idle",
                  token: Optional[str] = None) -> tuple[list[float], list[float]]:
    """(received -> started, client submit round trip), in ms, for requests sent one at a time to an idle daemon."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.RCVTIMEO, 60000)
    sock.connect(info["zmq"])
    ids, rtts = [], []
    for i in range(n):
        job_id = f"{tag}-{i}"
        t0 = time.perf_counter()
        sock.send_multipart(protocol.encode_render(render_params(clip, 900000 + i), mid=job_id, token=token))
        sock.recv()
        rtts.append((time.perf_counter() - t0) * 1000)
        sock.send_multipart(protocol.encode_request("wait", mid=job_id, timeout_s=60, token=token))
        sock.recv()
        ids.append(job_id)
    sock.close()
    jobs = job_summaries(info["zmq"], ctx, limit=n + 10, token=token)
    ctx.term()
    return [1000 * (jobs[i]["started_at"] - jobs[i]["received_at"]) for i in ids], rtts


def udp_rcvbuf_errors() -> Optional[int]:
    """The kernel's count of UDP datagrams dropped for a full receive buffer (Linux), or None."""
    try:
        with open("/proc/net/snmp") as f:
            rows = [line.split() for line in f if line.startswith("Udp:")]
        return int(rows[1][rows[0].index("RcvbufErrors")])
    except (OSError, ValueError, IndexError):
        return None


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def markdown(report: LoadReport, idle: list[float], idle_rtt: list[float], args: argparse.Namespace,
             flood: Optional[FloodReport] = None) -> str:
    r = report
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30
    lines = [
        "## Bridge",
        "",
        f"Produced by `python bench/bridge_load.py --zmq-clients {args.zmq_clients} --osc-clients {args.osc_clients} "
        f"--requests {args.requests} --idle {args.idle} --flood-clients {args.flood_clients} --flood-messages "
        f"{args.flood_messages} --flood-mb {args.flood_mb:g}` on {platform.machine()} with {os.cpu_count()} CPU core(s) and {mem:.0f} GiB of "
        f"memory, Linux {platform.release()} "
        f"({time.strftime('%Y-%m-%d')}; load average {args.load_before:.1f} when it started, the cores being shared), "
        "daemon worker on CPU with 1 torch thread, the daemon started with a token; every job is a real "
        "`engine.render.render` call with the instant `analytic` model (2 steps, 0.2 s region of a 1 s clip), "
        "so these are bridge + queue numbers, not model speed.",
        "",
    ]
    if flood is not None:
        f = flood
        lines += [
            f"- Unauthenticated PCM flood (before the load): {f.clients} ZeroMQ clients without the token sent "
            f"{f.messages} render(s) of 3 x {f.frame_bytes / 1e6:.0f} MB PCM frames at once. Answers: "
            f"{dict(f.answers)}. Daemon peak RSS (VmHWM) {f.hwm_before_kib / 1024:.0f} MiB before, "
            f"{f.hwm_after_kib / 1024:.0f} MiB after; RSS {f.rss_after_kib / 1024:.0f} MiB a second after the flood; "
            f"health answered afterwards: {'yes' if f.health_after else 'NO'}. The frames are refused on the "
            "token before any PCM is read; what the peak holds is libzmq assembling whole multipart messages "
            "before it delivers them (see the threat model in bridge/PROTOCOL.md).",
        ]
    lines += [
        f"- Load: {r.requests} requests from {args.zmq_clients} ZeroMQ DEALER clients and {args.osc_clients} OSC "
        f"clients ({args.requests} each), all at once. Outcomes: {dict(r.outcomes)}. OSC clients resent "
        f"{r.osc_resends} render(s) (same id) after {OSC_RETRY_S:g} s without `/segue/accepted`; the kernel "
        f"dropped {getattr(args, 'udp_drops', None)} UDP datagram(s) for a full receive buffer meanwhile "
        f"(`UdpRcvbufErrors`, all sockets of the machine).",
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
    p.add_argument("--flood-clients", type=int, default=4, help="unauthenticated clients sending 3 x 200 MB PCM")
    p.add_argument("--flood-messages", type=int, default=1, help="renders each flood client sends at once")
    p.add_argument("--flood-mb", type=float, default=200.0, help="MB per PCM frame of the flood (default 200)")
    p.add_argument("--write", type=Path, help="update the ## Bridge section of this markdown file")
    args = p.parse_args(argv)
    args.load_before = os.getloadavg()[0]
    root = Path(tempfile.mkdtemp(prefix="segue-bridge-load-"))
    (root / "in").mkdir()
    clip = str(write_clip(root / "in" / "clip.wav"))
    daemon = Daemon(root).start()
    try:
        idle_overhead(daemon.info, clip, 3, tag="warmup", token=TOKEN)  # warm up: model load, first imports
        flood = (pcm_flood(daemon, clients=args.flood_clients, messages=args.flood_messages,
                           frame_bytes=int(args.flood_mb * 1e6) // 8 * 8)
                 if args.flood_clients else None)
        idle, idle_rtt = idle_overhead(daemon.info, clip, args.idle, token=TOKEN)
        drops_before = udp_rcvbuf_errors()
        report = run_load(daemon.info, clip, zmq_clients=args.zmq_clients, osc_clients=args.osc_clients,
                          per_client=args.requests, token=TOKEN)
        drops_after = udp_rcvbuf_errors()
        args.udp_drops = (drops_after - drops_before) if drops_before is not None and drops_after is not None \
            else None
    finally:
        daemon.stop()
        shutil.rmtree(root, ignore_errors=True)
    section = markdown(report, idle, idle_rtt, args, flood)
    print(section)
    for problem in report.problems[:20]:
        print("PROBLEM:", problem, file=sys.stderr)
    if args.write:
        write_section(args.write, section)
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
