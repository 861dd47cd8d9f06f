"""A bounds-checked OSC 1.0 packet parser for the daemon's receive path.

python-osc's parser (1.10.2, the newest release) loops forever on a bundle
element whose size is negative (`#bundle\\0`, a time tag, then `-8`): its index
moves backwards, and it logs a warning on every turn. That datagram reaches the
parser before any token check, so one 20-byte packet would take the OSC front
end down. This parser reads every size and offset against the datagram's end,
moves strictly forward, caps bundle nesting and the number of messages, and
raises `OscParseError` (a `bad_message`) for anything else, so a hostile
datagram costs one linear pass over at most 64 KiB.

Type tags understood: i f d h t s S b c r m T F N I. Arrays (`[`, `]`) and
unknown tags are refused: no Segue address takes them. Time tags are read and
ignored (the daemon acts on a bundle at once).
"""
from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Any

from .protocol import ProtocolError

BUNDLE_TAG = b"#bundle\x00"
MAX_DEPTH = 4          # bundles inside bundles, counting the outermost
MAX_MESSAGES = 64      # messages in one datagram, over all nesting levels
MAX_ARGS = 64          # arguments of one message


class OscParseError(ProtocolError):
    """A datagram that is not a well-formed OSC packet within the parser's limits."""


@dataclass(frozen=True)
class OscMessage:
    """One OSC message: its address and decoded arguments (str, int, float, bytes, bool, None)."""

    address: str
    args: tuple[Any, ...]


def parse_packet(data: bytes, *, max_depth: int = MAX_DEPTH, max_messages: int = MAX_MESSAGES) -> list[OscMessage]:
    """Every message of a datagram (bundles flattened, in order); raises `OscParseError` on any defect."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise OscParseError("an OSC packet is bytes")
    data = bytes(data)
    out: list[OscMessage] = []
    _element(data, 0, len(data), 1, max_depth, max_messages, out)
    return out


def _element(data: bytes, start: int, end: int, depth: int, max_depth: int, max_messages: int,
             out: list[OscMessage]) -> None:
    if end - start < 4:
        raise OscParseError(f"an OSC element of {end - start} bytes is too short")
    if (end - start) % 4:
        raise OscParseError(f"an OSC element is {end - start} bytes, not a multiple of 4")
    if data[start:start + 8] == BUNDLE_TAG:
        _bundle(data, start, end, depth, max_depth, max_messages, out)
    elif data[start:start + 1] == b"/":
        if len(out) >= max_messages:
            raise OscParseError(f"more than {max_messages} messages in one datagram")
        out.append(_message(data, start, end))
    else:
        raise OscParseError("not an OSC message (no leading '/') or bundle (no '#bundle')")


def _bundle(data: bytes, start: int, end: int, depth: int, max_depth: int, max_messages: int,
            out: list[OscMessage]) -> None:
    if depth > max_depth:
        raise OscParseError(f"bundles nested deeper than {max_depth} levels")
    pos = start + 16  # tag + 8-byte time tag
    if pos > end:
        raise OscParseError("a bundle shorter than its header (tag and time tag)")
    while pos < end:
        if end - pos < 4:
            raise OscParseError("a bundle element size is cut off")
        (size,) = struct.unpack_from(">i", data, pos)
        pos += 4
        if size <= 0 or size % 4 or size > end - pos:
            raise OscParseError(f"bundle element size {size} is not a positive multiple of 4 within the "
                                f"{end - pos} bytes left")
        _element(data, pos, pos + size, depth + 1, max_depth, max_messages, out)
        pos += size  # size > 0: the loop always moves forward


def _string(data: bytes, pos: int, end: int, what: str) -> tuple[str, int]:
    nul = data.find(b"\x00", pos, end)
    if nul < 0:
        raise OscParseError(f"{what} is not NUL-terminated within the packet")
    nxt = (nul + 4) & ~3  # the string, its NUL, and padding to a 4-byte boundary
    if nxt > end:
        raise OscParseError(f"{what} padding runs past the end of the packet")
    try:
        return data[pos:nul].decode("utf-8"), nxt
    except UnicodeDecodeError:
        raise OscParseError(f"{what} is not UTF-8 text") from None


_FIXED = {"i": (">i", 4), "f": (">f", 4), "d": (">d", 8), "h": (">q", 8), "t": (">Q", 8), "c": (">I", 4),
          "r": (">I", 4), "m": ("4s", 4)}
_CONST = {"T": True, "F": False, "N": None, "I": math.inf}


def _message(data: bytes, start: int, end: int) -> OscMessage:
    address, pos = _string(data, start, end, "the address")
    if pos == end:  # OSC 1.0 allows a message without a type tag string: no arguments
        return OscMessage(address, ())
    if data[pos:pos + 1] != b",":
        raise OscParseError("the type tag string does not start with ','")
    tags, pos = _string(data, pos, end, "the type tag string")
    tags = tags[1:]
    if len(tags) > MAX_ARGS:
        raise OscParseError(f"{len(tags)} arguments; at most {MAX_ARGS} are read")
    args: list[Any] = []
    for tag in tags:
        if tag in _CONST:
            args.append(_CONST[tag])
        elif tag in _FIXED:
            fmt, size = _FIXED[tag]
            if end - pos < size:
                raise OscParseError(f"argument '{tag}' is cut off")
            (value,) = struct.unpack_from(fmt, data, pos)
            pos += size
            args.append(value)
        elif tag in ("s", "S"):
            value, pos = _string(data, pos, end, "a string argument")
            args.append(value)
        elif tag == "b":
            if end - pos < 4:
                raise OscParseError("a blob size is cut off")
            (size,) = struct.unpack_from(">i", data, pos)
            pos += 4
            padded = (size + 3) & ~3
            if size < 0 or padded > end - pos:
                raise OscParseError(f"blob size {size} does not fit in the {end - pos} bytes left")
            args.append(data[pos:pos + size])
            pos += padded
        else:
            raise OscParseError(f"type tag {tag!r} is not supported")
    if pos != end and data[pos:end].strip(b"\x00"):
        raise OscParseError(f"{end - pos} unexpected bytes after the arguments")
    return OscMessage(address, tuple(args))
