"""Audio enters as float32 stereo at the model rate, or is refused with a clear error."""
import json
import os

import numpy as np
import pytest
from pedalboard.io import AudioFile

from engine.audio_io import load_audio, resample, write_audio_atomic
from engine.errors import AudioInputError, InvalidRequest
from engine.request import PCMAudio


def _write(path, audio, rate):
    with AudioFile(str(path), "w", samplerate=rate, num_channels=audio.shape[0], bit_depth=32) as f:
        f.write(audio.astype(np.float32))
    return str(path)


def _tone(rate, seconds=1.0, hz=440.0, channels=2):
    t = np.arange(int(rate * seconds)) / rate
    return np.tile(0.5 * np.sin(2 * np.pi * hz * t), (channels, 1)).astype(np.float32)


def test_mono_becomes_stereo_and_the_rate_is_converted(tmp_path):
    path = _write(tmp_path / "mono48k.wav", _tone(48000, channels=1), 48000)
    audio = load_audio(path, 44100)
    assert audio.shape == (2, 44100) and audio.dtype == np.float32
    assert np.array_equal(audio[0], audio[1])
    # a 440 Hz tone stays at 440 Hz: its spectrum peaks at bin 440 of a 1 s FFT
    assert abs(int(np.argmax(np.abs(np.fft.rfft(audio[0])))) - 440) <= 1


def test_resample_keeps_length_ratio_and_level():
    x = _tone(22050, seconds=2.0)
    y = resample(x, 22050, 44100)
    assert y.shape == (2, 88200)
    assert np.sqrt((y[:, 2000:-2000] ** 2).mean()) == pytest.approx(0.5 / np.sqrt(2), rel=0.01)


def test_surround_is_refused_unless_downmixed(tmp_path):
    path = _write(tmp_path / "six.wav", _tone(44100, channels=6), 44100)
    with pytest.raises(AudioInputError, match="6 channels"):
        load_audio(path)
    assert load_audio(path, downmix=True).shape == (2, 44100)


@pytest.mark.parametrize("name,content,code", [
    ("empty.wav", b"", "bad_audio"),
    ("corrupt.wav", b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk" * 10, "corrupt_audio"),
    ("notes.txt", b"hello", "unsupported_format"),
])
def test_bad_files_give_a_coded_error(tmp_path, name, content, code):
    p = tmp_path / name
    p.write_bytes(content)
    with pytest.raises(AudioInputError) as e:
        load_audio(str(p))
    assert e.value.code == code


def test_missing_file_and_empty_pcm(tmp_path):
    with pytest.raises(AudioInputError) as e:
        load_audio(str(tmp_path / "nope.wav"))
    assert e.value.code == "file_not_found"
    with pytest.raises(InvalidRequest, match="empty"):
        PCMAudio(np.zeros((2, 0), np.float32), 44100)
    with pytest.raises(InvalidRequest, match="NaN"):
        PCMAudio(np.full((2, 10), np.nan, np.float32), 44100)


def test_atomic_write_leaves_wav_and_sidecar_and_no_temp_files(tmp_path):
    out = tmp_path / "sub" / "out.wav"
    audio = _tone(44100) * 0.5
    write_audio_atomic(out, audio, 44100, bit_depth=24, sidecar={"seed": 3, "model": "x"})
    assert sorted(os.listdir(out.parent)) == ["out.json", "out.wav"]
    assert json.loads((tmp_path / "sub" / "out.json").read_text())["seed"] == 3
    back = load_audio(str(out))
    assert np.abs(back - audio).max() < 1e-5     # 24-bit quantisation only


def test_a_failed_write_leaves_nothing_behind(tmp_path):
    out = tmp_path / "bad.wav"
    with pytest.raises(ValueError):
        write_audio_atomic(out, np.full((2, 100), np.inf, np.float32), 44100, sidecar={"a": 1})
    with pytest.raises(InvalidRequest):
        write_audio_atomic(tmp_path / "x.mp3", _tone(44100), 44100)
    assert os.listdir(tmp_path) == []


def test_resampling_has_no_fractional_delay_and_round_trips_exactly():
    rate = 48000
    t = np.arange(3 * rate) / rate
    x = np.sin(2 * np.pi * 1000 * t).astype(np.float32)[None]
    y = resample(x, rate, 44100)
    t2 = np.arange(y.shape[1]) / 44100
    assert y.shape == (1, 3 * 44100)
    err = np.abs(y[0] - np.sin(2 * np.pi * 1000 * t2))
    assert err[500:-500].max() < 1e-4 and err.max() < 1e-2     # phase exact; mirrored edges differ slightly
    rng = np.random.default_rng(0)
    spec = np.fft.rfft(rng.standard_normal((2, 44100 * 3)))
    spec[:, np.fft.rfftfreq(44100 * 3, 1 / 44100) > 20000] = 0                # content both rates can hold
    music = np.fft.irfft(spec, n=44100 * 3).astype(np.float32)
    back = resample(resample(music, 44100, 48000), 48000, 44100)
    assert np.sqrt(((back - music)[:, 5000:-5000] ** 2).mean() / (music ** 2).mean()) < 1e-3


def test_resampling_long_audio_in_blocks_is_seamless():
    rng = np.random.default_rng(1)
    n = 147 * 20_000                      # 2.94 M samples (3 blocks), a whole number of 44.1 -> 48 kHz periods
    spec = np.fft.rfft(rng.standard_normal((1, n)))
    spec[:, n // 5:] = 0
    x = np.fft.irfft(spec, n=n).astype(np.float32)
    y = resample(x, 44100, 48000)
    assert y.shape[1] == n // 147 * 160
    # the exact answer for this periodic signal: one FFT over all of it
    ref = np.fft.irfft(np.fft.rfft(x.astype(np.float64)), n=y.shape[1]) * (y.shape[1] / n)
    assert np.abs(y - ref)[:, 20000:-20000].max() < 1e-3 * np.abs(ref).max()
