"""Style effect chains: validated pedalboard chains that a style preset scales with `strength`.

A style preset does most of its audible work with real, deterministic DSP: a
chain of pedalboard plugins (and `Crackle`, a record's surface noise, which is
ours) written in the preset's TOML as `[[chain]]` tables,
with pedalboard's own parameter names (units in the names: `cutoff_frequency_hz`,
`gain_db`, `attack_ms`, `delay_seconds`). Every parameter is checked on load
against the table below: an unknown effect, an unknown parameter, a parameter
written in another unit (`cutoff_frequency_khz`, `delay_ms`) or a value out of
range is a `PresetError` naming the preset's file, the chain entry and the key.

How `strength` scales a chain (parameter scaling, not dry/wet: mixing a
filtered copy with the dry signal comb-filters, because IIR filters shift phase):
every parameter that has a *neutral* value (the value at which the effect does
nothing: 0 dB gain, ratio 1, wet level 0, a low-pass at 20 kHz) moves from
that neutral value toward the preset's value in proportion to strength;
frequencies move on a log scale; a level added to the audio (`Crackle`'s `hiss_db`) has its
amplitude scaled, so half strength is 6 dB quieter. Shape parameters without a neutral value
(`room_size`, `attack_ms`, `q`) stay as written. So strength 0 is the identity,
1 is the chain as written, and 0.5 is "half as much of each move".

The `[style]` table of a preset (tone, per-group guidance weights, matching-EQ
amount) is parsed here too, so everything a style preset adds to a task preset
lives in one module; `engine.presets` calls `parse_style_tables`.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

import numpy as np

from .errors import PresetError

NEUTRAL_RATE = "rate"   # neutral value "the audio's own sample rate" (Resample)
TONES = ("dark", "bright", "neutral")
EMBED_GROUPS = ("mel_mean", "mel_std", "contrast", "texture", "chroma")
# Default guidance weights per embedding group: the chroma group is off, so guidance
# moves timbre and texture toward the reference without pulling the harmony into its key.
DEFAULT_WEIGHTS = {"mel_mean": 1.0, "mel_std": 1.0, "contrast": 1.0, "texture": 1.0, "chroma": 0.0}
MAX_EQ_DB = 12.0
PEAK_CEILING = 0.98   # after loudness matching, scale down (never clip) above this peak

_UNIT_SUFFIXES = ("_hz", "_khz", "_db", "_ms", "_seconds", "_s", "_sec", "_samples", "_percent", "_pct")
_UNIT_WORDS = {"_hz": "Hz", "_db": "dB", "_ms": "milliseconds", "_seconds": "seconds"}


@dataclass(frozen=True)
class ParamSpec:
    """Allowed range of one plugin parameter and how strength scales it."""

    lo: float
    hi: float
    neutral: Optional[float | str] = None   # None: a shape parameter, kept as written
    log: bool = False                       # interpolate on a log scale (frequencies)
    level: bool = False                     # a level in dB whose *amplitude* strength scales (-6 dB at half)

    def scaled(self, value: float, strength: float, sample_rate: int) -> float:
        if strength >= 1.0:
            return value
        if self.level:
            return float(value + 20.0 * math.log10(max(strength, 1e-9)))
        if self.neutral is None:
            return value
        neutral = float(sample_rate) if self.neutral == NEUTRAL_RATE else float(self.neutral)
        if self.log:
            return float(math.exp(math.log(neutral) + strength * (math.log(value) - math.log(neutral))))
        return float(neutral + strength * (value - neutral))


_FREQ = dict(lo=10.0, hi=20000.0)
_GAIN = ParamSpec(-24.0, 24.0, 0.0)
_Q = ParamSpec(0.1, 10.0)

EFFECTS: dict[str, dict[str, ParamSpec]] = {
    "LowpassFilter": {"cutoff_frequency_hz": ParamSpec(neutral=20000.0, log=True, **_FREQ)},
    "HighpassFilter": {"cutoff_frequency_hz": ParamSpec(neutral=10.0, log=True, **_FREQ)},
    "LowShelfFilter": {"cutoff_frequency_hz": ParamSpec(**_FREQ), "gain_db": _GAIN, "q": _Q},
    "HighShelfFilter": {"cutoff_frequency_hz": ParamSpec(**_FREQ), "gain_db": _GAIN, "q": _Q},
    "PeakFilter": {"cutoff_frequency_hz": ParamSpec(**_FREQ), "gain_db": _GAIN, "q": _Q},
    "Gain": {"gain_db": ParamSpec(-60.0, 24.0, 0.0)},
    "Compressor": {"threshold_db": ParamSpec(-60.0, 0.0, 0.0), "ratio": ParamSpec(1.0, 20.0, 1.0),
                   "attack_ms": ParamSpec(0.1, 500.0), "release_ms": ParamSpec(1.0, 5000.0)},
    "Limiter": {"threshold_db": ParamSpec(-40.0, 0.0, 0.0), "release_ms": ParamSpec(1.0, 5000.0)},
    "Distortion": {"drive_db": ParamSpec(0.0, 40.0, 0.0)},
    "Bitcrush": {"bit_depth": ParamSpec(2.0, 24.0, 24.0)},
    "Resample": {"target_sample_rate": ParamSpec(2000.0, 192000.0, NEUTRAL_RATE, log=True)},
    "Reverb": {"room_size": ParamSpec(0.0, 1.0), "damping": ParamSpec(0.0, 1.0),
               "wet_level": ParamSpec(0.0, 1.0, 0.0), "dry_level": ParamSpec(0.0, 1.0, 1.0),
               "width": ParamSpec(0.0, 1.0)},
    "Delay": {"delay_seconds": ParamSpec(0.001, 5.0), "feedback": ParamSpec(0.0, 0.95, 0.0),
              "mix": ParamSpec(0.0, 1.0, 0.0)},
    "Chorus": {"rate_hz": ParamSpec(0.01, 20.0), "depth": ParamSpec(0.0, 1.0, 0.0),
               "centre_delay_ms": ParamSpec(0.5, 50.0), "feedback": ParamSpec(-0.95, 0.95, 0.0),
               "mix": ParamSpec(0.0, 1.0, 0.0)},
    "Phaser": {"rate_hz": ParamSpec(0.01, 20.0), "depth": ParamSpec(0.0, 1.0, 0.0),
               "centre_frequency_hz": ParamSpec(**_FREQ), "feedback": ParamSpec(-0.95, 0.95, 0.0),
               "mix": ParamSpec(0.0, 1.0, 0.0)},
    # Ours, not pedalboard's (see `crackle`): levels are relative to the audio's RMS where the
    # effect sits in the chain, and strength scales their amplitude (ParamSpec.level).
    "Crackle": {"hiss_db": ParamSpec(-90.0, -10.0, level=True), "crackle_db": ParamSpec(-90.0, 0.0, level=True),
                "clicks_per_second": ParamSpec(0.0, 200.0), "seed": ParamSpec(0.0, 2.0 ** 31)},
}


@dataclass(frozen=True)
class EffectSpec:
    """One plugin of a chain: pedalboard class name and its parameters (validated)."""

    effect: str
    params: tuple[tuple[str, float], ...]

    def scaled(self, strength: float, sample_rate: int) -> dict[str, float]:
        spec = EFFECTS[self.effect]
        out = {k: spec[k].scaled(v, strength, sample_rate) for k, v in self.params}
        if self.effect == "Resample":   # never "resample" above the audio's own rate
            out["target_sample_rate"] = min(out["target_sample_rate"], float(sample_rate))
        return out

    def describe(self) -> str:
        return f"{self.effect}({', '.join(f'{k}={v:g}' for k, v in self.params)})"


@dataclass(frozen=True)
class StyleChain:
    """What a style preset adds: its effect chain, tone, guidance weights and matching-EQ amount.

    `tone` says which way the chain moves the spectral centroid (tests and the
    benchmark check it); `weights` weight the reference embedding's groups in
    the guidance loss; `match_eq` (0..1) is how much of a fitted matching EQ
    toward the reference's spectral envelope runs after the chain.
    """

    effects: tuple[EffectSpec, ...] = ()
    tone: str = "neutral"
    weights: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    match_eq: float = 0.0

    def describe(self) -> dict[str, Any]:
        return {"tone": self.tone, "chain": [e.describe() for e in self.effects],
                "weights": dict(self.weights), "match_eq": self.match_eq}


# --- parsing ------------------------------------------------------------------------------

def _stem(key: str) -> tuple[str, Optional[str]]:
    for suffix in sorted(_UNIT_SUFFIXES, key=len, reverse=True):
        if key.endswith(suffix):
            return key[: -len(suffix)], suffix
    return key, None


def _wrong_unit(key: str, allowed: Mapping[str, ParamSpec]) -> Optional[str]:
    """The allowed parameter `key` is the same quantity as, written in another unit (or none)."""
    stem, _ = _stem(key)
    for name in allowed:
        if name != key and _stem(name)[0] == stem and _stem(name)[1] is not None:
            return name
    return None


def parse_effect(entry: Any, where: str) -> EffectSpec:
    """Validate one `[[chain]]` table; `where` prefixes every error (file and entry index)."""
    if not isinstance(entry, dict):
        raise PresetError(f"{where} must be a table with `effect` and its parameters")
    name = entry.get("effect")
    if name not in EFFECTS:
        raise PresetError(f"{where}: unknown effect {name!r}; known: {', '.join(sorted(EFFECTS))}")
    allowed = EFFECTS[name]
    params = []
    for key, value in entry.items():
        if key == "effect":
            continue
        if key not in allowed:
            right = _wrong_unit(key, allowed)
            if right is not None:
                unit = _UNIT_WORDS.get(_stem(right)[1], _stem(right)[1])
                raise PresetError(f"{where}: {name} parameter {key!r} has the wrong unit; write {right!r} "
                                  f"(in {unit})")
            raise PresetError(f"{where}: {name} has no parameter {key!r}; allowed: {', '.join(allowed)}")
        spec = allowed[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise PresetError(f"{where}: {name}.{key} must be a number, got {value!r}")
        if not spec.lo <= value <= spec.hi:
            raise PresetError(f"{where}: {name}.{key} = {value!r} is out of range [{spec.lo:g}, {spec.hi:g}]")
        params.append((key, float(value)))
    return EffectSpec(effect=name, params=tuple(params))


def parse_style_tables(data: Mapping[str, Any], where: str, kind: str) -> Optional[StyleChain]:
    """The `[[chain]]` and `[style]` tables of a decoded preset (None for a task preset without them)."""
    chain_in, style_in = data.get("chain"), data.get("style")
    if kind != "style":
        if chain_in is not None or style_in is not None:
            raise PresetError(f"{where}: only style presets take [[chain]] and [style]")
        return None
    chain_in = [] if chain_in is None else chain_in
    if not isinstance(chain_in, list):
        raise PresetError(f"{where}: chain must be an array of tables ([[chain]] blocks)")
    effects = tuple(parse_effect(e, f"{where}: chain[{i}]") for i, e in enumerate(chain_in))
    style_in = {} if style_in is None else style_in
    if not isinstance(style_in, dict):
        raise PresetError(f"{where}: [style] must be a table")
    unknown = sorted(set(style_in) - {"tone", "weights", "match_eq"})
    if unknown:
        raise PresetError(f"{where}: unknown [style] key(s) {', '.join(unknown)}; allowed: match_eq, tone, weights")
    tone = style_in.get("tone", "neutral")
    if tone not in TONES:
        raise PresetError(f"{where}: [style] tone must be one of {', '.join(TONES)}, got {tone!r}")
    weights = dict(DEFAULT_WEIGHTS)
    w_in = style_in.get("weights", {})
    if not isinstance(w_in, dict):
        raise PresetError(f"{where}: [style] weights must be a table of group = weight")
    for g, w in w_in.items():
        if g not in EMBED_GROUPS:
            raise PresetError(f"{where}: [style] weights: unknown group {g!r}; groups: {', '.join(EMBED_GROUPS)}")
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not 0.0 <= w <= 100.0:
            raise PresetError(f"{where}: [style] weights.{g} must be a number within [0, 100], got {w!r}")
        weights[g] = float(w)
    match_eq = style_in.get("match_eq", 0.0)
    if isinstance(match_eq, bool) or not isinstance(match_eq, (int, float)) or not 0.0 <= match_eq <= 1.0:
        raise PresetError(f"{where}: [style] match_eq must be a number within [0, 1], got {match_eq!r}")
    return StyleChain(effects=effects, tone=tone, weights=weights, match_eq=float(match_eq))


# --- running ------------------------------------------------------------------------------

def build_board(effects: tuple[EffectSpec, ...], strength: float, sample_rate: int):
    """A `pedalboard.Pedalboard` with every parameter scaled by `strength` (see the module docstring)."""
    import pedalboard

    plugins = [getattr(pedalboard, e.effect)(**e.scaled(strength, sample_rate)) for e in effects]
    return pedalboard.Pedalboard(plugins)


def crackle(audio: np.ndarray, sample_rate: int, *, hiss_db: float = -90.0, crackle_db: float = -90.0,
            clicks_per_second: float = 0.0, seed: float = 0.0) -> np.ndarray:
    """A record's surface noise added to (channels, n) audio: a steady hiss and sparse clicks.

    Levels are relative to the audio's own RMS (the hiss's RMS, the loudest click's
    peak), so a quiet master gets quiet noise. The clicks fall at random times
    (`clicks_per_second` on average), the same in every channel as a groove's dust is,
    each a burst under a millisecond with a heavy-tailed amplitude; the hiss is white
    and independent per channel. Seeded, so a render reproduces.
    """
    x = np.asarray(audio, dtype=np.float32)
    rms = float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))
    if x.size == 0 or rms <= 1e-9:
        return x.copy()
    rng = np.random.default_rng(int(seed))
    channels, n = x.shape
    hiss = rng.standard_normal((channels, n)) * rms * 10.0 ** (hiss_db / 20.0)
    clicks = np.zeros(n)
    count = rng.poisson(clicks_per_second * n / sample_rate) if clicks_per_second > 0 else 0
    if count:
        at = rng.integers(0, n, count)
        amp = rng.pareto(3.0, count) + 1.0
        amp *= rng.choice([-1.0, 1.0], count) / amp.max()
        np.add.at(clicks, at, amp)
        burst = np.exp(-np.arange(max(2, int(0.0004 * sample_rate))) / (0.00012 * sample_rate))
        clicks = np.convolve(clicks, burst * np.sign(rng.standard_normal(len(burst))), mode="full")[:n]
        clicks *= rms * 10.0 ** (crackle_db / 20.0) / (np.max(np.abs(clicks)) + 1e-12)
    return (x + hiss + clicks[None, :]).astype(np.float32)


OWN_EFFECTS = {"Crackle": crackle}   # run in numpy between pedalboard's plugins


def _run_chain(effects: tuple[EffectSpec, ...], x: np.ndarray, sample_rate: int, strength: float) -> np.ndarray:
    """Pedalboard's plugins in runs, with this module's own effects between them, in chain order."""
    for own, run in itertools.groupby(effects, key=lambda e: e.effect in OWN_EFFECTS):
        run = tuple(run)
        if own:
            for e in run:
                x = OWN_EFFECTS[e.effect](x, sample_rate, **e.scaled(strength, sample_rate))
        else:
            y = build_board(run, strength, sample_rate)(np.ascontiguousarray(x, np.float32), sample_rate)
            x = _same_length(y, x.shape[1])
    return x


def _same_length(y: np.ndarray, n: int) -> np.ndarray:
    y = np.nan_to_num(y[:, :n], nan=0.0, posinf=0.0, neginf=0.0)
    return np.pad(y, ((0, 0), (0, n - y.shape[1]))) if y.shape[1] < n else y


def apply_chain(effects: tuple[EffectSpec, ...], audio: np.ndarray, sample_rate: int, strength: float = 1.0,
                *, keep_loudness: bool = True) -> np.ndarray:
    """Run the chain on (channels, n) audio; same shape out, loudness matched to the input by default.

    Loudness is kept so that a preset changes colour, not level (a level change
    would fool both the listener and the metrics).
    """
    x = np.ascontiguousarray(audio, dtype=np.float32)
    if not effects or strength <= 0.0:
        return x.copy()
    y = _run_chain(effects, x, sample_rate, min(float(strength), 1.0))
    if keep_loudness:
        y = match_loudness(y, sample_rate, integrated_lufs(x, sample_rate))
    return y.astype(np.float32)


def integrated_lufs(audio: np.ndarray, sample_rate: int) -> float:
    """ITU-R BS.1770 integrated loudness (pyloudnorm); -inf for silence or clips under 0.4 s."""
    import pyloudnorm

    a = np.asarray(audio, dtype=np.float64)
    if a.shape[-1] < int(0.4 * sample_rate) + 1:
        return -math.inf
    return float(pyloudnorm.Meter(sample_rate).integrated_loudness(a.T))


def match_loudness(audio: np.ndarray, sample_rate: int, target_lufs: float) -> np.ndarray:
    """Gain `audio` to `target_lufs` (no change if either side is silent); peaks kept under PEAK_CEILING."""
    now = integrated_lufs(audio, sample_rate)
    y = np.asarray(audio, dtype=np.float32)
    if math.isfinite(now) and math.isfinite(target_lufs):
        y = y * np.float32(10.0 ** ((target_lufs - now) / 20.0))
    peak = float(np.max(np.abs(y))) if y.size else 0.0
    if peak > PEAK_CEILING:
        y = y * np.float32(PEAK_CEILING / peak)
    return y


# --- matching EQ --------------------------------------------------------------------------

def matching_eq_db(source_log_power: np.ndarray, target_log_power: np.ndarray, *,
                   max_db: float = MAX_EQ_DB, smooth_bands: int = 2, floor_db: float = 40.0) -> np.ndarray:
    """Per-band gains (dB) that move a source's spectral envelope to a target's.

    Inputs are natural-log band powers (e.g. the DSP embedder's `mel_mean`). The
    overall level difference is removed (loudness is matched separately), the
    curve is smoothed over neighbouring bands and clipped to +/- `max_db`, so the
    EQ changes the envelope's shape, not the level, and never by absurd amounts.
    Bands where the source lies more than `floor_db` below its loudest band are
    never boosted: there is no music there to lift, only its noise floor.
    """
    src_db = 10.0 * np.asarray(source_log_power, dtype=np.float64) / math.log(10.0)
    db = 10.0 * np.asarray(target_log_power, dtype=np.float64) / math.log(10.0) - src_db
    if smooth_bands > 0:
        k = np.ones(2 * smooth_bands + 1) / (2 * smooth_bands + 1)
        db = np.convolve(np.pad(db, smooth_bands, mode="edge"), k, mode="valid")
    audible = src_db >= src_db.max() - floor_db
    db = db - np.median(db[audible])
    db = np.where(audible, db, np.minimum(db, 0.0))
    return np.clip(db, -max_db, max_db)


def apply_eq_curve(audio: np.ndarray, sample_rate: int, centres_hz: np.ndarray, gains_db: np.ndarray,
                   amount: float = 1.0, n_taps: int = 4095) -> np.ndarray:
    """Filter (channels, n) audio by a linear-phase FIR whose gain interpolates `gains_db` over log frequency.

    `amount` scales the curve in dB (0: identity). The FIR is designed by
    frequency sampling with a Hann window and applied by one FFT convolution,
    with its delay removed, so the output lines up with the input sample for sample.
    """
    x = np.asarray(audio, dtype=np.float64)
    if amount <= 0.0:
        return x.astype(np.float32)
    n_fft = 8192
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    logc = np.log(np.asarray(centres_hz, dtype=np.float64))
    g_db = np.interp(np.log(np.maximum(freqs, 1.0)), logc, np.asarray(gains_db, dtype=np.float64) * amount)
    h = np.fft.irfft(10.0 ** (g_db / 20.0), n_fft)
    h = np.roll(h, n_taps // 2)[:n_taps] * np.hanning(n_taps)
    n = x.shape[1]
    size = 1 << int(math.ceil(math.log2(n + n_taps)))
    y = np.fft.irfft(np.fft.rfft(x, size, axis=1) * np.fft.rfft(h, size)[None], size, axis=1)
    return y[:, n_taps // 2: n_taps // 2 + n].astype(np.float32)

