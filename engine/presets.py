"""Task and style presets: named, validated bundles of request settings (`presets/*.toml`).

A preset lets a producer pick "infill, quality" or "lofi-warm" from a DAW menu
instead of tuning guidance weights. Every front end (CLI, bridge, DAW scripts)
turns a preset into `RenderRequest` fields through `preset_to_request_fields`,
so a preset means the same thing everywhere.

Task presets name a task and its sampling/guidance settings. Style presets
also carry a reference: either an audio file, or a stored embedding (JSON next
to the TOML) together with the embedder that made it and that embedder's
output on a fixed probe signal, so a reference built with another embedder (or
an older version of it) is a clear error instead of silently wrong guidance.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from . import schema
from .effects import StyleChain, parse_style_tables
from .errors import InvalidRequest, PresetError

PRESET_KINDS = ("task", "style")
ENV_PRESET_PATH = "SEGUE_PRESETS"


def _builtin_dir() -> Path:
    """The shipped presets: `engine/builtin_presets` in an installed wheel, `presets/` in a source checkout."""
    here = Path(__file__).resolve().parent
    installed = here / "builtin_presets"
    return installed if installed.is_dir() else here.parent / "presets"


BUILTIN_DIR = _builtin_dir()
PROBE_SECONDS = 1.0
PROBE_TOLERANCE = 1e-3

# The request fields a preset's [settings] may set, with their checks: from the one schema.
_SETTINGS: dict[str, schema.FieldSpec] = {s.name: s for s in schema.FIELDS if s.preset}
_TOP_KEYS = {"name", "kind", "task", "description", "settings", "reference", "chain", "style"}
_REFERENCE_KEYS = {"audio", "embedding", "source"}
_EMBEDDING_KEYS = {"embedder", "dim", "vector", "probe", "source", "audio_seconds"}


@dataclass(frozen=True)
class StyleReference:
    """Where a style preset's target comes from: an audio file or a stored embedding."""

    source: str
    audio: Optional[str] = None
    embedding_file: Optional[str] = None
    embedder: Optional[str] = None
    vector: Optional[tuple[float, ...]] = None
    probe: Optional[tuple[float, ...]] = None


@dataclass(frozen=True)
class Preset:
    """A validated preset. `settings` holds only keys of `RenderRequest` (checked on load)."""

    name: str
    kind: str
    task: str
    description: str
    settings: dict[str, Any] = field(default_factory=dict)
    reference: Optional[StyleReference] = None
    path: Optional[str] = None
    style: Optional[StyleChain] = None   # style presets: effect chain, tone, guidance weights


