"""Fault injection for the daemon tests: the real `engine.render.render`, except for a few reserved seeds.

Loaded by the daemon's worker subprocess through `render_entry="support.bridge_renders:render"`,
so tests can make a job slow, make it ignore cancellation, or kill its worker
(as the kernel's OOM killer would), while every other job renders for real.
"""
from __future__ import annotations

import os
import signal
import time

from engine.render import render as real_render

SLOW_SEED = 1001    # sleeps STEP_DELAY_S per sampler step (cancellable between steps)
HANG_SEED = 1002    # never returns and never polls the cancel token
CRASH_SEED = 1003   # the worker process dies with SIGKILL mid-job
STEP_DELAY_S = float(os.environ.get("SEGUE_TEST_STEP_DELAY", "0.1"))


def render(request, *, progress=None, cancel=None, **kwargs):
    if request.seed == HANG_SEED:
        while True:
            time.sleep(1.0)
    if request.seed == CRASH_SEED:
        if progress is not None:
            from engine.progress import ProgressEvent
            progress(ProgressEvent(1, request.steps, 0.0, None))
        time.sleep(0.2)
        os.kill(os.getpid(), signal.SIGKILL)
    if request.seed == SLOW_SEED:
        inner = progress

        def progress(ev):  # noqa: F811 - the slowed-down callback
            time.sleep(STEP_DELAY_S)
            if inner is not None:
                inner(ev)
    return real_render(request, progress=progress, cancel=cancel, **kwargs)
