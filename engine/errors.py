"""Errors with machine-readable codes, shared by the engine, the CLI and the bridge.

Every user-facing failure is a `SegueError` so each front end can turn it into
its own reply (an exit status, a ZeroMQ error frame, an `/segue/error` message)
without parsing sentences.
"""
from __future__ import annotations


class SegueError(Exception):
    """A failure the user can act on: `code` for machines, the message for people."""

    code = "internal"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


class InvalidRequest(SegueError):
    """A request field is missing, of the wrong type, or out of range."""

    code = "invalid_request"


class AudioInputError(SegueError):
    """An audio file cannot be used: missing, empty, corrupt, or of an unsupported layout."""

    code = "bad_audio"


class ModelNotFound(SegueError):
    """A model name is unknown or its weights are not on disk."""

    code = "model_not_found"


class PresetError(SegueError):
    """A preset is unknown or does not validate."""

    code = "bad_preset"


class Cancelled(SegueError):
    """The job was cancelled by its owner; nothing was written."""

    code = "cancelled"


class PathNotAllowed(SegueError):
    """A path lies outside the configured roots (or escapes them through a link)."""

    code = "path_not_allowed"
