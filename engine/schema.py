"""The request schema: every `RenderRequest` field declared once.

Each `FieldSpec` gives a field's type, range or choices, default, help text,
command-line flag and OSC key. From this one list come the `RenderRequest`
dataclass and its per-field checks (engine/request.py), the options of `segue`
(engine/cli.py) and `segue-client` (bridge/client.py), the OSC `key=value`
parser (bridge/osc_server.py), the presets' setting checks (engine/presets.py)
and the field table of bridge/PROTOCOL.md (checked by tests/test_schema.py), so
a field cannot exist in one front end and be missing, or mean something else,
in another.

Nothing here imports the rest of the engine: every layer may import it.
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

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

MAX_DURATION_S = 3600.0     # the longest input Segue reads, and so the furthest any time field may point
MIN_REGION_S = 0.05         # the shortest region, continuation or crossfade
MAX_REGION_S = 120.0        # the longest region generated at once
MAX_STEPS = 1000
MAX_SOURCES = 16
MAX_VARIATIONS = 16
MAX_CANDIDATE = 1000
MAX_PROMPT_CHARS = 2000
MAX_NAME_CHARS = 255        # preset and model names (a file-name component)
MAX_PATH_CHARS = 4096

REGION_OUT_OF_RANGE = "region_out_of_range"   # the one code for a time outside the audio or the limits

REQUIRED = object()         # the default of a field every request must give


@dataclass(frozen=True)
class FieldSpec:
    """One request field: what it holds, its default, and how each front end spells it.

    `kind` is one of KINDS. `optional` fields accept None, meaning "the model's
    (or the task's) own choice". `cli` lists the flags of `segue` and
    `segue-client` (empty: not a command-line option); `osc` is the OSC
    `key=value` key (None: not an OSC option). `tasks` limits the `segue`
    subcommands offering the field (None: all), `required_for` the ones where
    the CLI requires it. `preset` says whether a preset's [settings] may set it.
    """

    name: str
    kind: str
    default: Any
    help: str
    lo: Optional[float] = None
    hi: Optional[float] = None
    choices: tuple = ()
    optional: bool = False
    cli: tuple[str, ...] = ()
    osc: Optional[str] = None
    tasks: Optional[tuple[str, ...]] = None
    required_for: tuple[str, ...] = ()
    preset: bool = False
    max_items: Optional[int] = None
    max_chars: Optional[int] = None
    allow_empty: bool = False
    metavar: Optional[str] = None
    flag_help: Optional[str] = None   # the CLI's own wording where the flag turns a default off

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def type_text(self) -> str:
        """The type and range as PROTOCOL.md's field table states them."""
        k = self.kind
        if k == "choice":
            text = " \\| ".join(f"`{c}`" for c in self.choices)
        elif k in ("float", "time", "int"):
            name = {"float": "number", "time": "seconds", "int": "integer"}[k]
            text = f"{name} {_num(self.lo)}..{_num(self.hi)}"
        elif k == "bool":
            text = "boolean"
        elif k == "pair":
            text = "[t_min, t_max] in 0..1 (OSC: `T_MIN,T_MAX`)"
        elif k == "vector":
            text = "list of numbers"
        elif k == "audios":
            text = "path or PCM, or a list (1 or 2)"
        elif k == "audio":
            text = "path or PCM"
        elif k == "paths":
            text = f"list of paths (at most {self.max_items})"
        elif k == "path":
            text = "path"
        else:
            text = f"text (at most {self.max_chars} chars)"
        return text + (" or null" if self.optional else "")

    def default_text(self) -> str:
        if self.required:
            return "required"
        if self.default is None:
            return "null"
        if isinstance(self.default, bool):
            return "true" if self.default else "false"
        if isinstance(self.default, tuple):
            return "[" + ", ".join(_num(v) for v in self.default) + "]"
        if isinstance(self.default, float):
            return _num(self.default)
        return str(self.default)


KINDS = ("float", "time", "int", "bool", "choice", "text", "path", "audio", "audios", "paths", "pair", "vector")


def _num(v: Optional[float]) -> str:
    if v is None:
        return "?"
    if isinstance(v, int):
        return str(v)
    if float(v).is_integer() and abs(v) < 1e15:
        return str(int(v))
    return f"{v:g}"


def _f(name: str, kind: str, default: Any, help: str, **kw: Any) -> FieldSpec:
    return FieldSpec(name, kind, default, help, **kw)


_T = ("infill", "regenerate")
FIELDS: tuple[FieldSpec, ...] = (
    # what to render
    _f("task", "choice", REQUIRED, "what to render (the `segue` subcommand, the OSC address)", choices=TASKS),
    _f("audio", "audios", REQUIRED, "the input clip (transition: clip A and clip B); positional on the CLI and in OSC"),
    _f("downmix", "bool", False, "fold inputs of more than two channels (5.1, ...) down to stereo instead of "
       "refusing them", cli=("--downmix",), osc="downmix"),
    _f("start_s", "time", None, "region start; continue: the cut point, transition: the join in A "
       "(default: the clip's end)", lo=0.0, hi=MAX_DURATION_S, optional=True, cli=("--start",), osc="start",
       required_for=_T),
    _f("end_s", "time", None, "region end", lo=0.0, hi=MAX_DURATION_S, optional=True, cli=("--end",), osc="end",
       tasks=(*_T, "style"), required_for=_T),
    _f("duration_s", "time", None, "seconds to generate past the cut (continue)", lo=MIN_REGION_S,
       hi=MAX_DURATION_S, optional=True, cli=("--duration",), osc="duration", tasks=("continue",),
       required_for=("continue",)),
    _f("b_start_s", "time", 0.0, "the join point in clip B (transition)", lo=0.0, hi=MAX_DURATION_S,
       cli=("--b-start",), osc="b_start", tasks=("transition",)),
    _f("crossfade_s", "float", 2.5, "length of the regenerated crossfade, seconds (transition)", lo=MIN_REGION_S,
       hi=60.0, cli=("--crossfade",), osc="crossfade", tasks=("transition",), preset=True),
    _f("join_search_s", "float", 4.0, "how far the similarity prior may move each join point, seconds, to "
       "join on matching beats (transition; 0 keeps the requested joins exactly)", lo=0.0, hi=16.0,
       cli=("--join-search",), osc="join_search", tasks=("transition",), preset=True),
    # style
    _f("reference", "audio", None, "reference audio to move toward (style; or a style preset)", optional=True,
       cli=("--reference",), osc="reference", tasks=("style",)),
    _f("reference_embedding", "vector", None, "a stored reference embedding (set by a style preset)",
       optional=True, max_items=65536),
    _f("strength", "float", 1.0, "1 regenerates from noise, lower keeps more of the input (style; above 0)",
       lo=0.0, hi=1.0, cli=("--strength",), osc="strength", tasks=("style",), preset=True),
    # text conditioning
    _f("prompt", "text", None, "text prompt, for models that take one (Stable Audio)", optional=True,
       max_chars=MAX_PROMPT_CHARS, allow_empty=True, cli=("--prompt",), osc="prompt"),
    _f("cfg_scale", "float", 1.0, "classifier-free guidance scale of the prompt", lo=0.0, hi=100.0,
       cli=("--cfg-scale",), osc="cfg_scale"),
    _f("native_inpaint", "bool", False, "infill with the model's trained inpainting path instead of guidance",
       cli=("--native-inpaint",), osc="native_inpaint", tasks=("infill",)),
    # window and stitching
    _f("context_s", "float", 2.0, "seconds of context the model sees each side", lo=0.0, hi=60.0,
       cli=("--context",), osc="context", preset=True),
    _f("seam_ms", "float", 50.0, "equal-power seam at each edge, milliseconds", lo=0.0, hi=2000.0,
       cli=("--seam-ms",), osc="seam_ms", preset=True),
    # sampling
    _f("model", "text", "builtin", "model name: builtin, analytic, stable-audio:DIR, ... (`segue models`)",
       max_chars=MAX_PATH_CHARS, cli=("--model",), osc="model"),
    _f("sampler", "choice", "ddim", "the sampler", choices=SAMPLER_NAMES, cli=("--sampler",), osc="sampler",
       preset=True),
    _f("steps", "int", None, "sampling steps (default: the model's own, see `segue models`)", lo=1, hi=MAX_STEPS,
       optional=True, cli=("--steps",), osc="steps", preset=True),
    _f("seed", "int", 0, "random seed; the same seed reproduces a render", lo=0, hi=2 ** 63 - 1,
       cli=("--seed",), osc="seed"),
    # guidance
    _f("guidance_scale", "float", None, "guidance step size xi (default: the model's)", lo=0.0, hi=1e6,
       optional=True, cli=("--guidance-scale",), osc="guidance_scale", preset=True),
    _f("step_mode", "choice", None, "how xi scales each step (default: the model's)", choices=STEP_MODES,
       optional=True, cli=("--step-mode",), osc="step_mode", preset=True),
    _f("recon_loss", "choice", "l1", "reconstruction loss on the context", choices=RECON_LOSSES,
       cli=("--recon-loss", "--loss"), osc="recon_loss", preset=True),
    _f("recon_weight", "float", 1.0, "weight of the reconstruction loss", lo=0.0, hi=1e6,
       cli=("--recon-weight",), osc="recon_weight", preset=True),
    _f("recon_space", "choice", "latent", "where the reconstruction loss is measured", choices=RECON_SPACES,
       cli=("--recon-space",), osc="recon_space", preset=True),
    _f("style_loss", "choice", "l2", "embedding loss toward the reference (style)", choices=EMBED_LOSSES,
       cli=("--style-loss",), osc="style_loss", tasks=("style",), preset=True),
    _f("style_weight", "float", 1.0, "weight of the style loss (style)", lo=0.0, hi=1e6,
       cli=("--style-weight",), osc="style_weight", tasks=("style",), preset=True),
    _f("texture_iterations", "int", None, "optimiser steps of the texture match: a bounded EQ curve and per-band "
       "dynamics after the chain, moved toward the reference embedding (style; 0 = off; default: 60 with a "
       "--reference clip and no preset, where it measurably helps, else 0; about 0.2 s per second of audio on "
       "2 quiet cores)", lo=0, hi=1000, optional=True,
       cli=("--texture-iterations",), osc="texture_iterations", tasks=("style",), preset=True),
    _f("recon_t_range", "pair", (0.0, 1.0), "diffusion times t at which the reconstruction loss acts",
       cli=("--recon-t-range",), osc="recon_t_range"),
    _f("style_t_range", "pair", (0.0, 1.0), "diffusion times t at which the style loss acts (style)",
       cli=("--style-t-range",), osc="style_t_range", tasks=("style",)),
    _f("data_consistency", "bool", True, "replace the known context at each step's noise level (off: guide by "
       "the gradient alone)", cli=("--no-data-consistency",), osc="data_consistency", preset=True,
       flag_help="guide by the gradient alone (no replacement of the known context)"),
    _f("mix_k", "float", 0.85, "noise share k of the start k z + (1 - k) x (regenerate, transition)", lo=0.0,
       hi=1.0, cli=("--mix",), osc="mix", tasks=("regenerate", "transition"), preset=True),
    # retrieval prior
    _f("prior", "choice", None, "start from a similar passage found in the audio (default: the model's)",
       choices=PRIORS, optional=True, cli=("--prior",), osc="prior", preset=True),
    _f("sources", "paths", (), "more audio files to search for the prior (the other clips of the session)",
       max_items=MAX_SOURCES, cli=("--source",), osc="source", metavar="PATH"),
    _f("candidate", "int", 0, "rank of the prior's candidate (0 = best match)", lo=0, hi=MAX_CANDIDATE,
       cli=("--candidate",), osc="candidate"),
    _f("refine_strength", "float", None, "how far the model re-noises the prior (0 = the prior alone; "
       "default: the model's)", lo=0.0, hi=1.0, optional=True, cli=("--refine-strength",), osc="refine_strength",
       preset=True),
    _f("refine_span", "choice", None, "regenerate around the seams only, or the whole gap (default: the model's)",
       choices=REFINE_SPANS, optional=True, cli=("--refine-span",), osc="refine_span", preset=True),
    _f("bpm", "float", None, "tempo hint from the DAW, beats per minute", lo=20.0, hi=400.0, optional=True,
       cli=("--bpm",), osc="bpm"),
    _f("b_bpm", "float", None, "clip B's tempo, beats per minute (transition; default: B's stronger pulse as "
       "tracked)", lo=20.0, hi=400.0, optional=True, cli=("--b-bpm",), osc="b_bpm", tasks=("transition",)),
    _f("beat_offset_s", "time", None, "a beat's time on the first input's timeline, from the DAW", lo=0.0,
       hi=MAX_DURATION_S, optional=True, cli=("--beat-offset",), osc="beat_offset"),
    _f("variations", "int", 1, "takes rendered in one job (take i uses seed + i and candidate + i)", lo=1,
       hi=MAX_VARIATIONS, cli=("--variations",), osc="variations"),
    _f("overwrite", "bool", False, "replace an existing output file and its Segue sidecar",
       cli=("--overwrite",), osc="overwrite"),
    # output
    _f("output", "path", None, "output .wav (default: a name made from the input and the request)",
       optional=True, max_chars=MAX_PATH_CHARS, cli=("-o", "--output"), osc="output"),
    _f("span", "choice", "full", "write the whole edited clip, or the rendered region only", choices=SPANS,
       cli=("--span",), osc="span"),
    _f("bit_depth", "choice", 32, "WAV sample format: 32 = float (never clips), 16/24 = integer (clips above "
       "0 dBFS, with a warning)", choices=BIT_DEPTHS, cli=("--bit-depth",), osc="bit_depth"),
    _f("preset", "text", None, "a preset name (`segue presets list`); the CLI also takes a .toml path. Explicit "
       "fields override it", optional=True, max_chars=MAX_PATH_CHARS, cli=("--preset",), osc="preset"),
)
FIELD_BY_NAME: dict[str, FieldSpec] = {s.name: s for s in FIELDS}
assert all(s.kind in KINDS for s in FIELDS)


# ---- checking one value ---------------------------------------------------------------------------

def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _fail(spec: FieldSpec, message: str, code: Optional[str] = None) -> InvalidRequest:
    """A refusal of `spec`'s value (the message names the field)."""
    return InvalidRequest(message, code=code)


def _check_number(spec: FieldSpec, v: Any, label: Optional[str] = None) -> float:
    name = label or spec.name
    if not _is_number(v):
        raise _fail(spec, f"{name} must be a number, got {_show(v)}")
    if not math.isfinite(v):
        raise _fail(spec, f"{name} must be finite, got {v}")
    lo = -math.inf if spec.lo is None else spec.lo
    hi = math.inf if spec.hi is None else spec.hi
    if spec.kind == "time":
        if v > hi:
            raise _fail(spec, f"{name} = {v:g} s lies beyond {hi:g} s, the longest audio Segue accepts "
                        f"({hi / 60:g} minutes); a longer file is refused as too long", REGION_OUT_OF_RANGE)
        if v < lo:
            raise _fail(spec, f"{name} must be within [{_num(lo)}, {_num(hi)}] s, got {v:g}", REGION_OUT_OF_RANGE)
    elif not lo <= v <= hi:
        raise _fail(spec, f"{name} must be within [{lo}, {hi}], got {v}")
    return float(v)


def _show(v: Any) -> str:
    text = repr(v)
    return f"{type(v).__name__} {text[:60]}{'...' if len(text) > 60 else ''}"


def check_value(spec: FieldSpec, v: Any, pcm_type: type) -> Any:
    """`v` as the field holds it (ints widened to floats, lists to tuples), or `InvalidRequest` naming the field.

    `pcm_type` is the in-memory audio type an audio field may hold (engine.request.PCMAudio).
    """
    name, k = spec.name, spec.kind
    if v is None:
        if spec.optional:
            return None
        raise _fail(spec, f"{name} is required" if spec.required else f"{name} may not be null")
    if k in ("float", "time"):
        return _check_number(spec, v)
    if k == "int":
        if isinstance(v, bool) or not isinstance(v, int):
            raise _fail(spec, f"{name} must be an integer, got {v!r:.60}")
        if not spec.lo <= v <= spec.hi:
            raise _fail(spec, f"{name} must be within [{_num(spec.lo)}, {_num(spec.hi)}], got {v}")
        return v
    if k == "bool":
        if not isinstance(v, bool):
            raise _fail(spec, f"{name} must be true or false, got {_show(v)}")
        return v
    if k == "choice":
        if isinstance(v, bool) or not isinstance(v, (str, int)) or v not in spec.choices:
            raise _fail(spec, f"{name} must be one of {', '.join(map(str, spec.choices))}; got {v!r:.80}")
        return v
    if k in ("text", "path"):
        if not isinstance(v, str):
            raise _fail(spec, f"{name} must be text, got {_show(v)}")
        if not spec.allow_empty and not v.strip():
            raise _fail(spec, f"{name} must not be empty")
        if spec.max_chars is not None and len(v) > spec.max_chars:
            raise _fail(spec, f"{name} must be at most {spec.max_chars} characters, got {len(v)}")
        return v
    if k == "audio":
        return _check_audio(name, v, pcm_type)
    if k in ("audios", "paths", "pair", "vector"):
        if not isinstance(v, (list, tuple)):
            raise _fail(spec, f"{name} must be a list, got {_show(v)}")
        v = tuple(v)
        if k == "audios":
            return tuple(_check_audio(f"{name}[{i}]", a, pcm_type) for i, a in enumerate(v))
        if k == "paths":
            if spec.max_items is not None and len(v) > spec.max_items:
                raise _fail(spec, f"at most {spec.max_items} {name} can be given, got {len(v)}")
            return tuple(_check_audio(f"{name}[{i}]", a, None) for i, a in enumerate(v))
        if k == "pair":
            if len(v) != 2:
                raise _fail(spec, f"{name} must be a pair (t_min, t_max), got {v!r:.80}")
            unit = FieldSpec(name, "float", 0.0, "", lo=0.0, hi=1.0)
            lo, hi = (_check_number(unit, x, f"{name}[{i}]") for i, x in enumerate(v))
            if lo > hi:
                raise _fail(spec, f"{name} must have t_min <= t_max, got {v!r}")
            return (lo, hi)
        if not v or (spec.max_items is not None and len(v) > spec.max_items):
            raise _fail(spec, f"{name} must be a non-empty list of at most {spec.max_items} numbers")
        if not all(_is_number(x) and math.isfinite(x) for x in v):
            raise _fail(spec, f"{name} must hold finite numbers only")
        return tuple(float(x) for x in v)
    raise AssertionError(f"unknown kind {k!r}")


def _check_audio(name: str, v: Any, pcm_type: Optional[type]) -> Any:
    if pcm_type is not None and isinstance(v, pcm_type):
        return v
    what = "an audio file path" + (" or PCM audio" if pcm_type is not None else "")
    if not isinstance(v, str):
        raise InvalidRequest(f"{name} must be {what}, got {_show(v)}")
    if not v.strip():
        raise InvalidRequest(f"{name}: an audio path is empty")
    if len(v) > MAX_PATH_CHARS:
        raise InvalidRequest(f"{name}: a path of {len(v)} characters is longer than {MAX_PATH_CHARS}")
    return v


def annotation(spec: FieldSpec) -> str:
    """The dataclass annotation (a string: annotations stay unevaluated)."""
    base = {"float": "float", "time": "float", "int": "int", "bool": "bool", "text": "str", "path": "str",
            "audio": "AudioRef", "audios": "tuple[AudioRef, ...]", "paths": "tuple[str, ...]",
            "pair": "tuple[float, float]", "vector": "tuple[float, ...]"}.get(spec.kind)
    if base is None:   # a choice
        base = type(spec.choices[0]).__name__
    return f"Optional[{base}]" if spec.optional else base


# ---- text values (OSC key=value options) ------------------------------------------------------------

TRUE_WORDS = ("true", "1", "yes", "on")
FALSE_WORDS = ("false", "0", "no", "off")


def from_text(spec: FieldSpec, text: str) -> Any:
    """Parse the text of an OSC `key=value` option into the field's type (ranges are checked later).

    Raises ValueError with a sentence on text that is not of the field's type.
    """
    k = spec.kind
    if k in ("float", "time"):
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"must be a number, got {text!r:.40}") from None
    if k == "int" or (k == "choice" and isinstance(spec.choices[0], int)):
        try:
            return int(text, 10)
        except ValueError:
            raise ValueError(f"must be an integer, got {text!r:.40}") from None
    if k == "bool":
        word = text.strip().lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
        raise ValueError(f"must be true or false, got {text!r:.40}")
    if k == "pair":
        parts = text.split(",")
        try:
            if len(parts) != 2:
                raise ValueError
            return [float(p) for p in parts]
        except ValueError:
            raise ValueError(f"must be two numbers T_MIN,T_MAX, got {text!r:.40}") from None
    if k == "vector":
        raise ValueError("cannot be given as text")
    return text


