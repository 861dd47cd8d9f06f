"""Style renders: presets move the colour their way and keep the harmony; --reference matches EQ and loudness."""
from __future__ import annotations

import numpy as np
import pytest

from engine import features as F
from engine.effects import integrated_lufs
from engine.presets import apply_preset, load_preset
from engine.render import render_audio
from engine.request import PCMAudio, request_from_mapping

RATE = 44100
STYLE_NAMES = ["lofi-warm", "bright-synth", "dark-ambient", "percussive", "strings-pad", "piano-clean"]


def chord_loop(seconds: float = 4.0, seed: int = 3) -> np.ndarray:
    """I-vi-IV-V in C (one chord a second) of harmonic-rich tones, a kick on each beat, hats on the offbeats."""
    n = int(RATE * seconds)
    t = np.arange(n) / RATE
    out = np.zeros(n)
    chords = [(60, 64, 67), (57, 60, 64), (53, 57, 60), (55, 59, 62)]
    for i in range(int(seconds)):
        seg = slice(i * RATE, (i + 1) * RATE)
        tt = t[seg] - i
        env = np.exp(-2.0 * tt)
        for m in chords[i % 4]:
            f0 = 440.0 * 2 ** ((m - 69) / 12)
            out[seg] += env * sum(np.sin(2 * np.pi * f0 * k * tt) / k for k in range(1, 9))
    rng = np.random.default_rng(seed)
    for beat in np.arange(0, seconds, 0.5):
        i = int(beat * RATE)
        k = np.arange(min(int(0.2 * RATE), n - i)) / RATE
        out[i:i + len(k)] += 0.7 * np.sin(2 * np.pi * (50 + 80 * np.exp(-30 * k)) * k) * np.exp(-15 * k)
        j = int((beat + 0.25) * RATE)
        if j < n:
            h = min(int(0.04 * RATE), n - j)
            out[j:j + h] += 0.3 * rng.standard_normal(h) * np.exp(-np.arange(h) / (0.01 * RATE))
    out = 0.5 * out / np.max(np.abs(out))
    return np.stack([out, 0.95 * out]).astype(np.float32)


@pytest.fixture(scope="module")
def loop():
    return chord_loop()


def render(fields: dict, preset: str | None = None) -> np.ndarray:
    if preset is not None:
        fields = apply_preset(fields, preset)
    return render_audio(request_from_mapping(fields)).audio


@pytest.fixture(scope="module")
def styled(loop):
    return {name: render({"task": "style", "audio": [PCMAudio(loop, RATE)]}, name) for name in STYLE_NAMES}


@pytest.mark.parametrize("name", STYLE_NAMES)
def test_a_style_render_moves_the_centroid_the_presets_way(name, loop, styled):
    ratio = F.spectral_centroid(styled[name], RATE) / F.spectral_centroid(loop, RATE)
    tone = load_preset(name).style.tone
    if tone == "dark":
        assert ratio < 0.85, ratio
    else:
        assert ratio > 1.15, ratio


@pytest.mark.parametrize("name", STYLE_NAMES)
def test_the_chord_loops_harmony_and_rhythm_survive_every_preset(name, loop, styled):
    out = styled[name]
    assert out.shape == loop.shape
    assert F.chroma_correlation(out, loop, RATE) >= 0.7
    assert F.onset_correlation(out, loop, RATE) >= 0.5
    assert abs(integrated_lufs(out, RATE) - integrated_lufs(loop, RATE)) < 1.0   # colour, not level


def test_lower_strength_moves_the_colour_less(loop, styled):
    half = render({"task": "style", "audio": [PCMAudio(loop, RATE)], "strength": 0.5}, "dark-ambient")
    c0, c_half, c_full = (F.spectral_centroid(a, RATE) for a in (loop, half, styled["dark-ambient"]))
    assert c_full < c_half < c0


def test_a_region_style_leaves_the_rest_of_the_clip_untouched(loop):
    out = render({"task": "style", "audio": [PCMAudio(loop, RATE)], "start_s": 1.0, "end_s": 3.0,
                  "span": "full"}, "lofi-warm")
    assert np.array_equal(out[:, :RATE], loop[:, :RATE]) and np.array_equal(out[:, 3 * RATE:], loop[:, 3 * RATE:])
    assert not np.allclose(out[:, int(1.5 * RATE):int(2.5 * RATE)], loop[:, int(1.5 * RATE):int(2.5 * RATE)])


