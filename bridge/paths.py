"""Confine every file path a client names to the roots the daemon was configured with.

Paths are resolved with `os.path.realpath` (every symlink followed) before the
containment check, so a link inside a root that points outside it is refused,
and the resolved path is what the engine receives. Relative paths are refused:
a client's working directory means nothing to the daemon. Inputs (`audio`,
`reference`, `sources`), the output and model folders (`kind:/folder` model
names) are all checked here when a job is accepted; the worker checks again on
the descriptors it opens (`engine.safe_io`), so a link swapped in later cannot
lead outside either.
"""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from typing import Iterable

from engine.errors import AudioInputError, PathNotAllowed

from .protocol import TooLarge


def _real(p: str | os.PathLike) -> str:
    return os.path.realpath(os.fspath(p))


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


@dataclass(frozen=True)
class PathPolicy:
    """Readable input roots, the writable output root, model folder roots, and the largest file a client may name."""

    input_roots: tuple[str, ...]
    output_root: str
    max_file_bytes: int = 1024 * 1024 * 1024
    model_roots: tuple[str, ...] = ()

    @classmethod
    def create(cls, input_roots: Iterable[str | os.PathLike], output_root: str | os.PathLike,
               max_file_bytes: int = 1024 * 1024 * 1024,
               model_roots: Iterable[str | os.PathLike] = ()) -> "PathPolicy":
        out = _real(output_root)
        os.makedirs(out, exist_ok=True)
        roots = tuple(dict.fromkeys([_real(r) for r in input_roots] + [out]))
        for r in roots:
            if not os.path.isdir(r):
                raise ValueError(f"allowed root {r!r} is not a directory")
        # model roots need not exist yet (the default one is made when the user first downloads a model)
        return cls(roots, out, max_file_bytes, tuple(dict.fromkeys(_real(r) for r in model_roots)))

    def model(self, name: object) -> str:
        """A model name, with the folder of a `kind:/folder` name resolved and confined to a model root.

        Without this a client could make the worker probe any folder on the machine (and its
        error would describe what is there)."""
        if not isinstance(name, str):
            return name  # type: ignore[return-value]  # the engine's validation names the type error
        kind, sep, folder = name.partition(":")
        if not sep or not folder:
            return name
        from engine.models.base import available_models
        if name in available_models():  # a registered name that happens to hold a colon, not a folder
            return name
        self._check_text(folder, f"the folder of model {kind!r}")
        real = _real(folder)
        if not any(_inside(real, r) for r in self.model_roots):
            raise PathNotAllowed(f"model folder {folder!r:.200} is outside the model roots "
                                 f"{list(self.model_roots)}; start the daemon with --model-root DIR to allow "
                                 f"a folder")
        return f"{kind}:{real}"

    def _check_text(self, path: object, what: str) -> str:
        if not isinstance(path, str) or not path:
            raise PathNotAllowed(f"{what} must be a non-empty path string")
        if "\x00" in path:
            raise PathNotAllowed(f"{what} contains a NUL byte")
        try:
            path.encode("utf-8")
        except UnicodeEncodeError:
            raise PathNotAllowed(f"{what} is not valid UTF-8 text") from None
        if not os.path.isabs(path):
            raise PathNotAllowed(f"{what} must be an absolute path, got {path!r:.200}")
        return path

    def input(self, path: object, what: str = "audio path") -> str:
        """The resolved path of a readable regular file inside an input root, within the size limit."""
        real = _real(self._check_text(path, what))
        if not any(_inside(real, r) for r in self.input_roots):
            raise PathNotAllowed(f"{what} {path!r:.200} is outside the allowed roots {list(self.input_roots)}; "
                                 "start the daemon with `--allow-root DIR` to allow another folder")
        try:
            st = os.stat(real)
        except OSError as e:
            raise AudioInputError(f"{what} {path!r:.200} cannot be read: {e.strerror}") from None
        if not stat.S_ISREG(st.st_mode):
            raise AudioInputError(f"{what} {path!r:.200} is not a regular file")
        if st.st_size > self.max_file_bytes:
            raise TooLarge(f"{what} {path!r:.200} is {st.st_size} bytes; the limit is {self.max_file_bytes}")
        return real

    def output(self, path: object, what: str = "output path") -> str:
        """The resolved path of a file to write inside the output root (its folder must exist)."""
        text = self._check_text(path, what)
        parent = _real(os.path.dirname(text))
        name = os.path.basename(text)
        if not name or name in (".", ".."):
            raise PathNotAllowed(f"{what} {path!r:.200} does not name a file")
        if not _inside(parent, self.output_root):
            raise PathNotAllowed(f"{what} {path!r:.200} is outside the output root {self.output_root!r} "
                                 "(the daemon's `--output-dir`; a relative output is placed there)")
        target = os.path.join(parent, name)
        if os.path.islink(target):
            raise PathNotAllowed(f"{what} {path!r:.200} is a symbolic link; refusing to write through it")
        if os.path.exists(target) and not os.path.isfile(target):
            raise PathNotAllowed(f"{what} {path!r:.200} exists and is not a regular file")
        if not os.path.isdir(parent):
            raise PathNotAllowed(f"the folder of {what} {path!r:.200} does not exist")
        return target

    def confine(self, params: dict) -> dict:
        """Render params with every path field resolved and checked (PCM entries pass through).

        Presets are accepted by name only: they come from the daemon's preset folders, which the
        daemon's owner controls, so the reference audio they name is trusted.
        """
        out = dict(params)
        audio = out.get("audio")
        if isinstance(audio, str):
            out["audio"] = self.input(audio)
        elif isinstance(audio, (list, tuple)):
            out["audio"] = [self.input(a, f"audio[{i}]") if isinstance(a, str) else a for i, a in enumerate(audio)]
        reference = out.get("reference")
        if isinstance(reference, str):
            out["reference"] = self.input(reference, "reference path")
        elif isinstance(reference, (list, tuple)):  # not a valid reference, but no path may skip the check
            out["reference"] = [self.input(a, f"reference[{i}]") if isinstance(a, str) else a
                                for i, a in enumerate(reference)]
        sources = out.get("sources")
        if isinstance(sources, str):
            sources = [sources]
        if isinstance(sources, (list, tuple)):
            out["sources"] = [self.input(a, f"sources[{i}]") if isinstance(a, str) else a
                              for i, a in enumerate(sources)]
        if "model" in out:
            out["model"] = self.model(out["model"])
        if isinstance(out.get("sources"), (list, tuple)):
            out["sources"] = [self.input(s, f"sources[{i}]") for i, s in enumerate(out["sources"])]
        if out.get("output") is not None:
            output = out["output"]
            if isinstance(output, str) and output and not os.path.isabs(output):
                output = os.path.join(self.output_root, output)   # relative outputs land in the output folder
            out["output"] = self.output(output)
        preset = out.get("preset")
        if isinstance(preset, str) and (preset.endswith(".toml") or "/" in preset or os.sep in preset
                                        or "\\" in preset):
            # a preset file names its own reference audio, which would bypass the checks above
            raise PathNotAllowed(f"presets are given by name over the bridge (see `segue presets list`), "
                                 f"not as a file: {preset!r:.200}")
        return out

