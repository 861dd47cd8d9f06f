"""Opening files so that a path checked earlier cannot be redirected later by a swapped link.

The daemon checks every path a client names when the job is accepted, but the
worker uses it later; a symbolic link swapped in between must not let it read a
file outside the allowed roots or write one outside the output folder. So the
audio boundary (`engine.audio_io`) opens files here: inputs with `O_NOFOLLOW`
and checked again on the opened descriptor, outputs through a descriptor held on
their folder (checked the same way), with the temp file, the rename and the
fsyncs all relative to that descriptor. Without a confinement (the CLI) the same
code runs with no root checks.

`confine` is process-wide on purpose: the daemon's worker process sets it once,
before its first job.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import secrets
import stat
import threading
import sys
from collections import OrderedDict
from dataclasses import dataclass
from typing import BinaryIO, Callable, Iterator, Optional

from .errors import AudioInputError, InvalidRequest, PathNotAllowed

OUTPUT_EXISTS = "output_exists"


@dataclass(frozen=True)
class Confinement:
    """Where this process may read inputs from, and the one folder tree it may write results into."""

    read_roots: tuple[str, ...]
    write_root: Optional[str]


_current: Optional[Confinement] = None


def confine(read_roots: tuple[str, ...] = (), write_root: Optional[str] = None) -> None:
    """Restrict every later read and write of this process (the daemon's worker calls this once)."""
    global _current
    real = tuple(os.path.realpath(r) for r in read_roots)
    out = os.path.realpath(write_root) if write_root is not None else None
    _current = Confinement(real + ((out,) if out else ()), out)


def current() -> Optional[Confinement]:
    return _current


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def fd_path(fd: int) -> str:
    """Where an open descriptor really is (the kernel's answer, not the name it was opened by)."""
    if sys.platform.startswith("linux"):
        return os.readlink(f"/proc/self/fd/{fd}")
    import fcntl
    getpath = getattr(fcntl, "F_GETPATH", None)
    if getpath is None:  # neither Linux nor macOS: refuse to guess
        raise PathNotAllowed("cannot tell where an opened file lies on this platform")
    return fcntl.fcntl(fd, getpath, b"\0" * 1024).rstrip(b"\0").decode()


def open_input(path: str | os.PathLike) -> int:
    """A read-only descriptor of a regular file; under a confinement it must lie inside a read root."""
    flags = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)
    conf = _current
    if conf is not None:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(os.fspath(path), flags)
    except OSError as e:
        if e.errno == errno.ELOOP and conf is not None:  # the file itself became a link after the check
            raise PathNotAllowed(f"{os.fspath(path)!r:.200} is now a symbolic link; refusing to follow it") from None
        raise AudioInputError(f"{os.fspath(path)!r:.200} cannot be opened: {e.strerror}",
                              code="file_not_found" if e.errno == errno.ENOENT else "bad_audio") from None
    try:
        if conf is not None:
            real = fd_path(fd)
            if not any(_inside(real, r) for r in conf.read_roots):
                raise PathNotAllowed(f"{os.fspath(path)!r:.200} now leads outside the allowed roots (to {real!r:.200}); "
                                     f"was a link swapped in after the job was accepted?")
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise PathNotAllowed(f"{os.fspath(path)!r:.200} is not a regular file")
        os.set_blocking(fd, True)
        return fd
    except BaseException:
        os.close(fd)
        raise


@contextlib.contextmanager
def opened_input(path: str | os.PathLike) -> Iterator[str]:
    """A name to open `path` by that cannot be redirected: under a confinement, the checked descriptor's
    own `/proc/self/fd/N` link (Linux), which always reaches the file that was opened and checked.

    (pedalboard is given a name, not a Python file object: on some corrupt data its file-object
    reader spins instead of failing.) Without a confinement this is `path` itself."""
    if _current is None:
        yield os.fspath(path)
        return
    fd = open_input(path)
    try:
        yield f"/proc/self/fd/{fd}" if os.path.isdir("/proc/self/fd") else os.fspath(path)
    finally:
        os.close(fd)


def open_output_dir(folder: str | os.PathLike) -> int:
    """A descriptor on the folder a result goes into; under a confinement it must lie inside the write root."""
    fd = os.open(os.fspath(folder), os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0))
    conf = _current
    if conf is not None and conf.write_root is not None:
        real = fd_path(fd)
        if not _inside(real, conf.write_root):
            os.close(fd)
            raise PathNotAllowed(f"the output folder {os.fspath(folder)!r:.200} now leads outside the output root "
                                 f"{conf.write_root!r} (to {real!r:.200}); refusing to write there")
    return fd


def sidecar_owner(dir_fd: int, name: str) -> Optional[bool]:
    """None if `name` does not exist in the folder; True if it is a Segue sidecar; False otherwise.

    A Segue sidecar is a JSON object with a `segue_version` key. Anything else (another tool's
    .json, a link, a folder) is not ours to replace."""
    try:
        fd = os.open(name, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0),
                     dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except OSError:  # a link (ELOOP), or unreadable: not ours
        return False if _exists(dir_fd, name) else None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > 16 * 1024 * 1024:
            return False
        with os.fdopen(os.dup(fd), "rb") as f:
            doc = json.loads(f.read().decode("utf-8"))
        return isinstance(doc, dict) and "segue_version" in doc
    except (ValueError, UnicodeDecodeError, OSError):
        return False
    finally:
        os.close(fd)


