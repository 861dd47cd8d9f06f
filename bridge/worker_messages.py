"""What the daemon and its render worker say to each other over their pipe.

Dataclasses, not tuples read by index, so a message's fields have names on both sides
and a change to one is a change to its class. All are picklable (module-level).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional


# daemon -> worker

@dataclass(frozen=True)
class RenderJob:
    job_id: str
    request: Any                 # engine.request.RenderRequest


@dataclass(frozen=True)
class Unload:
    model: Optional[str]         # None: every loaded model


@dataclass(frozen=True)
class Stop:
    pass


# worker -> daemon

@dataclass(frozen=True)
class Started:
    job_id: str
    at: float                    # time.time() when the model was ready


@dataclass(frozen=True)
class Progress:
    job_id: str
    step: int
    total: int
    elapsed_s: float
    eta_s: Optional[float]
    stage: str = "sampling"     # or what a long step that is not a sampler step is doing


@dataclass(frozen=True)
class Done:
    job_id: str
    result: dict                 # the first take's fields, and `takes` for all of them
    loaded: tuple[str, ...]      # the models the worker holds afterwards


@dataclass(frozen=True)
class Failed:
    job_id: str
    code: str
    message: str
    loaded: tuple[str, ...]


@dataclass(frozen=True)
class Unloaded:
    names: tuple[str, ...]
    loaded: tuple[str, ...]