def osc_options() -> dict[str, FieldSpec]:
    """OSC key -> field, for every field that is an OSC option."""
    return {s.osc: s for s in FIELDS if s.osc is not None}


def repeatable(spec: FieldSpec) -> bool:
    """A list of paths: `--source A --source B` on the command line, `source=A source=B` in OSC."""
    return spec.kind == "paths"


# ---- command-line options --------------------------------------------------------------------------

def cli_help(spec: FieldSpec) -> str:
    text = spec.flag_help or spec.help
    if not spec.required and spec.default is not None and spec.kind not in ("bool", "paths"):
        text += f" (default {spec.default_text()})"
    return text.replace("%", "%%")


def add_cli_options(parser: argparse.ArgumentParser, *, task: Optional[str] = None,
                    group_titles: Optional[Callable[[FieldSpec], str]] = None) -> list[FieldSpec]:
    """Add the option of every field with a flag that applies to `task` (None: every field).

    Every option stores under the field's name and defaults to None, so an
    option left out leaves the field to the preset or the request default.
    Returns the fields added.
    """
    added = []
    groups: dict[str, Any] = {}
    for spec in FIELDS:
        if not spec.cli or (task is not None and spec.tasks is not None and task not in spec.tasks):
            continue
        title = group_titles(spec) if group_titles else None
        target = parser
        if title:
            if title not in groups:
                groups[title] = parser.add_argument_group(title)
            target = groups[title]
        kw: dict[str, Any] = {"dest": spec.name, "default": None, "help": cli_help(spec)}
        if spec.kind == "bool":
            kw.update(action="store_const", const=not spec.default)
        elif spec.kind == "paths":
            kw.update(action="append", metavar=spec.metavar)
        elif spec.kind == "pair":
            kw.update(type=float, nargs=2, metavar=("T_MIN", "T_MAX"))
        elif spec.kind == "choice":
            kw.update(choices=spec.choices, type=type(spec.choices[0]))
        elif spec.kind in ("float", "time"):
            kw.update(type=float)
        elif spec.kind == "int":
            kw.update(type=int)
        if spec.kind not in ("bool", "choice", "pair") and "metavar" not in kw:
            kw["metavar"] = spec.metavar or spec.cli[-1].lstrip("-").upper().replace("-", "_")
        if task is not None and task in spec.required_for:
            kw["required"] = True
        target.add_argument(*spec.cli, **kw)
        added.append(spec)
    return added