def _open_regular(dir_fd: int, name: str) -> Optional[int]:
    """A descriptor of a regular file in the held folder (never through a link), or None."""
    try:
        fd = os.open(name, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
                     | getattr(os, "O_CLOEXEC", 0), dir_fd=dir_fd)
    except OSError:
        return None
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            return fd
    except OSError:
        pass
    os.close(fd)
    return None


def read_bytes(dir_fd: int, name: str, limit: int) -> Optional[bytes]:
    """The bytes of a regular file in the held folder (not a link), or None if it is missing, not a
    regular file, unreadable or larger than `limit`: what an adoption check may trust."""
    fd = _open_regular(dir_fd, name)
    if fd is None:
        return None
    try:
        if os.fstat(fd).st_size > limit:
            return None
        with os.fdopen(os.dup(fd), "rb") as f:
            return f.read(limit + 1)[:limit]
    except OSError:
        return None
    finally:
        os.close(fd)


def sha256_in(dir_fd: int, name: str) -> Optional[str]:
    """sha256 of a regular file in the held folder (never through a link), or None if there is none."""
    fd = _open_regular(dir_fd, name)
    if fd is None:
        return None
    try:
        return _sha256_fd(fd)
    except OSError:
        return None
    finally:
        os.close(fd)


_HASHES: "OrderedDict[tuple, str]" = OrderedDict()
_HASHES_LOCK = threading.Lock()
HASH_CACHE_ENTRIES = 64


def sha256_input(path: str | os.PathLike) -> str:
    """sha256 of an input file's bytes, opened as `open_input` opens it (confined, checked descriptor).

    Every take of a variations job records the same inputs: a file whose descriptor shows
    the same inode, size, mtime and ctime as one hashed before is not read again."""
    fd = open_input(path)
    try:
        st = os.fstat(fd)
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        with _HASHES_LOCK:
            if key in _HASHES:
                _HASHES.move_to_end(key)
                return _HASHES[key]
        digest = _sha256_fd(fd)
        with _HASHES_LOCK:
            _HASHES[key] = digest
            while len(_HASHES) > HASH_CACHE_ENTRIES:
                _HASHES.popitem(last=False)
        return digest
    finally:
        os.close(fd)


def _sha256_fd(fd: int) -> str:
    h = hashlib.sha256()
    os.lseek(fd, 0, os.SEEK_SET)
    while chunk := os.read(fd, 1 << 20):
        h.update(chunk)
    return h.hexdigest()


def _exists(dir_fd: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        return True
    except FileNotFoundError:
        return False


def exists(dir_fd: int, name: str) -> bool:
    """Whether `name` exists in the folder (a dangling link counts)."""
    return _exists(dir_fd, name)


def stage(dir_fd: int, name: str, write: Callable[[BinaryIO], None]) -> str:
    """Write a fresh temp file for `name` in the held folder and fsync it; returns the temp name.

    Temp names are `.NAME.<hex>.tmp`, which `remove_stale_temps` recognises after a crash."""
    tmp = f".{name}.{secrets.token_hex(6)}{TEMP_SUFFIX}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
                 | getattr(os, "O_CLOEXEC", 0), 0o666, dir_fd=dir_fd)
    try:
        with os.fdopen(fd, "w+b") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        discard(dir_fd, tmp)
        raise
    return tmp


def commit(dir_fd: int, tmp: str, name: str, *, replace: bool = True) -> None:
    """Move a staged temp file into place. `replace=False` never clobbers: an existing `name`
    (even one that appeared meanwhile) raises `output_exists` and the temp file is removed."""
    try:
        if replace:
            os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        else:
            try:
                os.link(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
            except FileExistsError:
                raise InvalidRequest(f"{name} already exists; set overwrite to replace it", code=OUTPUT_EXISTS) from None
            os.unlink(tmp, dir_fd=dir_fd)
    except BaseException:
        discard(dir_fd, tmp)
        raise


def discard(dir_fd: int, tmp: str) -> None:
    try:
        os.unlink(tmp, dir_fd=dir_fd)
    except FileNotFoundError:
        pass


def write_atomic(dir_fd: int, name: str, write: Callable[[BinaryIO], None], *, replace: bool = True) -> None:
    """Stage, commit and fsync the folder, so the new name survives a power cut."""
    commit(dir_fd, stage(dir_fd, name, write), name, replace=replace)
    os.fsync(dir_fd)


TEMP_SUFFIX = ".tmp"


def remove_stale_temps(folder: str | os.PathLike) -> list[str]:
    """Delete temp files a crash or a full disk left in `folder` (`.NAME.<12 hex>.tmp`); returns their names.

    Only call this when nothing is writing there (the daemon does, before its workers start)."""
    removed = []
    for entry in os.scandir(folder):
        n = entry.name
        if (n.startswith(".") and n.endswith(TEMP_SUFFIX) and entry.is_file(follow_symlinks=False)
                and len(n.rsplit(".", 2)[-2]) == 12):
            try:
                os.unlink(entry.path)
                removed.append(n)
            except FileNotFoundError:
                pass
    return removed