def preset_dirs() -> list[Path]:
    """Search order: `$SEGUE_PRESETS` (os.pathsep-separated), the user's folder, the built-in folder."""
    dirs = [Path(p) for p in os.environ.get(ENV_PRESET_PATH, "").split(os.pathsep) if p]
    dirs.append(Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config")) / "segue" / "presets")
    dirs.append(BUILTIN_DIR)
    return dirs


def list_presets() -> list[str]:
    """Names of every preset found, first folder wins on a clash, sorted."""
    names: set[str] = set()
    for d in preset_dirs():
        if d.is_dir():
            names.update(p.stem for p in d.glob("*.toml"))
    return sorted(names)


def find_preset(name: str) -> Path:
    for d in preset_dirs():
        p = d / f"{name}.toml"
        if p.is_file():
            return p
    raise PresetError(f"unknown preset {name!r}; available: {', '.join(list_presets()) or 'none'}")


def load_preset(name_or_path: str | os.PathLike) -> Preset:
    """Load and validate a preset by name (searched in `preset_dirs()`) or by path to a .toml file."""
    text = str(name_or_path)
    if not text.strip():
        raise PresetError("a preset name is empty")
    if text.endswith(".toml") or os.sep in text or "/" in text:
        path = Path(text)
        if not path.is_file():
            raise PresetError(f"preset file {text} does not exist")
    else:
        path = find_preset(text)
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise PresetError(f"{path}: not valid TOML ({e})") from e
    return parse_preset(data, path=path)


def parse_preset(data: dict[str, Any], *, path: Optional[Path] = None) -> Preset:
    """Validate a decoded TOML table; every error names the file and the key."""
    where = str(path) if path is not None else "<preset>"

    def fail(msg: str) -> PresetError:
        return PresetError(f"{where}: {msg}")

    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise fail(f"unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(_TOP_KEYS))}")
    name = data.get("name", path.stem if path is not None else None)
    if not isinstance(name, str) or not name:
        raise fail("name must be a non-empty string")
    if path is not None and name != path.stem:
        raise fail(f"name {name!r} must match the file name {path.stem!r}")
    kind = data.get("kind")
    if kind not in PRESET_KINDS:
        raise fail(f"kind must be one of {', '.join(PRESET_KINDS)}, got {kind!r}")
    task = data.get("task")
    if task not in schema.TASKS:
        raise fail(f"task must be one of {', '.join(schema.TASKS)}, got {task!r}")
    if kind == "style" and task != "style":
        raise fail(f"a style preset must have task = \"style\", got {task!r}")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise fail("description must be a string")
    settings_in = data.get("settings", {})
    if not isinstance(settings_in, dict):
        raise fail("[settings] must be a table")
    settings = {k: _check_setting(k, v, fail) for k, v in settings_in.items()}

    reference = None
    if kind == "style":
        if "reference" not in data:
            raise fail("a style preset needs a [reference] table with `audio` or `embedding`")
        reference = _parse_reference(data["reference"], path, fail)
    elif "reference" in data:
        raise fail("only style presets take a [reference]")
    style = parse_style_tables(data, where, kind)
    return Preset(name=name, kind=kind, task=task, description=description, settings=settings,
                  reference=reference, path=str(path) if path is not None else None, style=style)


def _check_setting(key: str, value: Any, fail) -> Any:
    """One [settings] value, checked by the request field's own declaration."""
    spec = _SETTINGS.get(key)
    if spec is None:
        raise fail(f"unknown setting {key!r}; allowed: {', '.join(sorted(_SETTINGS))}")
    if value is None:   # TOML has no null, but a decoded mapping might
        raise fail(f"{key} must have a value")
    try:
        value = schema.check_value(spec, value, type(None))
    except InvalidRequest as e:
        raise fail(e.message) from None
    if key == "strength" and value == 0.0:
        raise fail("strength must be above 0 (0 would return the input unchanged)")
    return value


def _parse_reference(ref: Any, path: Optional[Path], fail) -> StyleReference:
    if not isinstance(ref, dict):
        raise fail("[reference] must be a table")
    unknown = sorted(set(ref) - _REFERENCE_KEYS)
    if unknown:
        raise fail(f"unknown [reference] key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(_REFERENCE_KEYS))}")
    source = ref.get("source")
    if not isinstance(source, str) or not source.strip():
        raise fail("[reference] needs `source`: where the reference audio comes from and its licence")
    if ("audio" in ref) == ("embedding" in ref):
        raise fail("[reference] needs exactly one of `audio` (a file) or `embedding` (a .json file)")
    base = path.parent if path is not None else Path.cwd()
    if "audio" in ref:
        audio = _resolve(ref["audio"], base, "audio", fail)
        return StyleReference(source=source, audio=str(audio))
    emb_path = _resolve(ref["embedding"], base, "embedding", fail)
    try:
        emb = json.loads(emb_path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise fail(f"reference embedding {emb_path} cannot be read ({e})") from e
    if not isinstance(emb, dict):
        raise fail(f"reference embedding {emb_path} must be a JSON object")
    unknown = sorted(set(emb) - _EMBEDDING_KEYS)
    if unknown:
        raise fail(f"reference embedding {emb_path} has unknown key(s) {', '.join(unknown)}")
    embedder = emb.get("embedder")
    if not isinstance(embedder, str) or not embedder:
        raise fail(f"reference embedding {emb_path} must name its `embedder`")
    vector = _vector(emb.get("vector"), "vector", emb_path, fail)
    probe = _vector(emb.get("probe"), "probe", emb_path, fail)
    dim = emb.get("dim")
    if dim != len(vector) or dim != len(probe):
        raise fail(f"reference embedding {emb_path}: dim {dim!r} does not match vector ({len(vector)}) "
                   f"and probe ({len(probe)}) lengths")
    return StyleReference(source=source, embedding_file=str(emb_path), embedder=embedder, vector=vector, probe=probe)


def _resolve(value: Any, base: Path, key: str, fail) -> Path:
    if not isinstance(value, str) or not value:
        raise fail(f"[reference] {key} must be a file path")
    p = Path(value).expanduser()
    p = p if p.is_absolute() else base / p
    if not p.is_file():
        raise fail(f"missing reference {key} file {p}")
    return p


def _vector(value: Any, key: str, where: Path, fail) -> tuple[float, ...]:
    if not isinstance(value, list) or not value:
        raise fail(f"reference embedding {where}: {key} must be a non-empty list of numbers")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value):
        raise fail(f"reference embedding {where}: {key} must hold finite numbers only")
    return tuple(float(v) for v in value)


# --- reference embeddings ----------------------------------------------------------------

def probe_signal(sample_rate: int = 44100) -> np.ndarray:
    """A fixed stereo test signal (2, N): tones, a sweep and seeded noise, to fingerprint an embedder."""
    n = int(sample_rate * PROBE_SECONDS)
    t = np.arange(n) / sample_rate
    rng = np.random.default_rng(12345)
    tones = sum(np.sin(2 * np.pi * f * t) / k for k, f in enumerate((110.0, 440.0, 1760.0, 5000.0), 1))
    sweep = np.sin(2 * np.pi * (100.0 * t + 4000.0 * t ** 2))
    left = 0.2 * tones + 0.2 * sweep + 0.05 * rng.standard_normal(n)
    right = 0.2 * tones - 0.1 * sweep + 0.05 * rng.standard_normal(n)
    return np.stack([left, right]).astype(np.float32)


def embed(embedder: Any, audio: np.ndarray) -> np.ndarray:
    """One (2, N) float32 clip -> (dim,) float64 embedding, without gradients."""
    import torch

    with torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))[None]
        return embedder(x)[0].detach().double().numpy()


