"""The bridge's wire schema: message types, limits, error codes, and the one decoder.

Both front ends (ZeroMQ and OSC) turn what they receive into a `Message` here and
render requests into `engine.request.RenderRequest` through
`engine.request.request_from_mapping`, so there is a single validation path. Every
failure is a `SegueError` whose `code` goes on the wire unchanged.

ZeroMQ body (after the routing envelope): frame 0 is a UTF-8 JSON header, frames
1.. are raw little-endian float32 PCM, planar `(channels, samples)`, each described
by an entry of `header["frames"]` and referenced from the params as `{"frame": k}`.
"""
from __future__ import annotations

import hmac
import ipaddress
import json
import math
import re
import uuid
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence
from urllib.parse import urlparse

import numpy as np

from engine.errors import SegueError
from engine.request import MAX_DURATION_S, PCMAudio, RenderRequest

PROTOCOL_VERSION = 1
DEFAULT_ENDPOINT = "tcp://127.0.0.1:5557"   # ROUTER, requests
DEFAULT_EVENTS = "tcp://127.0.0.1:5558"     # PUB, job events
SUPPORTED_VERSIONS = (1,)

# Requests a client may send.
REQUEST_TYPES = ("render", "wait", "status", "cancel", "jobs", "health", "unload")
# Messages the daemon sends (replies on the request socket, events on PUB / OSC).
REPLY_TYPES = ("accepted", "status", "done", "error", "progress", "jobs", "health", "ok")

ID_PATTERN = re.compile(r"[A-Za-z0-9_.:\-]{1,64}")  # always used with fullmatch ("abc\n" is not "abc")

# Error codes the bridge adds to engine.errors' codes (invalid_request, bad_audio,
# model_not_found, bad_preset, cancelled, path_not_allowed, internal).
BAD_MESSAGE = "bad_message"
UNSUPPORTED_VERSION = "unsupported_version"
TOO_LARGE = "too_large"
UNAUTHORIZED = "unauthorized"
UNKNOWN_JOB = "unknown_job"
DUPLICATE_ID = "duplicate_id"
QUEUE_FULL = "queue_full"
TIMEOUT = "timeout"
WORKER_CRASHED = "worker_crashed"
INTERRUPTED = "interrupted"
SHUTTING_DOWN = "shutting_down"
STORAGE_FULL = "storage_full"


class ProtocolError(SegueError):
    """A message that cannot be understood (not JSON, wrong shape, wrong version...)."""

    code = BAD_MESSAGE


class TooLarge(SegueError):
    """A message, frame, file or duration beyond the configured limits."""

    code = TOO_LARGE


class Unauthorized(SegueError):
    """A missing or wrong shared-secret token."""

    code = UNAUTHORIZED


@dataclass(frozen=True)
class Limits:
    """Size limits applied before anything is allocated or rendered."""

    max_header_bytes: int = 64 * 1024
    max_frames: int = 3
    max_frame_bytes: int = 256 * 1024 * 1024   # > 600 s of 44.1 kHz stereo float32 (212 MB)
    max_file_bytes: int = 1024 * 1024 * 1024
    max_duration_s: float = MAX_DURATION_S
    max_timeout_s: float = 3600.0
    max_queue: int = 1000


@dataclass(frozen=True)
class Message:
    """A decoded client request: `type`, the client's request `id`, and its arguments."""

    type: str
    id: str
    version: int = PROTOCOL_VERSION
    params: dict = field(default_factory=dict)    # render: RenderRequest fields (PCM already attached)
    args: dict = field(default_factory=dict)      # other types: e.g. {"timeout_s": 5} for wait
    timeout_s: Optional[float] = None             # render: per-job time limit
    token: Optional[str] = None


def new_id() -> str:
    return uuid.uuid4().hex


def check_id(value: Any, *, what: str = "id") -> str:
    if not isinstance(value, str) or not ID_PATTERN.fullmatch(value):
        raise ProtocolError(f"{what} must be 1-64 characters of A-Z a-z 0-9 _ . : -, got {value!r:.80}")
    return value


def _number(name: str, v: Any, *, lo: float, hi: float) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not lo <= v <= hi:
        raise ProtocolError(f"{name} must be a number within [{lo}, {hi}], got {v!r:.80}")
    return float(v)


