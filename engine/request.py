"""The one request type every front end (CLI, ZeroMQ, OSC, DAW scripts) validates into.

A `RenderRequest` is frozen and request-scoped: it carries the task, the audio
(file paths, or in-memory PCM from the ZeroMQ bridge), the region, sampling
and guidance settings, and the seed. Nothing about a render lives on shared
model objects, so concurrent requests cannot leak settings into each other.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Union

import numpy as np

from .errors import InvalidRequest
from .schema import (BIT_DEPTHS, EMBED_LOSSES, FIELD_BY_NAME, FIELDS, MAX_DURATION_S, MAX_NAME_CHARS,  # noqa: F401
                     MAX_REGION_S, MAX_SOURCES, MAX_STEPS, MAX_VARIATIONS, MIN_REGION_S, PRIORS, RECON_LOSSES,
                     RECON_SPACES, REFINE_SPANS, REGION_OUT_OF_RANGE, REQUIRED, SAMPLER_NAMES, SPANS, STEP_MODES,
                     TASKS, annotation, check_value)


@dataclass(frozen=True)
class PCMAudio:
    """Audio carried in memory: float32 (channels, samples) at `sample_rate`."""

    samples: np.ndarray
    sample_rate: int

    def __post_init__(self) -> None:
        a = self.samples
        if not isinstance(a, np.ndarray) or a.ndim != 2:
            raise InvalidRequest(f"PCM audio must be a 2-D array (channels, samples), got {getattr(a, 'shape', type(a))}")
        if a.shape[0] not in (1, 2):
            raise InvalidRequest(f"PCM audio must have 1 or 2 channels, got {a.shape[0]}")
        if a.shape[1] == 0:
            raise InvalidRequest("PCM audio is empty (0 samples)")
        if not 8000 <= int(self.sample_rate) <= 192000:
            raise InvalidRequest(f"PCM sample rate must be within 8000..192000 Hz, got {self.sample_rate}")
        if not np.all(np.isfinite(a)):
            raise InvalidRequest("PCM audio contains NaN or infinite samples")

    @property
    def duration_s(self) -> float:
        return self.samples.shape[1] / self.sample_rate


AudioRef = Union[str, PCMAudio]


class _RequestMethods:
    """Methods of `RenderRequest` (its fields come from engine/schema.py's FIELDS)."""

    def __post_init__(self) -> None:
        validate(self)

    def replace(self, **changes: Any) -> "RenderRequest":
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        """A JSON-safe description (in-memory PCM is summarised, not embedded)."""
        return {f.name: _json_value(getattr(self, f.name)) for f in dataclasses.fields(self)}


def _dataclass_field(spec: Any) -> tuple:
    if spec.required:
        return (spec.name, annotation(spec))
    return (spec.name, annotation(spec), dataclasses.field(default=spec.default))


RenderRequest = dataclasses.make_dataclass(
    "RenderRequest", [_dataclass_field(s) for s in FIELDS], bases=(_RequestMethods,), frozen=True,
    namespace={"__module__": __name__, "__qualname__": "RenderRequest", "__doc__": """Everything needed to reproduce one render; its fields are declared in engine/schema.py.

    Times are seconds on the timeline of `audio[0]` (for transitions, `start_s`
    is the join point in clip A and `b_start_s` the join point in clip B).
    """})


def _json_value(v: Any) -> Any:
    if isinstance(v, PCMAudio):
        return {"pcm": True, "channels": int(v.samples.shape[0]), "samples": int(v.samples.shape[1]),
                "sample_rate": int(v.sample_rate)}
    if isinstance(v, tuple):
        return [_json_value(x) for x in v]
    return v


def validate(r: "RenderRequest") -> None:
    """Check every field against its declaration, then the rules between fields.

    Values are normalised in place (ints widened to floats, lists to tuples), so a
    request built from JSON equals one built in Python. Every error names the
    field, the expectation and the actual value.
    """
    for spec in FIELDS:
        value = check_value(spec, getattr(r, spec.name), PCMAudio)
        if value is not getattr(r, spec.name):
            object.__setattr__(r, spec.name, value)
    need = 2 if r.task == "transition" else 1
    if len(r.audio) != need:
        raise InvalidRequest(f"task {r.task!r} takes {need} audio input(s), got {len(r.audio)}")
    if r.strength == 0.0:
        raise InvalidRequest("strength must be above 0 (0 would return the input unchanged)")
    if r.native_inpaint and r.task != "infill":
        raise InvalidRequest("native_inpaint applies to the infill task only")
    if r.preset is not None:
        check_preset_name(r.preset)

    if r.task in ("infill", "regenerate"):
        for name in ("start_s", "end_s"):
            if getattr(r, name) is None:
                raise InvalidRequest(f"{name} is required for {r.task}")
        check_region(r.start_s, r.end_s)
    elif r.task == "continue":
        if r.duration_s is None:
            raise InvalidRequest("duration_s is required for continue")
    elif r.task == "style":
        if r.reference is None and r.reference_embedding is None:
            raise InvalidRequest("style needs a reference (audio) or a reference_embedding (from a preset)")
        if r.start_s is not None and r.end_s is not None:
            check_region(r.start_s, r.end_s)


def check_region(start_s: float, end_s: float) -> None:
    """A region's order and length (its place inside the audio is checked once the audio is read)."""
    if end_s <= start_s:
        raise InvalidRequest(f"end_s ({end_s}) must be after start_s ({start_s})")
    if end_s - start_s > MAX_REGION_S:
        raise InvalidRequest(f"the region is {end_s - start_s:.1f} s long; at most {MAX_REGION_S:g} s can be "
                             "generated at once", code=REGION_OUT_OF_RANGE)
    if end_s - start_s < MIN_REGION_S:
        raise InvalidRequest(f"the region is {(end_s - start_s) * 1000:.0f} ms long; it must be at least "
                             f"{MIN_REGION_S * 1000:.0f} ms long", code=REGION_OUT_OF_RANGE)


def request_from_mapping(fields: Mapping[str, Any]) -> "RenderRequest":
    """Build a request from decoded JSON / OSC / CLI values, rejecting unknown keys.

    A `preset` fills in the fields the caller left out (explicit values win).
    """
    unknown = sorted(set(fields) - set(FIELD_BY_NAME))
    if unknown:
        raise InvalidRequest(f"unknown request field(s): {', '.join(map(str, unknown))[:500]}")
    values = dict(fields)
    if values.get("preset") is not None:
        preset = check_preset_name(values["preset"])
        from .presets import apply_preset  # presets are optional for a request; import on use
        values = apply_preset(values, preset)
    missing = [s.name for s in FIELDS if s.required and s.name not in values]
    if missing:
        raise InvalidRequest(f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} required")
    if isinstance(values["audio"], (str, PCMAudio)):
        values["audio"] = (values["audio"],)
    return RenderRequest(**values)


def check_preset_name(value: Any) -> str:
    """A preset is named by text of at most MAX_NAME_CHARS (a longer text must be a .toml path)."""
    value = check_value(FIELD_BY_NAME["preset"], value, PCMAudio)
    is_path = value.endswith(".toml") or "/" in value
    if not is_path and len(value) > MAX_NAME_CHARS:
        raise InvalidRequest(f"preset must be a name of at most {MAX_NAME_CHARS} characters, got {len(value)}",
                             code="bad_preset")
    return value
