"""The audio boundary: every file or PCM buffer enters and leaves the engine here.

Inside the engine audio is float32 `(channels, samples)` at the model rate, stereo.
Reading resamples, turns mono into stereo, and refuses layouts it cannot map
(5.1, say) unless asked to downmix. Writing is atomic (temp file + rename), with a
JSON sidecar beside the WAV, so a crash never leaves a half-written result.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import numpy as np
from pedalboard.io import AudioFile

from . import safe_io
from .errors import AudioInputError, InvalidRequest, PathNotAllowed
from .request import PCMAudio
from .schema import MAX_DURATION_S

READ_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")
MAX_FILE_BYTES = 2 * 1024 ** 3
WAV_HASH_KEY = "wav_sha256"   # in every sidecar: the sha256 of the WAV beside it, as written
MAX_SECONDS = MAX_DURATION_S   # one limit for files and for every time field (engine/schema.py)


def resample(audio: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """Band-limited (FFT) resampling of (channels, samples); output length round(N * ratio).

    Ideal sinc resampling done block by block with real context on both sides, so a
    DAW clip keeps its timing exactly: no fractional-sample delay (pedalboard's
    streaming resampler delays by 0.2-0.35 samples, which a round trip 44.1 <-> 48 kHz
    turns into a few percent of error on music).
    """
    if source_rate == target_rate:
        return audio
    g = math.gcd(int(source_rate), int(target_rate))
    up, down = int(target_rate) // g, int(source_rate) // g
    n = audio.shape[1]
    expected = int(round(n * target_rate / source_rate))
    ctx = max(1, _RESAMPLE_CONTEXT // down) * down            # context each side, a multiple of `down`
    block = max(1, _RESAMPLE_BLOCK // down) * down
    x = np.pad(audio.astype(np.float64), ((0, 0), (ctx, ctx + block)), mode="reflect" if n > 1 else "edge")
    out = []
    for start in range(0, n, block):                          # `start` is in input samples
        seg = x[:, start:start + block + 2 * ctx]
        y = _resample_fft(seg, up, down)
        out.append(y[:, ctx * up // down:(ctx + block) * up // down])
    return np.ascontiguousarray(np.concatenate(out, axis=1)[:, :expected], dtype=np.float32)


_RESAMPLE_CONTEXT = 8192
_RESAMPLE_BLOCK = 1 << 20


def _resample_fft(x: np.ndarray, up: int, down: int) -> np.ndarray:
    """Resample a segment whose length is a multiple of `down` by up/down in the frequency domain."""
    q = _fast_len(x.shape[1] // down)
    m = q * down
    x = np.pad(x, ((0, 0), (0, m - x.shape[1])))
    m_out = q * up
    spec = np.fft.rfft(x, axis=1)
    keep = min(spec.shape[1], m_out // 2 + 1)
    out_spec = np.zeros((x.shape[0], m_out // 2 + 1), dtype=complex)
    out_spec[:, :keep] = spec[:, :keep]
    if m_out < m and m_out % 2 == 0:
        out_spec[:, -1] = out_spec[:, -1].real               # the new Nyquist bin must be real
    return np.fft.irfft(out_spec, n=m_out, axis=1) * (m_out / m)


def _fast_len(n: int) -> int:
    """The smallest 2^a 3^b 5^c >= n (FFT-friendly lengths)."""
    best = None
    p2 = 1
    while p2 < 2 * n:
        p3 = p2
        while p3 < 2 * n:
            p5 = p3
            while p5 < n:
                p5 *= 5
            best = p5 if best is None else min(best, p5)
            p3 *= 3
        p2 *= 2
    return int(best)


def to_stereo(audio: np.ndarray, *, downmix: bool = False, source: str = "audio") -> np.ndarray:
    """Mono -> both channels; stereo unchanged; more channels only with `downmix`."""
    ch = audio.shape[0]
    if ch == 1:
        return np.repeat(audio, 2, axis=0)
    if ch == 2:
        return audio
    if not downmix:
        raise AudioInputError(
            f"{source} has {ch} channels; Segue works in stereo. Downmix it first or pass downmix=True (--downmix)")
    # ITU-style fold-down: odd channels to the left, even to the right, averaged.
    left = audio[0::2].mean(axis=0)
    right = audio[1::2].mean(axis=0)
    return np.stack([left, right]).astype(np.float32)


def load_audio(source: Union[str, os.PathLike, PCMAudio], sample_rate: int = 44100, *,
               downmix: bool = False) -> np.ndarray:
    """Read a file or PCM buffer as float32 stereo (2, samples) at `sample_rate`."""
    if isinstance(source, PCMAudio):
        audio = np.asarray(source.samples, dtype=np.float32)
        rate = int(source.sample_rate)
        name = "PCM input"
    else:
        audio, rate = _read_file(Path(source))
        name = str(source)
    if audio.shape[1] == 0:
        raise AudioInputError(f"{name} contains no audio (0 samples)")
    if not np.all(np.isfinite(audio)):
        raise AudioInputError(f"{name} contains NaN or infinite samples")
    audio = to_stereo(audio, downmix=downmix, source=name)
    return resample(audio, rate, sample_rate)


def _read_file(path: Path) -> tuple[np.ndarray, int]:
    check_readable(path)
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise AudioInputError(f"{path} is {size / 1e9:.1f} GB; the limit is {MAX_FILE_BYTES / 1e9:.0f} GB")
    try:
        # a confined process (the daemon's worker) reads through a descriptor checked after opening
        with safe_io.opened_input(path) as name, AudioFile(name) as f:
            rate = int(round(f.samplerate))
            frames = int(f.frames)
            if not 8000 <= rate <= 192000:  # a header claiming 1 Hz would make resampling allocate hundreds of GiB
                raise AudioInputError(f"{path} claims a sample rate of {f.samplerate:g} Hz; "
                                      f"files must be within 8000..192000 Hz")
            if frames / max(rate, 1) > MAX_SECONDS:
                raise AudioInputError(f"{path} is too long: it lasts {frames / rate:.0f} s, and Segue reads at most "
                                      f"{MAX_SECONDS:.0f} s ({MAX_SECONDS / 60:g} minutes); cut it first",
                                      code="too_large")
            audio = f.read(frames)
    except (AudioInputError, PathNotAllowed):
        raise
    except Exception as e:  # pedalboard raises ValueError/RuntimeError for undecodable data
        raise AudioInputError(f"{path} could not be decoded as audio ({e})", code="corrupt_audio") from e
    return np.asarray(audio, dtype=np.float32), rate


def check_sample_rate(rate: Any) -> int:
    if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)) or not 8000 <= int(rate) <= 192000:
        raise InvalidRequest(f"sample rate must be an integer within 8000..192000 Hz, got {rate!r}")
    return int(rate)


def write_audio_atomic(path: Union[str, os.PathLike], audio: np.ndarray, sample_rate: int, *,
                       bit_depth: int = 24, sidecar: Optional[Mapping[str, Any]] = None,
                       replace: bool = True) -> Path:
    """Write (channels, samples) as WAV through a temp file + rename; sidecar JSON likewise.

    The sidecar is written first and the WAV last, so a WAV that exists always
    has its parameters beside it. Both go through a descriptor held on the folder
    (`engine.safe_io`), and both are fsynced with the folder. `replace=False`
    refuses an existing WAV (`output_exists`); a `.json` beside it that Segue did
    not write is never replaced. The sidecar gets `wav_sha256`, the hash of the WAV's
    bytes as written, so a WAV edited or replaced later is never taken for this render.
    """
    path = Path(path)
    if path.suffix.lower() != ".wav":
        raise InvalidRequest(f"output must be a .wav file, got {path.name}")
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 2 or audio.shape[0] not in (1, 2) or audio.shape[1] == 0:
        raise ValueError(f"audio must be (1 or 2, samples>0), got {audio.shape}")
    if not np.all(np.isfinite(audio)):
        raise ValueError("refusing to write audio with NaN or infinite samples")
    check_sample_rate(sample_rate)
    if bit_depth not in (16, 24, 32):
        raise InvalidRequest(f"bit_depth must be 16, 24 or 32, got {bit_depth}")
    if safe_io.current() is None:  # a confined worker only writes into folders that already exist
        path.parent.mkdir(parents=True, exist_ok=True)
    if bit_depth != 32:
        audio = np.clip(audio, -1.0, 1.0)
    dir_fd = check_output(path, replace=replace, sidecar=sidecar is not None)

    def write_wav(f: Any) -> None:
        with AudioFile(f, "w", samplerate=float(sample_rate), num_channels=audio.shape[0],
                       bit_depth=bit_depth, format="wav") as out:
            out.write(audio)
    side_tmp = wav_tmp = None
    try:
        # both files are staged first, so a full disk leaves neither behind (nor an orphan sidecar); the
        # WAV first, so the sidecar can record the hash of its bytes (the temp file becomes the output by
        # rename, so these are the final bytes on disk)
        wav_tmp = safe_io.stage(dir_fd, path.name, write_wav)
        if sidecar is not None:
            record = {**sidecar, WAV_HASH_KEY: safe_io.sha256_in(dir_fd, wav_tmp)}
            text = json.dumps(_jsonable(record), indent=2, sort_keys=True).encode()
            side_tmp = safe_io.stage(dir_fd, sidecar_path(path).name, lambda f: f.write(text))
            if not replace and safe_io.exists(dir_fd, path.name):  # never pair our sidecar with another WAV
                raise InvalidRequest(f"the output {path} already exists; set overwrite (--overwrite) to replace it",
                                     code=safe_io.OUTPUT_EXISTS)
            safe_io.commit(dir_fd, side_tmp, sidecar_path(path).name)
            side_tmp = None
        tmp, wav_tmp = wav_tmp, None
        safe_io.commit(dir_fd, tmp, path.name, replace=replace)  # removes its temp file itself on failure
        os.fsync(dir_fd)
    finally:
        for leftover in (side_tmp, wav_tmp):
            if leftover is not None:
                safe_io.discard(dir_fd, leftover)
        os.close(dir_fd)
    return path


def check_output(path: Union[str, os.PathLike], *, replace: bool, sidecar: bool = True) -> int:
    """Refuse an output that would replace a result (unless `replace`) or a .json Segue did not write.

    Returns a descriptor on the output's folder (the caller closes it); a render calls this
    before it starts, so a refusal costs nothing, and `write_audio_atomic` again before writing."""
    path = Path(path)
    try:
        dir_fd = safe_io.open_output_dir(path.parent)
    except FileNotFoundError:
        raise InvalidRequest(f"the folder of the output {path} does not exist") from None
    try:
        if not replace and safe_io.exists(dir_fd, path.name):
            raise InvalidRequest(f"the output {path} already exists; set overwrite (--overwrite) to replace it",
                                 code=safe_io.OUTPUT_EXISTS)
        if sidecar and safe_io.sidecar_owner(dir_fd, sidecar_path(path).name) is False:
            raise InvalidRequest(f"{sidecar_path(path)} exists and was not written by Segue; refusing to replace "
                                 f"it (choose another output name)", code=safe_io.OUTPUT_EXISTS)
    except BaseException:
        os.close(dir_fd)
        raise
    return dir_fd


def sidecar_path(path: Union[str, os.PathLike]) -> Path:
    return Path(path).with_suffix(".json")


def _jsonable(v: Any) -> Any:
    if isinstance(v, Mapping):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if isinstance(v, Path):
        return str(v)
    return v


def check_readable(source: Union[str, os.PathLike, PCMAudio]) -> None:
    """Cheap checks (exists, format, size) before anything slow, such as loading a model."""
    if isinstance(source, PCMAudio):
        return
    path = Path(source)
    if not path.exists():
        raise AudioInputError(f"audio file not found: {path}", code="file_not_found")
    if path.is_dir():
        raise AudioInputError(f"{path} is a folder, not an audio file")
    if path.suffix.lower() not in READ_EXTENSIONS:
        raise AudioInputError(
            f"{path}: unsupported format {path.suffix or '(no extension)'}; use one of {', '.join(READ_EXTENSIONS)}",
            code="unsupported_format")
    if path.stat().st_size == 0:
        raise AudioInputError(f"{path} is empty (0 bytes)")
