"""Whether an existing explicit output provably is this very render, so a repeat keeps it instead of refusing.

A restarted daemon re-runs a job that a crash interrupted; when the crash came after the WAV
and its sidecar were written but before the job was marked done, the work is complete on disk,
and refusing with `output_exists` would lose it. The same holds for a user repeating the
identical command. So every sidecar records the render's identity (`identity_of`), and
`verified_sidecar` accepts an existing output only when all of these match:

- `request_sha256`: sha256 of the canonical JSON of the request *as given* (before the
  model's defaults are resolved, so no model has to load to check it), output path included,
  `overwrite` left out (it decides whether a file may be replaced, not what is rendered);
- `inputs`: the sha256 of the bytes of every input file (audio, reference, sources), or of
  the samples of PCM sent over the bridge;
- `segue_version`: another version may resolve the same request differently;
- `wav_sha256` beside it (written by `engine.audio_io.write_audio_atomic`): the WAV on disk
  is still the one this render wrote, byte for byte, not a file edited or replaced since.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Optional

import numpy as np

from . import __version__, safe_io
from .audio_io import WAV_HASH_KEY, sidecar_path
from .errors import AudioInputError
from .request import PCMAudio, RenderRequest

IDENTITY_KEY = "identity"
MAX_SIDECAR_BYTES = 16 * 1024 * 1024
KEPT_WARNING = ("the output {path} already holds this identical render (same request, inputs and audio, "
                "checked by hash); it was kept and nothing was rendered again")


def identity_of(request: RenderRequest) -> dict[str, Any]:
    """The identity a sidecar records and a repeat must match (see the module docstring)."""
    fields = {k: v for k, v in request.to_json().items() if k != "overwrite"}
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
    return {"segue_version": __version__,
            "request_sha256": hashlib.sha256(canonical.encode()).hexdigest(),
            "inputs": [{"field": name, "sha256": _input_sha256(value, optional=name == "sources")}
                       for name, value in _inputs(request)]}


def _inputs(request: RenderRequest) -> list[tuple[str, Any]]:
    found = [("audio", a) for a in request.audio]
    if request.reference is not None:
        found.append(("reference", request.reference))
    return found + [("sources", s) for s in request.sources]


def _input_sha256(source: Any, *, optional: bool = False) -> Optional[str]:
    """PCM by its samples (as the engine reads them: float32, channel by channel), a file by its bytes.

    An extra source is read only when the prior runs, so one that cannot be opened is recorded as
    None rather than failing a render that would not have read it."""
    if isinstance(source, PCMAudio):
        samples = np.ascontiguousarray(source.samples, dtype=np.float32)
        h = hashlib.sha256(f"pcm:{samples.shape[0]}x{samples.shape[1]}@{int(source.sample_rate)}:".encode())
        h.update(samples.tobytes())
        return h.hexdigest()
    try:
        return safe_io.sha256_input(source)
    except AudioInputError:
        if optional:
            return None
        raise


def verified_sidecar(path: str | os.PathLike, identity: dict[str, Any]) -> Optional[dict[str, Any]]:
    """The sidecar beside an existing `path` if it proves the WAV is the render `identity` describes;
    None for anything else (no or corrupt sidecar, another request or input, a WAV changed since)."""
    path = Path(path)
    try:
        dir_fd = safe_io.open_output_dir(path.parent)
    except OSError:
        return None
    try:
        raw = safe_io.read_bytes(dir_fd, sidecar_path(path).name, MAX_SIDECAR_BYTES)
        try:
            doc = json.loads(raw.decode("utf-8")) if raw is not None else None
        except (ValueError, UnicodeDecodeError):
            return None
        if not isinstance(doc, dict) or "segue_version" not in doc or doc.get(IDENTITY_KEY) != identity:
            return None
        wav = doc.get(WAV_HASH_KEY)
        if not isinstance(wav, str) or safe_io.sha256_in(dir_fd, path.name) != wav:
            return None
        return doc
    finally:
        os.close(dir_fd)