def fields_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The request fields set on a command line built by `add_cli_options` (unset ones left out)."""
    out: dict[str, Any] = {}
    for spec in FIELDS:
        if spec.cli:
            value = getattr(args, spec.name, None)
            if value is not None:
                out[spec.name] = tuple(value) if isinstance(value, list) else value
    return out


# ---- the documentation table -----------------------------------------------------------------------

TABLE_BEGIN = "<!-- fields: generated by `python -m engine.schema`; tests/test_schema.py checks it -->"
TABLE_END = "<!-- end of fields -->"


def markdown_table() -> str:
    """PROTOCOL.md's field table: one row per field, from this declaration."""
    rows = [TABLE_BEGIN, "", "| field | type | default | CLI | OSC | preset | meaning |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for s in FIELDS:
        cli = ", ".join(f"`{f}`" for f in s.cli) if s.cli else ("positional" if s.name == "audio" else
                                                                 "subcommand" if s.name == "task" else "")
        osc = f"`{s.osc}=`" if s.osc else ("positional" if s.name == "audio" else
                                            "address" if s.name == "task" else "")
        meaning = s.help.replace("|", "\\|")
        rows.append(f"| `{s.name}` | {s.type_text()} | {s.default_text()} | {cli} | {osc} | "
                    f"{'yes' if s.preset else ''} | {meaning} |")
    rows += ["", TABLE_END]
    return "\n".join(rows)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Print the field table, or with `--write FILE` replace the table in FILE (bridge/PROTOCOL.md)."""
    parser = argparse.ArgumentParser(prog="python -m engine.schema", description=main.__doc__)
    parser.add_argument("--write", metavar="FILE", help="replace the generated table in FILE")
    args = parser.parse_args(argv)
    table = markdown_table()
    if args.write is None:
        print(table)
        return 0
    with open(args.write, encoding="utf-8") as f:
        text = f.read()
    if TABLE_BEGIN not in text or TABLE_END not in text:
        raise SystemExit(f"{args.write} has no generated field table to replace")
    head, rest = text.split(TABLE_BEGIN, 1)
    with open(args.write, "w", encoding="utf-8") as f:
        f.write(head + table + rest.split(TABLE_END, 1)[1])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
