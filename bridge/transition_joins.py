"""Where a transition's clip meets its two clips, as the engine chose it (read from the take's sidecar).

With the retrieval prior the engine may move the requested joins to beats nearby and time-stretch
clip B to A's tempo. A DAW script that trims A and B around the joins it asked for would then
place B out of step with the rendered clip. `segue-client --json` therefore carries, for every
transition take, the joins as rendered and the one number a script needs to place B: the second
of B's own file (unstretched time) that the clip's last sample has reached, so B played on from
there continues the clip's B material without a jump.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional


@dataclass(frozen=True)
class TransitionJoins:
    """The joins of one rendered transition, in seconds of the two input files."""

    join_a_s: float           # in A's file: the clip's timeline is A's up to here (its crossfade is centred on it)
    b_join_s: float           # in B's file (B's own time): the B sample that plays at join_a_s
    stretch_factor: float     # B plays this much faster in the clip (1.0: not stretched)
    b_at_clip_end_s: float    # in B's file (B's own time): where the clip's B material has got to at its end
    requested_join_a_s: Optional[float]
    requested_b_start_s: Optional[float]

    @property
    def moved(self) -> bool:
        """Whether the engine placed the joins elsewhere than asked (or stretched B)."""
        def off(x: Optional[float], y: float) -> bool:
            return x is not None and abs(x - y) > 1e-4
        return (off(self.requested_join_a_s, self.join_a_s) or off(self.requested_b_start_s, self.b_join_s)
                or abs(self.stretch_factor - 1.0) > 1e-6)

    def to_json(self) -> dict:
        return {**asdict(self), "moved": self.moved}


def _number(*values: object) -> Optional[float]:
    for v in values:
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            return float(v)
    return None


def transition_joins(sidecar: dict) -> Optional[TransitionJoins]:
    """The joins a transition sidecar records; None for another task or a sidecar that lacks them.

    The prior records its choices (`PriorInfo.to_json`): join_a_s, stretch_factor, and B's
    segment whose source_start_s is the join in B's own time. Without the prior the requested joins stand (start_s, b_start_s; factor 1). The
    clip spans [offset_s, offset_s + duration_s) of A's timeline; past join_a_s it plays B,
    stretched, so its end has reached b_join + (clip end - join_a) * factor of B's file.
    """
    request = sidecar.get("request") or {}
    if request.get("task") != "transition":
        return None
    prior = sidecar.get("prior") or {}
    offset, duration = _number(sidecar.get("offset_s")), _number(sidecar.get("duration_s"))
    if offset is None or duration is None:
        return None
    factor = _number(prior.get("stretch_factor"), 1.0)
    req_a, req_b = _number(request.get("start_s")), _number(request.get("b_start_s"))
    join_a = _number(prior.get("join_a_s"), req_a)
    if join_a is None:
        # A's end (no start_s): a region-span clip is the crossfade centred on the join
        xf = _number(request.get("crossfade_s"))
        if xf is None or request.get("span") != "region":
            return None
        join_a = offset + xf / 2
    segments = prior.get("segments") or []
    b_seg = segments[1] if len(segments) >= 2 and isinstance(segments[1], dict) else {}
    b_join = _number(b_seg.get("source_start_s"), req_b)
    if b_join is None:
        return None
    b_end = b_join + (offset + duration - join_a) * factor
    return TransitionJoins(join_a_s=round(join_a, 6), b_join_s=round(b_join, 6), stretch_factor=factor,
                           b_at_clip_end_s=round(b_end, 6), requested_join_a_s=req_a, requested_b_start_s=req_b)


def read_transition_joins(sidecar_path: str | Path) -> Optional[TransitionJoins]:
    """`transition_joins` of a sidecar file; None where it cannot be read (e.g. a daemon on another machine)."""
    try:
        sidecar = json.loads(Path(sidecar_path).read_text())
    except (OSError, ValueError):
        return None
    return transition_joins(sidecar) if isinstance(sidecar, dict) else None
