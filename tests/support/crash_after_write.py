"""Fault injection: the daemon dies (SIGKILL) right after a take's WAV and sidecar are on disk,
before the job can be marked done: the crash a re-run must not turn into `output_exists`.

Loaded by the daemon's worker as its render entry (`support.crash_after_write:render`): the real
`engine.render.render_takes`, except that the first take this marker allows (`$SEGUE_TEST_CRASH_MARKER`
does not exist yet) kills the daemon once it is written. The worker dies with the daemon
(PR_SET_PDEATHSIG), so nothing after that take is rendered; a restarted daemon renders for real.
"""
from __future__ import annotations

import os
import signal
import time

import engine.render as engine_render

_real_render = engine_render.render


def _render_then_crash(request, **kwargs):
    result = _real_render(request, **kwargs)
    marker = os.environ["SEGUE_TEST_CRASH_MARKER"]
    if not os.path.exists(marker):
        with open(marker, "w") as f:
            f.write(result.path)
        os.kill(os.getppid(), signal.SIGKILL)   # the daemon, which spawned this worker
        time.sleep(60)                          # ended by the parent-death signal long before this
    return result


def render(request, **kwargs):
    engine_render.render = _render_then_crash   # render_takes looks `render` up per take
    try:
        return engine_render.render_takes(request, **kwargs)
    finally:
        engine_render.render = _real_render
