"""`segue serve`: run the engine daemon with its ZeroMQ and OSC front ends until SIGTERM.

The bridge registers this subcommand with `segue` itself (`add_subcommand`, named
in setup.cfg's `segue.commands` entry points), so the engine's CLI never imports
the bridge; `python -m bridge.serve` runs the same thing.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from typing import Optional, Sequence

from .daemon import RENDER_ENTRY, DaemonConfig, JobManager
from .osc_server import DEFAULT_PORT, OscServer
from .protocol import DEFAULT_ENDPOINT, DEFAULT_EVENTS, Limits, check_configured_token
from .zmq_server import ZmqServer

log = logging.getLogger("segue.serve")


def _default_dir(env: str, fallback: str, leaf: str) -> str:
    base = os.environ.get(env) or os.path.join(os.path.expanduser("~"), fallback)
    return os.path.join(base, "segue", leaf)


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `segue serve` (shared by `python -m bridge.serve`)."""
    parser.add_argument("--zmq", default=DEFAULT_ENDPOINT, help="ROUTER endpoint for requests (default %(default)s)")
    parser.add_argument("--events", default=DEFAULT_EVENTS, help="PUB endpoint for job events (default %(default)s)")
    parser.add_argument("--osc-host", default="127.0.0.1", help="OSC UDP address (default %(default)s)")
    parser.add_argument("--osc-port", type=int, default=DEFAULT_PORT,
                        help="OSC UDP port; 0 picks a free one, -1 disables OSC (default %(default)s)")
    parser.add_argument("--token", default=None,
                        help="shared secret required from clients (at least 16 characters; mandatory when binding "
                             "anything but loopback). Visible to other users in `ps`: prefer --token-file or "
                             "$SEGUE_TOKEN")
    parser.add_argument("--token-file", default=None, metavar="PATH",
                        help="read the shared secret from this file (its first line)")
    parser.add_argument("--curve-dir", default=None, metavar="DIR",
                        help="turn on ZeroMQ CURVE (authenticated, encrypted) on both sockets with the keys "
                             "`segue keys DIR` made; only clients whose key is in DIR/clients can connect")
    parser.add_argument("--model-root", action="append", default=None, metavar="DIR",
                        help="a folder under which clients may name model folders (`stable-audio:/DIR/x`); "
                             "repeatable (default %s)" % _default_dir("XDG_DATA_HOME", ".local/share", "models"))
    parser.add_argument("--state-dir", default=_default_dir("XDG_STATE_HOME", ".local/state", "daemon"),
                        help="where the job database and PCM spool live (default %(default)s)")
    parser.add_argument("--output-dir", default=_default_dir("XDG_DATA_HOME", ".local/share", "renders"),
                        help="where results are written; the only place clients may name as output "
                             "(default %(default)s)")
    parser.add_argument("--allow-root", action="append", default=None, metavar="DIR",
                        help="a folder clients may read audio from (repeatable; default: your home folder)")
    parser.add_argument("--device", action="append", default=None,
                        help="cpu, cuda, cuda:N; repeat for one worker per device (default: cuda if present, else cpu)")
    parser.add_argument("--job-timeout", type=float, default=600.0, help="seconds a job may run (default %(default)s)")
    parser.add_argument("--max-attempts", type=int, default=2,
                        help="how often a job interrupted by a daemon crash is started before it is failed")
    parser.add_argument("--shutdown-grace", type=float, default=10.0,
                        help="on SIGTERM, seconds a running job may take to finish before it is re-queued")
    parser.add_argument("--threads", type=int, default=0, help="torch threads per worker (0: torch's default)")
    parser.add_argument("--max-models", type=int, default=2, help="models kept loaded per worker")
    parser.add_argument("--min-free-mb", type=int, default=0,
                        help="unload idle models when free device memory drops below this (0: never)")
    parser.add_argument("--max-queue", type=int, default=Limits.max_queue, help="queued jobs before refusing more")
    parser.add_argument("--keep-days", type=float, default=30.0,
                        help="forget finished job records older than this, at start and hourly; result files stay "
                             "(0: never; default %(default)s)")
    parser.add_argument("--keep-jobs", type=int, default=10000,
                        help="keep at most this many finished job records (0: no limit; default %(default)s)")
    parser.add_argument("--ready-file", default=None,
                        help="write the bound endpoints as JSON here once serving (for scripts and tests)")
    parser.add_argument("--render-entry", default=RENDER_ENTRY, help=argparse.SUPPRESS)
    parser.add_argument("--log-level", default="INFO")


