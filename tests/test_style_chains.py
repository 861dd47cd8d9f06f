"""Style effect chains: every shipped chain runs, bad chains are refused naming the preset file."""
from __future__ import annotations

import numpy as np
import pytest

from engine import effects as E
from engine import presets as P
from engine.errors import PresetError

STYLE_NAMES = ["lofi-warm", "bright-synth", "dark-ambient", "percussive", "strings-pad", "piano-clean"]
HEADER = 'name = "{name}"\nkind = "style"\ntask = "style"\n'
REFERENCE = '\n[reference]\naudio = "ref.wav"\nsource = "test"\n'


def stereo_noise(rate: int, seconds: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(7)
    return (0.1 * rng.standard_normal((2, int(rate * seconds)))).astype(np.float32)


@pytest.fixture
def user_dir(tmp_path, monkeypatch):
    d = tmp_path / "presets"
    d.mkdir()
    (d / "ref.wav").write_bytes(b"RIFF")   # only its existence is checked on load
    monkeypatch.setenv(P.ENV_PRESET_PATH, str(d))
    return d


def write_chain(d, name: str, chain: str) -> str:
    path = d / f"{name}.toml"
    path.write_text(HEADER.format(name=name) + chain + REFERENCE)
    return str(path)


@pytest.mark.parametrize("name", STYLE_NAMES)
@pytest.mark.parametrize("rate", [44100, 48000])
def test_every_style_preset_loads_and_its_chain_runs_on_stereo(name, rate):
    style = P.load_preset(name).style
    assert style is not None and len(style.effects) >= 3 and style.tone in ("dark", "bright")
    x = stereo_noise(rate)
    y = E.apply_chain(style.effects, x, rate, 1.0)
    assert y.shape == x.shape and y.dtype == np.float32 and np.all(np.isfinite(y))
    assert np.max(np.abs(y)) <= E.PEAK_CEILING + 1e-6
    assert not np.allclose(y, x, atol=1e-3)
    assert abs(E.integrated_lufs(y, rate) - E.integrated_lufs(x, rate)) < 0.5 or np.max(np.abs(y)) >= E.PEAK_CEILING - 1e-3


@pytest.mark.parametrize("name", STYLE_NAMES)
def test_presets_show_prints_the_chain(name):
    shown = P.describe(P.load_preset(name))["style"]
    assert shown["chain"] and all("(" in s and s.endswith(")") for s in shown["chain"])
    assert shown["chain"][0].split("(")[0] in E.EFFECTS
    assert shown["weights"]["chroma"] == 0.0


@pytest.mark.parametrize("chain, message", [
    ('[[chain]]\neffect = "Flanger"\n', "unknown effect 'Flanger'"),
    ('[[chain]]\neffect = "LowpassFilter"\ncutoff_frequency_hz = 50000.0\n', r"cutoff_frequency_hz = 50000.0 is out of range \[10, 20000\]"),
    ('[[chain]]\neffect = "Reverb"\nroom_size = 1.5\n', r"room_size = 1.5 is out of range \[0, 1\]"),
    ('[[chain]]\neffect = "LowpassFilter"\ncutoff_frequency_khz = 3.5\n', "wrong unit; write 'cutoff_frequency_hz' \\(in Hz\\)"),
    ('[[chain]]\neffect = "Delay"\ndelay_ms = 250.0\n', "wrong unit; write 'delay_seconds' \\(in seconds\\)"),
    ('[[chain]]\neffect = "Distortion"\ndrive = 6.0\n', "wrong unit; write 'drive_db'"),
    ('[[chain]]\neffect = "Compressor"\nknee_db = 6.0\n', "Compressor has no parameter 'knee_db'"),
    ('[[chain]]\neffect = "Gain"\ngain_db = "loud"\n', "Gain.gain_db must be a number"),
    ('chain = "LowpassFilter"\n', "chain must be an array of tables"),
    ('[style]\ntone = "purple"\n', "tone must be one of dark, bright, neutral"),
    ('[style]\nweights = { rhythm = 1.0 }\n', "unknown group 'rhythm'"),
    ('[style]\nmatch_eq = 2.0\n', r"match_eq must be a number within \[0, 1\]"),
])
def test_a_bad_chain_is_refused_naming_the_preset_file(user_dir, chain, message):
    path = write_chain(user_dir, "bad", chain)
    with pytest.raises(PresetError, match=message) as info:
        P.load_preset("bad")
    assert path in info.value.message
    if "[[chain]]" in chain:
        assert "chain[0]" in info.value.message
    assert info.value.code == "bad_preset"


def test_a_task_preset_with_a_chain_is_refused(user_dir):
    (user_dir / "t.toml").write_text('name = "t"\nkind = "task"\ntask = "infill"\n[[chain]]\neffect = "Gain"\n')
    with pytest.raises(PresetError, match="only style presets take"):
        P.load_preset("t")


def test_a_user_preset_with_its_own_chain_loads_and_runs(user_dir):
    write_chain(user_dir, "mine", '[style]\ntone = "dark"\n[[chain]]\neffect = "LowpassFilter"\n'
                                  'cutoff_frequency_hz = 1000.0\n[[chain]]\neffect = "Gain"\ngain_db = -3.0\n')
    style = P.load_preset("mine").style
    assert [e.effect for e in style.effects] == ["LowpassFilter", "Gain"]
    assert style.describe()["chain"] == ["LowpassFilter(cutoff_frequency_hz=1000)", "Gain(gain_db=-3)"]


def test_strength_scales_each_move_from_the_neutral_value():
    lp = E.EffectSpec("LowpassFilter", (("cutoff_frequency_hz", 2000.0),))
    assert lp.scaled(1.0, 44100)["cutoff_frequency_hz"] == pytest.approx(2000.0)
    assert lp.scaled(0.5, 44100)["cutoff_frequency_hz"] == pytest.approx((2000.0 * 20000.0) ** 0.5)  # log midpoint
    rev = E.EffectSpec("Reverb", (("room_size", 0.9), ("wet_level", 0.4), ("dry_level", 0.6)))
    half = rev.scaled(0.5, 48000)
    assert half == pytest.approx({"room_size": 0.9, "wet_level": 0.2, "dry_level": 0.8})
    rs = E.EffectSpec("Resample", (("target_sample_rate", 12000.0),))
    assert rs.scaled(0.0, 48000)["target_sample_rate"] == pytest.approx(48000.0)


def test_weaker_strength_changes_the_audio_less():
    style = P.load_preset("dark-ambient").style
    x = stereo_noise(44100, 2.0)
    diffs = [float(np.abs(E.apply_chain(style.effects, x, 44100, s, keep_loudness=False) - x).mean())
             for s in (0.25, 0.5, 1.0)]
    assert diffs[0] < diffs[1] < diffs[2]


def test_matching_eq_moves_the_envelope_toward_the_target_and_not_the_level():
    rate = 44100
    centres = np.geomspace(50, 16000, 40)
    src = np.zeros(40)
    tgt = -np.linspace(0, 4, 40)        # the target falls by 4 nepers (about 17 dB) toward the top
    gains = E.matching_eq_db(src, tgt, max_db=24.0, smooth_bands=0)
    assert gains[0] > 0 > gains[-1] and np.median(gains) == pytest.approx(0.0)
    x = stereo_noise(rate, 2.0)
    y = E.apply_eq_curve(x, rate, centres, gains)
    from engine.features import spectral_centroid
    assert spectral_centroid(y, rate) < 0.7 * spectral_centroid(x, rate)
    assert np.allclose(E.apply_eq_curve(x, rate, centres, gains, amount=0.0), x)
    flat = E.apply_eq_curve(x, rate, centres, np.zeros(40))
    assert np.max(np.abs(flat[:, 5000:-5000] - x[:, 5000:-5000])) < 1e-2   # aligned sample for sample


def test_matching_eq_never_boosts_bands_where_the_source_has_only_its_noise_floor():
    src = np.concatenate([np.zeros(30), np.full(10, -10.0)])   # the top 10 bands lie 43 dB down
    tgt = np.zeros(40)
    gains = E.matching_eq_db(src, tgt, max_db=24.0, smooth_bands=0)
    assert np.all(gains[30:] <= 0.0) and np.allclose(gains[:30], 0.0)


def test_loudness_match_reaches_the_target_without_clipping():
    x = stereo_noise(44100, 2.0)
    y = E.match_loudness(x, 44100, E.integrated_lufs(x, 44100) - 6.0)
    assert E.integrated_lufs(y, 44100) == pytest.approx(E.integrated_lufs(x, 44100) - 6.0, abs=0.05)
    loud = E.match_loudness(x, 44100, 0.0)
    assert np.max(np.abs(loud)) <= E.PEAK_CEILING + 1e-6


def _tone(rate: int = 44100, seconds: float = 2.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    x = 0.3 * np.sin(2 * np.pi * 220.0 * t)
    return np.stack([x, x]).astype(np.float32)


def _db(x: np.ndarray) -> float:
    return 10 * np.log10(float(np.mean(x.astype(np.float64) ** 2)))


def test_crackle_adds_hiss_at_its_level_under_the_music_and_is_reproducible():
    x = _tone()
    spec = E.parse_effect({"effect": "Crackle", "hiss_db": -30.0, "crackle_db": -90.0, "clicks_per_second": 0.0},
                          "test")
    y = E.apply_chain((spec,), x, 44100, 1.0, keep_loudness=False)
    assert _db(y - x) - _db(x) == pytest.approx(-30.0, abs=0.2)
    assert np.array_equal(y, E.apply_chain((spec,), x, 44100, 1.0, keep_loudness=False))   # seeded
    # Strength scales the noise's amplitude: half strength is 6 dB quieter, zero is the identity.
    half = E.apply_chain((spec,), x, 44100, 0.5, keep_loudness=False)
    assert _db(half - x) - _db(x) == pytest.approx(-36.0, abs=0.2)
    assert np.array_equal(E.apply_chain((spec,), x, 44100, 0.0, keep_loudness=False), x)


def test_crackle_clicks_are_sparse_bursts_shared_by_both_channels():
    x = _tone()
    spec = E.parse_effect({"effect": "Crackle", "hiss_db": -90.0, "crackle_db": -6.0, "clicks_per_second": 10.0},
                          "test")
    noise = E.apply_chain((spec,), x, 44100, 1.0, keep_loudness=False) - x
    rms = np.sqrt(np.mean(x ** 2))
    assert np.max(np.abs(noise)) == pytest.approx(rms * 10 ** (-6 / 20), rel=0.02)   # the loudest click's peak
    assert np.mean(np.abs(noise[0]) > 0.01 * rms) < 0.05                              # silence between clicks
    assert np.corrcoef(noise[0], noise[1])[0, 1] > 0.99


def test_crackle_on_silence_adds_nothing():
    spec = E.parse_effect({"effect": "Crackle", "hiss_db": -20.0, "crackle_db": -6.0, "clicks_per_second": 50.0},
                          "test")
    silence = np.zeros((2, 44100), np.float32)
    assert np.array_equal(E.apply_chain((spec,), silence, 44100, 1.0, keep_loudness=False), silence)


def test_crackle_runs_between_pedalboard_plugins_in_chain_order():
    lowpass = E.parse_effect({"effect": "LowpassFilter", "cutoff_frequency_hz": 1000.0}, "test")
    spec = E.parse_effect({"effect": "Crackle", "hiss_db": -20.0}, "test")
    x = _tone()

    def hf_db(y):
        mag = np.abs(np.fft.rfft(y[0] - y[0].mean()))
        f = np.fft.rfftfreq(y.shape[1], 1 / 44100)
        return 10 * np.log10(np.sum(mag[f > 8000] ** 2) / np.sum(mag ** 2))

    filtered_after = E.apply_chain((spec, lowpass), x, 44100, 1.0, keep_loudness=False)
    hiss_last = E.apply_chain((lowpass, spec), x, 44100, 1.0, keep_loudness=False)
    assert hf_db(hiss_last) > hf_db(filtered_after) + 10      # the hiss filtered only when it came first


@pytest.mark.parametrize("entry, message", [
    ({"effect": "Crackle", "hiss_db": 0.0}, r"hiss_db = 0.0 is out of range \[-90, -10\]"),
    ({"effect": "Crackle", "clicks_per_second": 500.0}, r"clicks_per_second = 500.0 is out of range \[0, 200\]"),
    ({"effect": "Crackle", "hiss_level": -40.0}, "Crackle has no parameter 'hiss_level'"),
])
def test_a_bad_crackle_is_refused(entry, message):
    with pytest.raises(PresetError, match=message):
        E.parse_effect(entry, "x.toml: chain[0]")
