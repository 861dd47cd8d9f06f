"""Embedders for style guidance, loadable by name.

`load_embedder("dsp")` needs nothing; adapters for models with weights take the
local weight file after a colon, e.g. `load_embedder("passt:/models/passt.pt")`.
Weights are never downloaded: a missing file is a `ModelNotFound` naming the path.
"""
from __future__ import annotations

import importlib
from typing import Callable

from ..errors import ModelNotFound
from .base import Embedder, Resample

EmbedderLoader = Callable[..., Embedder]
_LOADERS: dict[str, EmbedderLoader] = {}
# Adapters whose modules are imported only when asked for: "kind:" -> "module:function".
_LAZY: dict[str, str] = {
    "passt:": "engine.embedders.passt:load_passt",
    "clap:": "engine.embedders.clap:load_clap",
}


def register_embedder(name: str, loader: EmbedderLoader) -> None:
    """Make `name` loadable; a name ending in ':' takes the text after the colon (a path)."""
    _LOADERS[name] = loader


def available_embedders() -> list[str]:
    return sorted(set(_LOADERS) | set(_LAZY))


def _loader(key: str) -> EmbedderLoader | None:
    if key in _LOADERS:
        return _LOADERS[key]
    if key in _LAZY:
        module, _, func = _LAZY[key].partition(":")
        return getattr(importlib.import_module(module), func)
    return None


def load_embedder(name: str) -> Embedder:
    """Build an embedder by name (`dsp`) or `kind:/path/to/weights` (`passt:`, `clap:`)."""
    kind, sep, arg = name.partition(":")
    if not sep:
        loader = _loader(kind)
        if loader is not None and not kind.endswith(":"):
            return loader()
        if kind + ":" in _LOADERS or kind + ":" in _LAZY:
            raise ModelNotFound(f"embedder {kind!r} needs a local weight file: use '{kind}:/path/to/weights'")
    else:
        if kind + ":" in _LOADERS or kind + ":" in _LAZY:
            if not arg:
                raise ModelNotFound(f"embedder {kind!r} needs a local weight file after the colon")
            return _loader(kind + ":")(arg)
    raise ModelNotFound(f"unknown embedder {name!r}; available: {', '.join(available_embedders())}")


def _load_dsp() -> Embedder:
    from .dsp import DSPEmbedder

    return DSPEmbedder()


register_embedder("dsp", _load_dsp)

__all__ = ["Embedder", "Resample", "available_embedders", "load_embedder", "register_embedder"]
