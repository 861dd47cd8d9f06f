"""What `segue models` shows: each model's kind, where its weights are (or would be), size, availability.

Describing a model never loads it, so the listing is instant and works where a
backend's optional dependencies are missing (it says which).
"""
from __future__ import annotations

import importlib.util
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

from .base import available_models


@dataclass(frozen=True)
class ModelEntry:
    """One row of `segue models`."""

    name: str
    kind: str
    where: str
    size_bytes: Optional[int]
    available: bool
    note: str = ""
    default_steps: Optional[int] = None   # what `--steps` defaults to (None: set when the model loads)

    def to_json(self) -> dict:
        return asdict(self)


def _folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def describe(name: str) -> ModelEntry:
    """The entry for a registry name (`builtin`), a kind with its folder (`stable-audio:/x`) or a kind alone."""
    kind, sep, folder = name.partition(":")
    if name == "builtin":
        from .builtin import DEFAULT_STEPS, WEIGHTS_DIR, WEIGHTS_NAME

        weights = WEIGHTS_DIR / f"{WEIGHTS_NAME}.safetensors"
        ok = weights.is_file()
        return ModelEntry(name, "built-in spectral diffusion net (CPU)", str(weights),
                          weights.stat().st_size if ok else None, ok,
                          "" if ok else "weights missing from this installation", DEFAULT_STEPS)
    if name == "analytic":
        from .analytic import load_analytic   # closed form: nothing to read, instant

        return ModelEntry(name, "closed-form Gaussian-process denoiser (tests, demos)", "no weights", 0, True,
                          default_steps=load_analytic().default_steps)
    if kind in ("stable-audio", "stable-audio-3") and sep:
        label = "Stable Audio Open" if kind == "stable-audio" else "Stable Audio 3"
        deps = _has("diffusers") and _has("transformers")
        if not folder:
            return ModelEntry(name, f"{label} (diffusers)", "a local folder you name: " + name + "DIR", None, deps,
                              "weights are not shipped; download them yourself" +
                              ("" if deps else "; needs pip install 'segue[stable-audio]'"))
        path = Path(folder).expanduser()
        if not path.is_dir():
            return ModelEntry(name, f"{label} (diffusers)", str(path), None, False, "folder not found")
        return ModelEntry(name, f"{label} (diffusers)", str(path), _folder_size(path), deps,
                          "" if deps else "needs pip install 'segue[stable-audio]'")
    return ModelEntry(name, "plug-in (segue.models entry point)", "its package", None, True)


def catalog() -> list[ModelEntry]:
    """Every model this installation knows, without loading any."""
    return [describe(n) for n in available_models()]


def human_size(n: Optional[int]) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def table(entries: list[ModelEntry]) -> str:
    rows = [("MODEL", "KIND", "SIZE", "AVAILABLE", "STEPS", "WHERE")]
    for e in entries:
        rows.append((e.name, e.kind, human_size(e.size_bytes), "yes" if e.available else "no",
                     str(e.default_steps) if e.default_steps is not None else "?",
                     e.where + (f"  ({e.note})" if e.note else "")))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r[:5], widths)) + "  " + r[5] for r in rows)