def test_reference_clip_matches_its_envelope_and_loudness(loop, tmp_path):
    import pedalboard

    rng = np.random.default_rng(11)
    dark = pedalboard.Pedalboard([pedalboard.LowpassFilter(cutoff_frequency_hz=120.0) for _ in range(3)])(
        (0.05 * rng.standard_normal((2, 3 * RATE))).astype(np.float32), RATE)
    path = tmp_path / "dark.wav"
    with pedalboard.io.AudioFile(str(path), "w", RATE, 2) as f:
        f.write(dark)
    out = render({"task": "style", "audio": [PCMAudio(loop, RATE)], "reference": str(path)})
    c_in, c_out, c_ref = (F.spectral_centroid(a, RATE) for a in (loop, out, dark))
    assert c_ref < c_out < 0.85 * c_in
    l_in, l_out, l_ref = (integrated_lufs(a, RATE) for a in (loop, out, dark))
    assert abs(l_out - l_ref) < 1.0 < abs(l_in - l_ref)
    assert F.chroma_correlation(out, loop, RATE) >= 0.7


def test_model_refinement_runs_on_windows_and_keeps_the_length(loop):
    """refine_strength > 0 re-noises each window a little and denoises it with style guidance."""
    short = loop[:, : int(2.5 * RATE)]
    out = render({"task": "style", "audio": [PCMAudio(short, RATE)], "refine_strength": 0.2, "steps": 10},
                 "strings-pad")
    chain_only = render({"task": "style", "audio": [PCMAudio(short, RATE)]}, "strings-pad")
    assert out.shape == short.shape and np.all(np.isfinite(out))
    assert not np.allclose(out, chain_only, atol=1e-4)


def test_a_refined_window_that_collapses_keeps_the_chain_output(loop, monkeypatch):
    """If the model returns a silent window (a diverged sampler is zeroed), the chain's audio stays."""
    from engine import style_task

    def silent_window(model, audio, known, request, **kw):
        return np.zeros_like(audio), {"style_l2": float("nan")}

    monkeypatch.setattr(style_task, "generate_window", silent_window)
    fields = {"task": "style", "audio": [PCMAudio(loop, RATE)], "steps": 10}
    chain_only = render(dict(fields), "strings-pad")
    rendered = render_audio(request_from_mapping(apply_preset({**fields, "refine_strength": 0.2}, "strings-pad")))
    assert np.allclose(rendered.audio, chain_only, atol=1e-6)
    assert rendered.losses["refine_windows_kept_from_chain"] == rendered.losses["refine_windows"] >= 1


def test_progress_reaches_the_end_when_only_the_chain_runs(loop):
    events = []
    req = request_from_mapping(apply_preset({"task": "style", "audio": [PCMAudio(loop, RATE)]}, "percussive"))
    render_audio(req, progress=events.append)
    assert events and events[-1].step == events[-1].total


def test_a_users_own_preset_with_a_chain_and_reference_audio_renders(loop, tmp_path, monkeypatch):
    import pedalboard

    d = tmp_path / "presets"
    d.mkdir()
    with pedalboard.io.AudioFile(str(d / "ref.wav"), "w", RATE, 2) as f:
        f.write((0.05 * np.random.default_rng(5).standard_normal((2, 2 * RATE))).astype(np.float32))
    (d / "muffled.toml").write_text(
        'name = "muffled"\nkind = "style"\ntask = "style"\n'
        '[style]\ntone = "dark"\n'
        '[[chain]]\neffect = "LowpassFilter"\ncutoff_frequency_hz = 800.0\n'
        '[[chain]]\neffect = "LowpassFilter"\ncutoff_frequency_hz = 800.0\n'
        '[reference]\naudio = "ref.wav"\nsource = "seeded noise written by this test"\n')
    monkeypatch.setenv("SEGUE_PRESETS", str(d))
    out = render({"task": "style", "audio": [PCMAudio(loop, RATE)]}, "muffled")
    assert F.spectral_centroid(out, RATE) < 0.7 * F.spectral_centroid(loop, RATE)
    assert F.chroma_correlation(out, loop, RATE) >= 0.7


def test_style_has_the_same_shortest_region_as_every_task(loop):
    from engine.errors import InvalidRequest

    short = request_from_mapping({"task": "style", "audio": (PCMAudio(loop, RATE),), "preset": "dark-ambient",
                                  "start_s": 1.0, "end_s": 1.1})
    assert render_audio(short).audio.shape[1] == loop.shape[1]
    with pytest.raises(InvalidRequest) as err:
        render_audio(request_from_mapping({"task": "style", "audio": (PCMAudio(loop, RATE),),
                                           "preset": "dark-ambient", "start_s": 1.0, "end_s": 1.03}))
    assert err.value.code == "region_out_of_range"