def check_reference(preset: Preset, embedder: Any = None) -> None:
    """Raise `PresetError` unless the stored embedding was made by the embedder we run now.

    Compares the embedder's output on `probe_signal()` with the probe stored at
    build time: any change to the embedder (another model, new constants) shows.
    """
    ref = preset.reference
    if ref is None or ref.vector is None:
        return
    if embedder is None:
        from .embedders import load_embedder

        embedder = load_embedder(ref.embedder)
    dim = int(getattr(embedder, "dim", -1))
    fix = "rebuild it with `python presets/build_references.py`"
    if dim != len(ref.vector):
        raise PresetError(f"preset {preset.name!r}: reference embedding has {len(ref.vector)} values but "
                          f"embedder {ref.embedder!r} gives {dim}; {fix}")
    now = embed(embedder, probe_signal(int(embedder.sample_rate)))
    stored = np.asarray(ref.probe)
    err = float(np.max(np.abs(now - stored)) / (np.max(np.abs(stored)) + 1e-12))
    if err > PROBE_TOLERANCE:
        raise PresetError(f"preset {preset.name!r}: reference embedding was built with another version of "
                          f"embedder {ref.embedder!r} (probe differs by {err:.2e}); {fix}")


def preset_to_request_fields(preset: Preset) -> dict[str, Any]:
    """The `RenderRequest` fields this preset sets (including `preset` and, for style, the reference)."""
    out: dict[str, Any] = dict(preset.settings)
    out["preset"] = preset.name
    ref = preset.reference
    if ref is not None:
        if ref.vector is not None:
            out["reference_embedding"] = tuple(ref.vector)
        elif ref.audio is not None:
            out["reference"] = ref.audio
    return out


def apply_preset(fields: dict[str, Any], name_or_path: str) -> dict[str, Any]:
    """Request fields with a preset's values filled in; values the caller set explicitly win.

    The preset's task must match the request's task, so "transition-smooth" can
    not silently change an infill.
    """
    preset = load_preset(name_or_path)
    task = fields.get("task")
    if task is not None and task != preset.task:
        raise PresetError(f"preset {preset.name!r} is for task {preset.task!r}, not {task!r}")
    merged = preset_to_request_fields(preset)
    merged.update({k: v for k, v in fields.items() if v is not None})
    merged.setdefault("task", preset.task)
    return merged


# --- CLI: `segue presets list|show NAME` ---------------------------------------------------

def describe(preset: Preset) -> dict[str, Any]:
    """A JSON-safe summary (the embedding is summarised, not printed)."""
    out: dict[str, Any] = {"name": preset.name, "kind": preset.kind, "task": preset.task,
                           "description": preset.description, "path": preset.path,
                           "settings": dict(preset.settings)}
    ref = preset.reference
    if ref is not None:
        out["reference"] = {"source": ref.source, "audio": ref.audio, "embedding_file": ref.embedding_file,
                            "embedder": ref.embedder, "dim": len(ref.vector) if ref.vector else None}
    if preset.style is not None:
        out["style"] = preset.style.describe()
    return out


def _cmd_list(args: argparse.Namespace) -> int:
    rows = []
    for name in list_presets():
        try:
            p = load_preset(name)
            rows.append({"name": name, "kind": p.kind, "task": p.task, "description": p.description})
        except PresetError as e:
            rows.append({"name": name, "error": e.message})
    if args.json:
        args.out.write(json.dumps(rows, indent=2) + "\n")
    else:
        for r in rows:
            detail = f"INVALID: {r['error']}" if "error" in r else f"{r['kind']:<5} {r['task']:<10} {r['description']}"
            args.out.write(f"{r['name']:<22} {detail}\n")
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    preset = load_preset(args.name)
    args.out.write(json.dumps(describe(preset), indent=2) + "\n")
    return 0


def add_presets_cli(subparsers: Any) -> argparse.ArgumentParser:
    """Add `presets list` and `presets show NAME`; each sets `func(args) -> exit code`."""
    import sys

    p = subparsers.add_parser("presets", help="list and show task/style presets")
    sub = p.add_subparsers(dest="presets_command", required=True)
    pl = sub.add_parser("list", help="list every preset found")
    pl.add_argument("--json", action="store_true", help="print JSON")
    pl.set_defaults(func=_cmd_list, out=sys.stdout)
    ps = sub.add_parser("show", help="show one preset's settings and reference")
    ps.add_argument("name", help="preset name or path to a .toml file")
    ps.set_defaults(func=_cmd_show, out=sys.stdout)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """`python -m engine.presets list|show NAME` until the `segue` CLI wires `presets`."""
    import sys

    parser = argparse.ArgumentParser(prog="segue")
    add_presets_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["presets", *(sys.argv[1:] if argv is None else argv)])
    try:
        return args.func(args)
    except PresetError as e:
        sys.stderr.write(f"error [{e.code}]: {e.message}\n")
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