def decode_header(raw: bytes, limits: Limits) -> dict:
    """Parse the JSON header frame, enforcing size, encoding, shape and version."""
    if len(raw) > limits.max_header_bytes:
        raise TooLarge(f"the header frame is {len(raw)} bytes; the limit is {limits.max_header_bytes}")
    try:
        header = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ProtocolError(f"the header frame is not UTF-8 JSON: {e}") from None
    if not isinstance(header, dict):
        raise ProtocolError(f"the header must be a JSON object, got {type(header).__name__}")
    v = header.get("v")
    if isinstance(v, bool) or not isinstance(v, int):
        raise ProtocolError("the header needs an integer protocol version 'v'")
    if v not in SUPPORTED_VERSIONS:
        raise SegueError(f"protocol version {v} is not supported; this daemon speaks {list(SUPPORTED_VERSIONS)}",
                         code=UNSUPPORTED_VERSION)
    return header


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def decode_frame(desc: Any, data: bytes, limits: Limits, k: int) -> PCMAudio:
    """Check one PCM frame against its descriptor and wrap it as `PCMAudio` (no copy beyond one)."""
    if not isinstance(desc, dict):
        raise ProtocolError(f"frames[{k}] must be an object with shape and sample_rate")
    shape = desc.get("shape")
    if (not isinstance(shape, list) or len(shape) != 2
            or not all(isinstance(n, int) and not isinstance(n, bool) for n in shape)):
        raise ProtocolError(f"frames[{k}].shape must be [channels, samples], got {shape!r:.80}")
    channels, samples = shape
    if channels not in (1, 2) or samples < 1:
        raise ProtocolError(f"frames[{k}].shape must have 1 or 2 channels and at least 1 sample, got {shape}")
    dtype = desc.get("dtype", "float32")
    if dtype not in ("float32", "<f4"):
        raise ProtocolError(f"frames[{k}].dtype must be float32 (little-endian), got {dtype!r:.40}")
    rate = desc.get("sample_rate")
    if isinstance(rate, bool) or not isinstance(rate, int) or not 8000 <= rate <= 192000:
        raise ProtocolError(f"frames[{k}].sample_rate must be an integer within 8000..192000, got {rate!r:.40}")
    if samples / rate > limits.max_duration_s:
        raise TooLarge(f"frames[{k}] holds {samples / rate:.1f} s of audio; the limit is {limits.max_duration_s:g} s")
    expected = channels * samples * 4
    if len(data) != expected:
        raise ProtocolError(f"frames[{k}] has {len(data)} bytes but shape {shape} of float32 needs {expected}")
    pcm = np.frombuffer(memoryview(data), dtype="<f4").reshape(channels, samples).astype(np.float32, copy=True)
    return PCMAudio(pcm, rate)


def _attach_frames(value: Any, pcm: Sequence[PCMAudio], used: set[int]) -> Any:
    """Replace `{"frame": k}` references in an audio field by the decoded PCM."""
    if isinstance(value, dict):
        if set(value) != {"frame"}:
            raise ProtocolError("an in-memory audio reference must be {\"frame\": k}")
        k = value["frame"]
        if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < len(pcm):
            raise ProtocolError(f"frame reference {k!r:.20} does not name one of the {len(pcm)} PCM frame(s)")
        used.add(k)
        return pcm[k]
    return value


def check_envelope(frames: Sequence[Any], limits: Limits = Limits(), token: Optional[str] = None) -> dict:
    """Frame count and sizes, the header, and the token: everything checked before any PCM is touched.

    Returns the decoded header. With `token` set, a missing or wrong one is refused here, so an
    unauthenticated client never gets its PCM copied, decoded or spooled."""
    if not frames:
        raise ProtocolError("empty message: expected a JSON header frame")
    if len(frames) - 1 > limits.max_frames:
        raise TooLarge(f"{len(frames) - 1} PCM frames sent; at most {limits.max_frames} are accepted")
    for k, f in enumerate(frames[1:]):
        if len(f) > limits.max_frame_bytes:
            raise TooLarge(f"PCM frame {k} is {len(f)} bytes; the limit is {limits.max_frame_bytes}")
    header = decode_header(bytes(frames[0]), limits)
    given = header.get("token")
    if given is not None and not isinstance(given, str):
        raise ProtocolError("token must be a string")
    check_token(token, given)
    return header


def decode_message(frames: Sequence[Any], limits: Limits = Limits(), token: Optional[str] = None) -> Message:
    """Decode a ZeroMQ request body (header frame + PCM frames) into a `Message`.

    Frames may be `bytes` or zero-copy `zmq.Frame`s. The token (when `token` is set) is checked
    before the PCM frames are read. This checks the message's shape only. Its render params are
    validated by `JobManager.submit`, for both front ends alike: paths confined first, then
    `engine.request.request_from_mapping` (which may read a preset).
    """
    header = check_envelope(frames, limits, token)
    mtype = header.get("type")
    if mtype not in REQUEST_TYPES:
        raise ProtocolError(f"type must be one of {', '.join(REQUEST_TYPES)}; got {mtype!r:.40}")
    mid = header.get("id")
    mid = new_id() if mid is None else check_id(mid)
    token = header.get("token")
    descs = header.get("frames", [])
    if not isinstance(descs, list) or len(descs) != len(frames) - 1:
        raise ProtocolError(f"header lists {len(descs) if isinstance(descs, list) else 'no'} frame(s) "
                            f"but {len(frames) - 1} PCM frame(s) followed")
    if mtype != "render":
        if descs:
            raise ProtocolError(f"a {mtype} request carries no PCM frames")
        args = header.get("args", {})
        if not isinstance(args, dict):
            raise ProtocolError("args must be a JSON object")
        return Message(type=mtype, id=mid, version=header["v"], args=dict(args), token=token)

    params = header.get("params")
    if not isinstance(params, dict):
        raise ProtocolError("a render request needs a 'params' object")
    pcm = [decode_frame(d, f, limits, k) for k, (d, f) in enumerate(zip(descs, frames[1:]))]
    params = dict(params)
    used: set[int] = set()
    audio = params.get("audio")
    if isinstance(audio, list):
        params["audio"] = [_attach_frames(a, pcm, used) for a in audio]
    elif audio is not None:
        params["audio"] = _attach_frames(audio, pcm, used)
    if "reference" in params:
        params["reference"] = _attach_frames(params["reference"], pcm, used)
    if len(used) != len(pcm):
        raise ProtocolError(f"{len(pcm) - len(used)} PCM frame(s) are not referenced by any audio field")
    timeout = header.get("timeout_s")
    if timeout is not None:
        timeout = _number("timeout_s", timeout, lo=0.001, hi=limits.max_timeout_s)
    return Message(type="render", id=mid, version=header["v"], params=params, timeout_s=timeout, token=token)


