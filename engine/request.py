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

TASKS = ("infill", "regenerate", "continue", "transition", "style")
SAMPLER_NAMES = ("ddim", "ddpm", "heun", "dpmpp_2m_sde", "pingpong")
STEP_MODES = ("fixed", "normalized", "posterior")
RECON_SPACES = ("latent", "audio")
RECON_LOSSES = ("l1", "l2", "mrstft")
EMBED_LOSSES = ("l2", "cosine")
SPANS = ("full", "region")
BIT_DEPTHS = (16, 24, 32)
PRIORS = ("similarity", "none")
REFINE_SPANS = ("seams", "gap")
MAX_SOURCES = 16
MAX_VARIATIONS = 16

MAX_DURATION_S = 600.0      # no single input or output may exceed ten minutes
MAX_STEPS = 1000


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


@dataclass(frozen=True)
class RenderRequest:
    """Everything needed to reproduce one render.

    Times are seconds on the timeline of `audio[0]` (for transitions, `start_s`
    is the join point in clip A and `b_start_s` the join point in clip B).
    """

    task: str
    audio: tuple[AudioRef, ...]
    start_s: Optional[float] = None
    end_s: Optional[float] = None
    # continuation
    duration_s: Optional[float] = None
    # transition
    b_start_s: float = 0.0
    crossfade_s: float = 2.5
    # style
    reference: Optional[AudioRef] = None
    reference_embedding: Optional[tuple[float, ...]] = None
    strength: float = 1.0
    # text conditioning (models that take it: Stable Audio)
    prompt: Optional[str] = None
    cfg_scale: float = 1.0
    native_inpaint: bool = False    # infill with a model's trained inpainting path instead of guidance
    # window and stitching
    context_s: float = 2.0
    seam_ms: float = 50.0
    # sampling
    model: str = "builtin"
    sampler: str = "ddim"
    steps: Optional[int] = None              # None -> the model's default
    seed: int = 0
    # guidance
    guidance_scale: Optional[float] = None   # xi; None -> the model's default (3e-2 latent, 3e-3 waveform)
    step_mode: Optional[str] = None          # None -> the model's default
    recon_loss: str = "l1"
    recon_weight: float = 1.0
    recon_space: str = "latent"
    style_loss: str = "l2"
    style_weight: float = 1.0
    recon_t_range: tuple[float, float] = (0.0, 1.0)   # diffusion times t at which each loss is active
    style_t_range: tuple[float, float] = (0.0, 1.0)
    data_consistency: bool = True
    mix_k: float = 0.85
    # retrieval prior (x_bar found in the user's audio): None -> the model's default
    prior: Optional[str] = None
    sources: tuple[str, ...] = ()            # extra files to search (the other clips of the DAW session)
    candidate: int = 0                       # rank of the prior's candidate (0 = best match)
    refine_strength: Optional[float] = None  # how far the model re-noises the prior (0 = the prior alone)
    refine_span: Optional[str] = None        # regenerate only around the seams, or the whole gap
    bpm: Optional[float] = None              # tempo hint from the DAW (the beat grid is still tracked)
    beat_offset_s: Optional[float] = None    # a beat's time on the first input's timeline, from the DAW
    variations: int = 1                      # takes rendered in one job (seed + i, candidate + i)
    overwrite: bool = False                  # replace an existing output file (and its Segue sidecar)
    # output
    output: Optional[str] = None
    span: str = "full"
    bit_depth: int = 24
    preset: Optional[str] = None

    def __post_init__(self) -> None:
        validate(self)

    def replace(self, **changes: Any) -> "RenderRequest":
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        """A JSON-safe description (in-memory PCM is summarised, not embedded)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            out[f.name] = _json_value(v)
        return out


def _json_value(v: Any) -> Any:
    if isinstance(v, PCMAudio):
        return {"pcm": True, "channels": int(v.samples.shape[0]), "samples": int(v.samples.shape[1]),
                "sample_rate": int(v.sample_rate)}
    if isinstance(v, tuple):
        return [_json_value(x) for x in v]
    return v


def _finite(name: str, v: Any, *, lo: float = -math.inf, hi: float = math.inf, allow_none: bool = False) -> None:
    if v is None:
        if allow_none:
            return
        raise InvalidRequest(f"{name} is required")
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise InvalidRequest(f"{name} must be a number, got {type(v).__name__}")
    if not math.isfinite(v):
        raise InvalidRequest(f"{name} must be finite, got {v}")
    if not lo <= v <= hi:
        raise InvalidRequest(f"{name} must be within [{lo}, {hi}], got {v}")


def _choice(name: str, v: Any, options: tuple) -> None:
    if v not in options:
        raise InvalidRequest(f"{name} must be one of {', '.join(map(str, options))}; got {v!r}")


def validate(r: RenderRequest) -> None:
    """Check every field, naming the field, the expectation and the actual value."""
    _choice("task", r.task, TASKS)
    if not isinstance(r.audio, tuple) or not all(isinstance(a, (str, PCMAudio)) for a in r.audio):
        raise InvalidRequest("audio must be a tuple of file paths or PCM buffers")
    need = 2 if r.task == "transition" else 1
    if len(r.audio) != need:
        raise InvalidRequest(f"task {r.task!r} takes {need} audio input(s), got {len(r.audio)}")
    for a in r.audio:
        if isinstance(a, str) and not a.strip():
            raise InvalidRequest("an audio path is empty")
    _choice("sampler", r.sampler, SAMPLER_NAMES)
    if r.step_mode is not None:
        _choice("step_mode", r.step_mode, STEP_MODES)
    _choice("recon_loss", r.recon_loss, RECON_LOSSES)
    _choice("recon_space", r.recon_space, RECON_SPACES)
    _choice("style_loss", r.style_loss, EMBED_LOSSES)
    _choice("span", r.span, SPANS)
    _choice("bit_depth", r.bit_depth, BIT_DEPTHS)
    if r.steps is not None and (isinstance(r.steps, bool) or not isinstance(r.steps, int)
                                or not 1 <= r.steps <= MAX_STEPS):
        raise InvalidRequest(f"steps must be an integer within [1, {MAX_STEPS}], got {r.steps!r}")
    if isinstance(r.seed, bool) or not isinstance(r.seed, int) or not 0 <= r.seed < 2 ** 63:
        raise InvalidRequest(f"seed must be a non-negative integer, got {r.seed!r}")
    if not isinstance(r.model, str) or not r.model:
        raise InvalidRequest("model must be a non-empty name")
    _finite("guidance_scale", r.guidance_scale, lo=0.0, hi=1e6, allow_none=True)
    _finite("recon_weight", r.recon_weight, lo=0.0, hi=1e6)
    _finite("style_weight", r.style_weight, lo=0.0, hi=1e6)
    _finite("mix_k", r.mix_k, lo=0.0, hi=1.0)
    for name in ("recon_t_range", "style_t_range"):
        rng = getattr(r, name)
        if not isinstance(rng, tuple) or len(rng) != 2:
            raise InvalidRequest(f"{name} must be a pair (t_min, t_max), got {rng!r}")
        _finite(f"{name}[0]", rng[0], lo=0.0, hi=1.0)
        _finite(f"{name}[1]", rng[1], lo=0.0, hi=1.0)
        if rng[0] > rng[1]:
            raise InvalidRequest(f"{name} must have t_min <= t_max, got {rng!r}")
    _finite("context_s", r.context_s, lo=0.0, hi=60.0)
    _finite("seam_ms", r.seam_ms, lo=0.0, hi=2000.0)
    _finite("crossfade_s", r.crossfade_s, lo=0.05, hi=60.0)
    _finite("b_start_s", r.b_start_s, lo=0.0, hi=MAX_DURATION_S)
    _finite("strength", r.strength, lo=0.0, hi=1.0)
    if r.strength == 0.0:
        raise InvalidRequest("strength must be above 0 (0 would return the input unchanged)")
    if r.prompt is not None and (not isinstance(r.prompt, str) or len(r.prompt) > 2000):
        raise InvalidRequest("prompt must be text of at most 2000 characters")
    _finite("cfg_scale", r.cfg_scale, lo=0.0, hi=100.0)
    if not isinstance(r.native_inpaint, bool):
        raise InvalidRequest("native_inpaint must be true or false")
    if r.native_inpaint and r.task != "infill":
        raise InvalidRequest("native_inpaint applies to the infill task only")
    if not isinstance(r.data_consistency, bool):
        raise InvalidRequest("data_consistency must be true or false")
    if r.prior is not None:
        _choice("prior", r.prior, PRIORS)
    if r.refine_span is not None:
        _choice("refine_span", r.refine_span, REFINE_SPANS)
    _finite("refine_strength", r.refine_strength, lo=0.0, hi=1.0, allow_none=True)
    if not isinstance(r.sources, tuple) or not all(isinstance(x, str) and x.strip() for x in r.sources):
        raise InvalidRequest("sources must be a list of audio file paths")
    if len(r.sources) > MAX_SOURCES:
        raise InvalidRequest(f"at most {MAX_SOURCES} sources can be searched, got {len(r.sources)}")
    for name, value, hi in (("candidate", r.candidate, 1000), ("variations", r.variations, MAX_VARIATIONS)):
        if isinstance(value, bool) or not isinstance(value, int) or not (0 if name == "candidate" else 1) <= value <= hi:
            raise InvalidRequest(f"{name} must be an integer within [{0 if name == 'candidate' else 1}, {hi}], "
                                 f"got {value!r}")
    _finite("bpm", r.bpm, lo=20.0, hi=400.0, allow_none=True)
    _finite("beat_offset_s", r.beat_offset_s, lo=0.0, hi=MAX_DURATION_S, allow_none=True)
    if not isinstance(r.overwrite, bool):
        raise InvalidRequest("overwrite must be true or false")

    if r.task in ("infill", "regenerate"):
        _finite("start_s", r.start_s, lo=0.0, hi=MAX_DURATION_S)
        _finite("end_s", r.end_s, lo=0.0, hi=MAX_DURATION_S)
        if r.end_s <= r.start_s:
            raise InvalidRequest(f"end_s ({r.end_s}) must be after start_s ({r.start_s})")
        if r.end_s - r.start_s > 120.0:
            raise InvalidRequest(f"the region is {r.end_s - r.start_s:.1f} s long; at most 120 s can be generated at once")
    elif r.task == "continue":
        _finite("start_s", r.start_s, lo=0.0, hi=MAX_DURATION_S, allow_none=True)
        _finite("duration_s", r.duration_s, lo=0.05, hi=MAX_DURATION_S)
    elif r.task == "transition":
        _finite("start_s", r.start_s, lo=0.0, hi=MAX_DURATION_S, allow_none=True)
    elif r.task == "style":
        if r.reference is None and r.reference_embedding is None:
            raise InvalidRequest("style needs a reference (audio) or a reference_embedding (from a preset)")
        if r.reference_embedding is not None:
            if not isinstance(r.reference_embedding, tuple) or not r.reference_embedding:
                raise InvalidRequest("reference_embedding must be a non-empty tuple of numbers")
            if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in r.reference_embedding):
                raise InvalidRequest("reference_embedding must hold finite numbers only")
        _finite("start_s", r.start_s, lo=0.0, hi=MAX_DURATION_S, allow_none=True)
        _finite("end_s", r.end_s, lo=0.0, hi=MAX_DURATION_S, allow_none=True)
        if r.start_s is not None and r.end_s is not None and r.end_s <= r.start_s:
            raise InvalidRequest(f"end_s ({r.end_s}) must be after start_s ({r.start_s})")
    if r.output is not None and (not isinstance(r.output, str) or not r.output.strip()):
        raise InvalidRequest("output must be a non-empty path")


def request_from_mapping(fields: Mapping[str, Any]) -> RenderRequest:
    """Build a request from decoded JSON / OSC / CLI values, rejecting unknown keys.

    A `preset` fills in the fields the caller left out (explicit values win).
    """
    known = {f.name for f in dataclasses.fields(RenderRequest)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise InvalidRequest(f"unknown request field(s): {', '.join(unknown)}")
    values = dict(fields)
    if values.get("preset"):
        from .presets import apply_preset  # presets are optional for a request; import on use
        values = apply_preset(values, values["preset"])
    if "task" not in values:
        raise InvalidRequest("task is required")
    audio = values.get("audio", ())
    if isinstance(audio, (str, PCMAudio)):
        audio = (audio,)
    if not isinstance(audio, (list, tuple)):
        raise InvalidRequest("audio must be a path or a list of paths")
    values["audio"] = tuple(audio)
    for name in ("reference_embedding", "recon_t_range", "style_t_range", "sources"):
        if isinstance(values.get(name), list):
            values[name] = tuple(values[name])
    for name in ("start_s", "end_s", "duration_s", "b_start_s", "crossfade_s", "strength", "context_s",
                 "seam_ms", "guidance_scale", "recon_weight", "style_weight", "mix_k", "refine_strength", "bpm",
                 "beat_offset_s"):
        if isinstance(values.get(name), int) and not isinstance(values.get(name), bool):
            values[name] = float(values[name])
    try:
        return RenderRequest(**values)
    except TypeError as e:  # a wrong-typed field that dataclasses itself rejects
        raise InvalidRequest(str(e)) from e
