"""Rebuild the style presets' reference embeddings from audio this project synthesises itself.

Every reference clip is generated here in numpy (plus pedalboard's filters and
reverb), from a fixed seed, so the audio is ours (MIT, like the project), needs
no download and is bit-for-bit reproducible. `presets/SOURCES.md` describes
each clip. Run after any change to the embedder:

    python presets/build_references.py              # writes presets/references/<name>.json
    python presets/build_references.py --audio DIR  # also writes the reference clips as WAV
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable

import numpy as np

SR = 44100
SECONDS = 6.0
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _t(seconds: float = SECONDS) -> np.ndarray:
    return np.arange(int(SR * seconds)) / SR


def _midi_hz(m: float) -> float:
    return 440.0 * 2 ** ((m - 69) / 12)


def _env(n: int, attack_s: float, release_s: float) -> np.ndarray:
    """Linear attack, exponential release envelope of n samples."""
    t = np.arange(n) / SR
    a = np.minimum(t / max(attack_s, 1e-4), 1.0)
    return a * np.exp(-t / max(release_s, 1e-4))


def _place(out: np.ndarray, note: np.ndarray, at_s: float) -> None:
    i = int(at_s * SR)
    n = min(note.shape[-1], out.shape[-1] - i)   # samples, not len() (that counts channels)
    if n > 0:
        out[..., i:i + n] += note[..., :n]


def _saw(hz: float, t: np.ndarray, partials: int = 30) -> np.ndarray:
    """Band-limited sawtooth by additive synthesis (no aliasing)."""
    k = np.arange(1, partials + 1)
    k = k[k * hz < SR / 2 * 0.9]
    return (2 / np.pi) * np.sum(np.sin(2 * np.pi * hz * k[:, None] * t[None]) / k[:, None] * (-1) ** (k[:, None] + 1), axis=0)


def _fx(audio: np.ndarray, *plugins) -> np.ndarray:
    import pedalboard

    return pedalboard.Pedalboard(list(plugins))(audio.astype(np.float32), SR)


def _normalise(audio: np.ndarray, peak: float = 0.7) -> np.ndarray:
    return (audio * peak / (np.max(np.abs(audio)) + 1e-9)).astype(np.float32)


def lofi_warm(rng: np.random.Generator) -> np.ndarray:
    """Electric-piano seventh chords, low-passed, with tape wow, vinyl crackle and a soft kick."""
    import pedalboard as pb

    n = int(SR * SECONDS)
    out = np.zeros((2, n))
    chords = [(57, 60, 64, 67), (53, 57, 60, 64), (55, 59, 62, 65), (52, 55, 59, 62)]
    for i, chord in enumerate(chords):
        tt = _t(1.5)
        wow = 1 + 0.003 * np.sin(2 * np.pi * 0.7 * tt)
        note = sum(np.sin(2 * np.pi * _midi_hz(m) * wow * tt) + 0.3 * np.sin(4 * np.pi * _midi_hz(m) * tt)
                   for m in chord) * _env(len(tt), 0.01, 0.9)
        _place(out, np.stack([note, 0.9 * note]), i * 1.5)
    for beat in np.arange(0, SECONDS, 0.75):
        tt = _t(0.3)
        kick = np.sin(2 * np.pi * (50 + 60 * np.exp(-tt * 30)) * tt) * np.exp(-tt * 12)
        _place(out, 1.5 * np.stack([kick, kick]), beat)
    crackle = (rng.random((2, n)) > 0.9995) * rng.standard_normal((2, n)) * 0.5
    out = _normalise(out) + crackle + 0.01 * rng.standard_normal((2, n))
    return _normalise(_fx(out, pb.LowpassFilter(cutoff_frequency_hz=3500), pb.Compressor(threshold_db=-18, ratio=3)))


def bright_synth(rng: np.random.Generator) -> np.ndarray:
    """A fast detuned-saw arpeggio, high-passed and bright, with a short stereo delay."""
    import pedalboard as pb

    n = int(SR * SECONDS)
    out = np.zeros((2, n))
    pattern = [72, 76, 79, 84, 79, 76]
    step = 0.125
    for i, at in enumerate(np.arange(0, SECONDS, step)):
        m = pattern[i % len(pattern)] + (5 if (i // 24) % 2 else 0)
        tt = _t(step * 1.5)
        env = _env(len(tt), 0.003, 0.12)
        left = _saw(_midi_hz(m) * 1.004, tt) * env
        right = _saw(_midi_hz(m) * 0.996, tt) * env
        _place(out, np.stack([left, right]), at)
    return _normalise(_fx(out, pb.HighpassFilter(cutoff_frequency_hz=400), pb.Delay(delay_seconds=0.1875, feedback=0.3, mix=0.25)))


def dark_ambient(rng: np.random.Generator) -> np.ndarray:
    """Low drones with slow beating, swelling band-passed noise and a long reverb."""
    import pedalboard as pb

    t = _t()
    n = len(t)
    swell = 0.5 - 0.5 * np.cos(2 * np.pi * t / SECONDS)
    drone = sum(np.sin(2 * np.pi * hz * t + ph) for hz, ph in ((36.7, 0.0), (55.0, 1.0), (55.4, 2.0), (73.4, 0.5)))
    noise = _fx(rng.standard_normal((2, n)) * 0.3, pb.LowpassFilter(cutoff_frequency_hz=300))
    out = np.stack([drone, np.roll(drone, 300)]) * (0.4 + 0.6 * swell) + noise * swell
    return _normalise(_fx(_normalise(out), pb.Reverb(room_size=0.95, damping=0.7, wet_level=0.5, dry_level=0.5),
                          pb.LowpassFilter(cutoff_frequency_hz=1200)))


def percussive(rng: np.random.Generator) -> np.ndarray:
    """A dry 120 BPM drum pattern: sine-sweep kicks, noise snares, closed hi-hats."""
    import pedalboard as pb

    n = int(SR * SECONDS)
    out = np.zeros((2, n))
    sixteenth = 0.125
    for i, at in enumerate(np.arange(0, SECONDS, sixteenth)):
        s = i % 16
        if s in (0, 6, 8, 10):
            tt = _t(0.35)
            kick = np.sin(2 * np.pi * (45 + 120 * np.exp(-tt * 40)) * tt) * np.exp(-tt * 9)
            _place(out, np.stack([kick, kick]), at)
        if s in (4, 12):
            tt = _t(0.25)
            snare = (rng.standard_normal(len(tt)) * 0.7 + np.sin(2 * np.pi * 190 * tt)) * np.exp(-tt * 18)
            _place(out, 0.8 * np.stack([snare, snare]), at)
        tt = _t(0.06)
        hat = _fx(rng.standard_normal((1, len(tt))), pb.HighpassFilter(cutoff_frequency_hz=7000))[0] * np.exp(-tt * 70)
        _place(out, 0.5 * np.stack([0.7 * hat, hat]), at)
    return _normalise(out)


def strings_pad(rng: np.random.Generator) -> np.ndarray:
    """Ensemble strings: many detuned saws per note, slow attack, vibrato, low-passed, in a hall."""
    import pedalboard as pb

    out = np.zeros((2, int(SR * SECONDS)))
    chords = [(48, 55, 64, 67, 72), (45, 52, 60, 64, 69), (41, 53, 57, 60, 65)]
    dur = SECONDS / len(chords)
    for i, chord in enumerate(chords):
        tt = _t(dur + 0.5)
        env = np.minimum(tt / 0.6, 1.0) * np.minimum(1.0, np.maximum(0.0, (dur + 0.5 - tt) / 0.5))
        vib = 1 + 0.004 * np.sin(2 * np.pi * 5.5 * tt)
        for side in range(2):
            voice = sum(_saw(_midi_hz(m) * (1 + d), tt * vib, partials=20)
                        for m in chord for d in ((-0.003, 0.004) if side else (0.002, -0.005)))
            _place(out[side:side + 1], (voice * env)[None], i * dur)
    return _normalise(_fx(_normalise(out), pb.LowpassFilter(cutoff_frequency_hz=2500),
                          pb.Reverb(room_size=0.8, wet_level=0.35, dry_level=0.65)))


def piano_clean(rng: np.random.Generator) -> np.ndarray:
    """A clean piano-like melody over bass notes: slightly inharmonic partials, hammer attack, decay."""
    n = int(SR * SECONDS)
    out = np.zeros((2, n))
    melody = [(0.0, 72), (0.5, 74), (1.0, 76), (1.5, 79), (2.0, 77), (2.5, 76), (3.0, 74), (3.5, 72),
              (4.0, 71), (4.5, 72), (5.0, 74), (5.5, 72)]
    bass = [(0.0, 48), (2.0, 53), (4.0, 55)]
    B = 0.0004  # string inharmonicity
    for at, m in melody + bass:
        tt = _t(1.8)
        f0 = _midi_hz(m)
        note = sum(np.sin(2 * np.pi * f0 * k * np.sqrt(1 + B * k * k) * tt) / k ** 1.3 * np.exp(-tt * (1.5 + 0.8 * k))
                   for k in range(1, 12) if f0 * k < SR / 2 * 0.9)
        note *= np.minimum(tt / 0.002, 1.0)
        pan = 0.5 + (m - 60) / 60
        _place(out, np.stack([note * (1 - pan * 0.5), note * (0.5 + pan * 0.5)]), at)
    return _normalise(out)


STYLES: dict[str, Callable[[np.random.Generator], np.ndarray]] = {
    "lofi-warm": lofi_warm,
    "bright-synth": bright_synth,
    "dark-ambient": dark_ambient,
    "percussive": percussive,
    "strings-pad": strings_pad,
    "piano-clean": piano_clean,
}


def render_style(name: str) -> np.ndarray:
    """The reference clip for `name`: (2, 6 s * 44.1 kHz) float32, from a seed derived from the name."""
    seed = sum(ord(c) * (i + 1) for i, c in enumerate(name))
    audio = STYLES[name](np.random.default_rng(seed))
    assert audio.shape == (2, int(SR * SECONDS)) and np.all(np.isfinite(audio))
    return audio


def build(names: list[str], *, embedder_name: str = "dsp", audio_dir: Path | None = None,
          out_dir: Path = HERE / "references") -> list[Path]:
    """Embed each style's clip and write references/<name>.json (vector + embedder probe)."""
    import torch

    from engine.embedders import load_embedder
    from engine.presets import embed, probe_signal

    torch.set_num_threads(1)
    embedder = load_embedder(embedder_name)
    probe = embed(embedder, probe_signal(int(embedder.sample_rate)))
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name in names:
        audio = render_style(name)
        if audio_dir is not None:
            import pedalboard

            audio_dir.mkdir(parents=True, exist_ok=True)
            with pedalboard.io.AudioFile(str(audio_dir / f"{name}.wav"), "w", SR, 2, bit_depth=24) as f:
                f.write(audio)
        vec = embed(embedder, audio)
        doc = {"embedder": embedder_name, "dim": int(vec.shape[0]),
               "source": f"synthesised by presets/build_references.py:{STYLES[name].__name__} (see presets/SOURCES.md)",
               "audio_seconds": SECONDS,
               "vector": [round(float(v), 6) for v in vec], "probe": [round(float(v), 6) for v in probe]}
        path = out_dir / f"{name}.json"
        path.write_text(json.dumps(doc) + "\n")
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", help=f"styles to build (default: all of {', '.join(STYLES)})")
    ap.add_argument("--embedder", default="dsp")
    ap.add_argument("--audio", type=Path, help="also write the reference clips as 24-bit WAV into this folder")
    args = ap.parse_args(argv)
    unknown = [n for n in args.names if n not in STYLES]
    if unknown:
        ap.error(f"unknown style(s) {', '.join(unknown)}; known: {', '.join(STYLES)}")
    for p in build(args.names or list(STYLES), embedder_name=args.embedder, audio_dir=args.audio):
        sys.stderr.write(f"wrote {p}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
