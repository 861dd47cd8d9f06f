"""Progress reporting and cooperative cancellation for long renders."""
from __future__ import annotations

import signal
import threading
import time
from dataclasses import dataclass
from typing import Callable, Optional

from .errors import Cancelled


@dataclass(frozen=True)
class ProgressEvent:
    """One step of a render: `step` of `total` done, with an estimate of the time left."""

    step: int
    total: int
    elapsed_s: float
    eta_s: Optional[float]
    stage: str = "sampling"

    @property
    def fraction(self) -> float:
        return self.step / self.total if self.total else 1.0


ProgressCallback = Callable[[ProgressEvent], None]


class CancelToken:
    """A flag a front end sets and the sampler polls between steps (thread-safe)."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise Cancelled("the job was cancelled")


class ProgressTracker:
    """Turns (step, total) counts from samplers into `ProgressEvent`s with an ETA.

    A render may run several sampler passes (chunked continuation); the tracker
    counts steps over all of them so the fraction never goes backwards.
    """

    def __init__(self, total: int, callback: Optional[ProgressCallback] = None,
                 cancel: Optional[CancelToken] = None, stage: str = "sampling") -> None:
        self.total = max(int(total), 1)
        self.callback = callback
        self.cancel = cancel
        self.stage = stage
        self.done = 0
        self._t0 = time.monotonic()

    def advance(self, n: int = 1) -> None:
        self.check()
        self.done = min(self.done + n, self.total)
        self._emit(self.stage)

    def note(self, stage: str) -> None:
        """Say what a long step that is not a sampler step is about to do (no step counted).

        A cancel stops the render there, before the step; one the callback itself asks for too.
        """
        self._emit(stage)
        self.check()

    def _emit(self, stage: str) -> None:
        if self.callback is not None:
            elapsed = time.monotonic() - self._t0
            eta = elapsed / self.done * (self.total - self.done) if self.done else None
            self.callback(ProgressEvent(self.done, self.total, elapsed, eta, stage))

    def check(self) -> None:
        """Raise `Cancelled` if the job was cancelled (for long steps that poll between their own chunks)."""
        if self.cancel is not None:
            self.cancel.raise_if_cancelled()

    def step_callback(self) -> Callable[[int, int], None]:
        """A `(step, total)` callback for one sampler pass that feeds this tracker."""
        def on_step(step: int, total: int) -> None:
            self.advance(1)
        return on_step


def interrupt_cancels() -> None:
    """Make Ctrl-C (SIGINT) raise KeyboardInterrupt, even where the launcher ignored SIGINT.

    SIGINT is how a terminal, and every DAW script, cancels a render. A process started
    with SIGINT ignored (nohup, a shell's background job, a host that spawns its tools
    that way) inherits the ignore, and Python then installs no handler: the cancel would
    be lost and the render run to the end. Main thread only (where handlers live).
    """
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
