"""The render worker: a spawned subprocess that owns one device and its loaded models.

Renders run here, not in the daemon, so a segfault or an out-of-memory kill in a
model takes down only this process; the daemon's supervisor sees the pipe close,
fails the job with `worker_crashed` and starts a fresh worker. Messages on the
pipe are the dataclasses of bridge/worker_messages.py.
"""
from __future__ import annotations

import dataclasses
import importlib
import logging
import os
import time
import traceback
from collections import OrderedDict
from typing import Any, Callable, Optional

from . import worker_messages as wm

from engine.errors import SegueError
from engine.progress import CancelToken, ProgressEvent

log = logging.getLogger("segue.worker")

PROGRESS_INTERVAL_S = 0.05


class EventCancelToken(CancelToken):
    """A `CancelToken` backed by a multiprocessing Event the daemon sets from another process."""

    def __init__(self, event: Any) -> None:
        self._event = event


def resolve(path: str) -> Callable[..., Any]:
    """`module:function` -> the function (how the render entry point is named across processes)."""
    module, _, name = path.partition(":")
    if not module or not name:
        raise ValueError(f"expected 'module:function', got {path!r}")
    return getattr(importlib.import_module(module), name)


def free_memory_bytes(device: str) -> Optional[int]:
    """Free memory on the device (GPU: the driver's count; CPU: MemAvailable), or None if unknown."""
    if device.startswith("cuda"):
        import torch
        free, _total = torch.cuda.mem_get_info(torch.device(device))
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class ModelCache:
    """Loaded models by name, least recently used first; evicted on request or when memory runs low."""

    def __init__(self, device: str, *, max_models: int = 2, min_free_bytes: int = 0,
                 loader: Optional[Callable[[str], Any]] = None) -> None:
        self.device = device
        self.max_models = max(1, max_models)
        self.min_free_bytes = min_free_bytes
        self._loader = loader
        self._models: "OrderedDict[str, Any]" = OrderedDict()

    def loaded(self) -> list[str]:
        return list(self._models)

    def get(self, name: str) -> Any:
        if name in self._models:
            self._models.move_to_end(name)
            return self._models[name]
        while self._models and (len(self._models) >= self.max_models or self.under_pressure()):
            self._evict(next(iter(self._models)))
        model = self._load(name)
        self._models[name] = model
        return model

    def under_pressure(self) -> bool:
        free = free_memory_bytes(self.device) if self.min_free_bytes else None
        return free is not None and free < self.min_free_bytes

    def unload(self, name: Optional[str] = None) -> list[str]:
        names = [n for n in self._models if name is None or n == name]
        for n in names:
            self._evict(n)
        return names

    def _load(self, name: str) -> Any:
        if self._loader is not None:
            return self._loader(name)
        from engine.models.base import load_model
        model = load_model(name)
        return model.to(self.device) if self.device != "cpu" else model

    def _evict(self, name: str) -> None:
        self._models.pop(name, None)
        log.info("unloaded model %s from %s", name, self.device)
        import gc
        gc.collect()
        if self.device.startswith("cuda"):
            import torch
            torch.cuda.empty_cache()


def _die_with_parent() -> None:
    """Ask Linux to kill this worker if the daemon dies (even by SIGKILL), so no orphan renders on."""
    try:
        import ctypes
        import signal
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the closed pipe still ends the worker after its job
        pass


def worker_main(conn: Any, cancel_event: Any, device: str, render_path: str, output_dir: str,
                threads: int = 0, max_models: int = 2, min_free_bytes: int = 0,
                read_roots: Optional[tuple[str, ...]] = None) -> None:
    """Entry point of the spawned worker: serve pipe requests until "stop" or the pipe closes.

    With `read_roots` every audio file is opened through `engine.safe_io`: reads only inside
    those roots (and the preset folders), writes only inside `output_dir`, checked on the
    opened descriptors so a link swapped in after the job was accepted cannot lead outside."""
    _die_with_parent()
    if read_roots is not None:
        from engine import safe_io
        from engine.presets import preset_dirs
        safe_io.confine(tuple(read_roots) + tuple(str(d) for d in preset_dirs()), output_dir)
    import torch
    if threads > 0:
        torch.set_num_threads(threads)
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is not None:
        torch.cuda.set_device(dev)  # "cuda" alone means the current device; set_device needs an index
    render = resolve(render_path)
    cache = ModelCache(device, max_models=max_models, min_free_bytes=min_free_bytes)
    token = EventCancelToken(cancel_event)
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if isinstance(msg, wm.Stop):
            return
        if isinstance(msg, wm.Unload):
            names = cache.unload(msg.model)
            conn.send(wm.Unloaded(tuple(names), tuple(cache.loaded())))
        elif isinstance(msg, wm.RenderJob):
            _run(conn, msg.job_id, msg.request, render, cache, token, output_dir)


def _payload(result: Any) -> dict:
    """One render result as a JSON-safe dict (paths as strings)."""
    payload = dataclasses.asdict(result) if dataclasses.is_dataclass(result) else dict(result)
    return {k: (os.fspath(v) if isinstance(v, os.PathLike) else v) for k, v in payload.items()}


def _run(conn: Any, job_id: str, request: Any, render: Callable[..., Any], cache: ModelCache,
         token: CancelToken, output_dir: str) -> None:
    last = [0.0]

    def on_progress(ev: ProgressEvent) -> None:
        now = time.monotonic()
        # A stage (a long step outside the sampler) is rare and says what is happening: never dropped.
        if ev.step >= ev.total or ev.stage != "sampling" or now - last[0] >= PROGRESS_INTERVAL_S:
            last[0] = now
            conn.send(wm.Progress(job_id, ev.step, ev.total, ev.elapsed_s, ev.eta_s, ev.stage))

    try:
        model = cache.get(request.model)
        conn.send(wm.Started(job_id, time.time()))
        token.raise_if_cancelled()
        result = render(request, model=model, progress=on_progress, cancel=token, output_dir=output_dir)
        if isinstance(result, (list, tuple)):  # render_takes: the first take's fields, and every take
            takes = [_payload(r) for r in result]
            payload = dict(takes[0], takes=takes)
        else:
            payload = _payload(result)
        conn.send(wm.Done(job_id, payload, tuple(cache.loaded())))
    except SegueError as e:
        conn.send(wm.Failed(job_id, e.code, e.message, tuple(cache.loaded())))
    except Exception as e:  # the job fails, the worker lives on
        log.error("job %s failed:\n%s", job_id, traceback.format_exc())
        conn.send(wm.Failed(job_id, "internal", f"{type(e).__name__}: {e}", tuple(cache.loaded())))
    if cache.under_pressure():
        cache.unload()