def check_devices(requested: Optional[list[str]]) -> tuple[str, ...]:
    """The devices to run workers on: as asked (each must exist here), else cuda if present, else cpu."""
    import torch
    if not requested:
        return ("cuda",) if torch.cuda.is_available() else ("cpu",)
    for name in requested:
        try:
            dev = torch.device(name)
        except (RuntimeError, ValueError):
            raise ValueError(f"--device {name!r} is not a device name (cpu, cuda, cuda:N)") from None
        if dev.type == "cuda" and (not torch.cuda.is_available()
                                   or (dev.index or 0) >= torch.cuda.device_count()):
            raise ValueError(f"--device {name!r}: no such CUDA device here "
                             f"({torch.cuda.device_count()} visible)")
        if dev.type not in ("cpu", "cuda"):
            raise ValueError(f"--device {name!r}: only cpu and cuda devices are supported")
    if len(set(requested)) != len(requested):
        raise ValueError("a device is named twice; the daemon runs one worker per device")
    return tuple(requested)


def add_subcommand(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """The `segue.commands` entry point: add `segue serve` to the engine's command line."""
    p = subparsers.add_parser("serve", help="run the engine daemon with its ZeroMQ and OSC front ends")
    add_serve_arguments(p)
    p.set_defaults(func=serve_main)
    return p


def read_token(args: argparse.Namespace) -> Optional[str]:
    """The shared secret from --token-file, --token or $SEGUE_TOKEN (in that order), checked.

    An empty or short token is refused rather than taken as "no token" or as a secret."""
    if getattr(args, "token_file", None):
        try:
            with open(args.token_file, encoding="utf-8") as f:
                token: Optional[str] = f.readline().strip()
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"--token-file {args.token_file!r} cannot be read: {e}") from None
    elif args.token is not None:
        token = args.token
    else:
        token = os.environ.get("SEGUE_TOKEN")
    return check_configured_token(token)


def serve_main(args: argparse.Namespace) -> int:
    """Run until SIGTERM/SIGINT; returns the process exit status."""
    logging.basicConfig(level=getattr(logging, str(args.log_level).upper(), logging.INFO),
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        devices = check_devices(args.device)
        token = read_token(args)
        curve = None
        if getattr(args, "curve_dir", None):
            from .keys import load_server_keys
            curve = load_server_keys(args.curve_dir)
    except ValueError as e:
        log.error("cannot start: %s", e)
        return 2
    config = DaemonConfig(
        state_dir=args.state_dir, output_dir=args.output_dir,
        input_roots=tuple(args.allow_root or [os.path.expanduser("~")]),
        model_roots=tuple(args.model_root or [_default_dir("XDG_DATA_HOME", ".local/share", "models")]),
        devices=devices,
        job_timeout_s=args.job_timeout, max_attempts=args.max_attempts, shutdown_grace_s=args.shutdown_grace,
        threads=args.threads, max_models=args.max_models, min_free_bytes=args.min_free_mb * 1024 * 1024,
        limits=Limits(max_queue=args.max_queue), render_entry=args.render_entry,
        keep_days=args.keep_days or None, keep_jobs=args.keep_jobs or None)
    os.makedirs(config.state_dir, exist_ok=True)
    try:
        manager = JobManager(config)
        zmq_server = ZmqServer(manager, endpoint=args.zmq, events=args.events, token=token, curve=curve)
        osc_server = (OscServer(manager, host=args.osc_host, port=args.osc_port, token=token)
                      if args.osc_port >= 0 else None)
    except (ValueError, OSError) as e:
        log.error("cannot start: %s", e)
        return 2

    term = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: term.set())
    front_stop = threading.Event()
    threads = [threading.Thread(target=zmq_server.serve, args=(front_stop,), name="segue-zmq", daemon=True)]
    if osc_server is not None:
        threads.append(threading.Thread(target=osc_server.serve, args=(front_stop,), name="segue-osc", daemon=True))
    manager.start()
    for t in threads:
        t.start()
    ready = {"pid": os.getpid(), "zmq": zmq_server.endpoint, "events": zmq_server.events_endpoint,
             "osc": list(osc_server.address) if osc_server else None, "devices": list(config.devices)}
    log.info("serving %s", json.dumps(ready))
    if args.ready_file:
        tmp = args.ready_file + ".tmp"
        with open(tmp, "w") as f:
            json.dump(ready, f)
        os.replace(tmp, args.ready_file)

    while not term.wait(0.5):
        pass
    log.info("shutting down: no new jobs; waiting up to %.0f s for the running one", config.shutdown_grace_s)
    manager.shutdown()
    front_stop.set()
    for t in threads:
        t.join(5.0)
    zmq_server.close()
    if osc_server is not None:
        osc_server.close()
    manager.close()
    log.info("stopped")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="segue serve", description=__doc__.splitlines()[0])
    add_serve_arguments(parser)
    return serve_main(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