def check_durations(request: RenderRequest, limits: Limits) -> None:
    """The bridge's duration limits on top of the engine's own (a daemon may be stricter)."""
    for name in ("start_s", "end_s", "duration_s", "b_start_s"):
        v = getattr(request, name)
        if v is not None and v > limits.max_duration_s:
            raise TooLarge(f"{name} = {v:g} s is beyond this daemon's limit of {limits.max_duration_s:g} s")


# ---- who may talk to the daemon ---------------------------------------------------------------------

def is_loopback_host(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost; "*", 0.0.0.0, names and interfaces count as exposed."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_loopback_endpoint(endpoint: str) -> bool:
    """A ZeroMQ endpoint that only this machine can reach: ipc://, inproc://, or tcp:// on loopback."""
    parsed = urlparse(endpoint)
    return parsed.scheme in ("ipc", "inproc") or is_loopback_host(parsed.hostname or "")


def check_token(expected: Optional[str], given: Optional[str]) -> None:
    """Constant-time comparison of the shared secret; no token configured means none is needed.

    An empty configured token is a mistake, never "anyone with an empty string": refused."""
    if expected is None:
        return
    if not expected:
        raise Unauthorized("the daemon's token is empty; it accepts no client until one is set")
    if not isinstance(given, str) or not hmac.compare_digest(given.encode("utf-8", "surrogatepass"),
                                                                expected.encode("utf-8", "surrogatepass")):
        raise Unauthorized("a valid token is required")


MIN_TOKEN_CHARS = 16


def check_configured_token(token: Optional[str]) -> Optional[str]:
    """The token a daemon is started with: None (loopback only) or a secret of at least 16 characters."""
    if token is None:
        return None
    token = token.strip()
    if len(token) < MIN_TOKEN_CHARS:
        raise ValueError(f"the token is {'empty' if not token else f'only {len(token)} characters'}; use at least "
                         f"{MIN_TOKEN_CHARS} (e.g. `python -c 'import secrets; print(secrets.token_urlsafe())'`)")
    return token


# ---- replies and events ----------------------------------------------------------------------------

def reply(mtype: str, mid: str, **content: Any) -> dict:
    """A reply/event object: version, type, the request id, then the content fields."""
    assert mtype in REPLY_TYPES, mtype
    return {"v": PROTOCOL_VERSION, "type": mtype, "id": mid, **content}


def error_reply(mid: Optional[str], err: BaseException) -> dict:
    """Turn any exception into an error reply; non-Segue errors become `internal` with their class name."""
    if isinstance(err, SegueError):
        code, msg = err.code, err.message
    else:
        code, msg = "internal", f"{type(err).__name__}: {err}"
    return reply("error", mid or "", error={"code": code, "message": msg})


def encode(obj: dict) -> bytes:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode("utf-8")


def encode_render(params: dict, *, mid: Optional[str] = None, pcm: Sequence[PCMAudio] = (),
                  timeout_s: Optional[float] = None, token: Optional[str] = None) -> list[bytes]:
    """Client side: a render request as frames. PCM buffers are referenced as {"frame": k} in params."""
    header: dict[str, Any] = {"v": PROTOCOL_VERSION, "type": "render", "id": mid or new_id(), "params": params,
                              "frames": [{"shape": list(p.samples.shape), "sample_rate": int(p.sample_rate),
                                          "dtype": "float32"} for p in pcm]}
    if timeout_s is not None:
        header["timeout_s"] = timeout_s
    if token is not None:
        header["token"] = token
    return [encode(header)] + [np.ascontiguousarray(p.samples, dtype="<f4").tobytes() for p in pcm]


def encode_request(mtype: str, *, mid: Optional[str] = None, token: Optional[str] = None, **args: Any) -> list[bytes]:
    header: dict[str, Any] = {"v": PROTOCOL_VERSION, "type": mtype, "id": mid or new_id(), "args": args}
    if token is not None:
        header["token"] = token
    return [encode(header)]
