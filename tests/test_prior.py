"""The retrieval prior: it finds the beat, finds the material, and places it in phase.

Synthetic music of known structure (a drum pattern at a known tempo over a chord loop)
makes every expectation exact.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from engine.prior.analysis import analyse
from engine.prior.edits import continuation_prior, infill_prior, make_sources, onset_phase_shift, tempo_match
from engine.render import render, render_audio
from engine.request import PCMAudio, RenderRequest

RATE = 44100


def drum_loop(bpm: float, seconds: float, *, offset: float = 0.1, seed: int = 0, chords: bool = True) -> np.ndarray:
    """Kick on beats 1 and 3, a hat on every beat, and (optionally) a four-chord pad, one chord a bar."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    x = np.zeros(n, np.float64)
    beat = 60.0 / bpm
    kick = np.sin(2 * np.pi * 60 * np.arange(4000) / RATE) * np.exp(-np.arange(4000) / 800)
    hat = rng.standard_normal(1500) * np.exp(-np.arange(1500) / 200) * 0.3
    i, t = 0, offset
    while t < seconds:
        k = int(round(t * RATE))
        if i % 2 == 0:
            x[k:k + 4000] += kick[:len(x[k:k + 4000])]
        x[k:k + 1500] += hat[:len(x[k:k + 1500])]
        t += beat
        i += 1
    if chords:
        tt = np.arange(n) / RATE
        progression = [(261.6, 329.6, 392.0), (220.0, 261.6, 329.6), (174.6, 220.0, 261.6), (196.0, 246.9, 293.7)]
        bar = 4 * beat
        j = 0
        while offset + j * bar < seconds:
            s0, s1 = int((offset + j * bar) * RATE), min(n, int((offset + (j + 1) * bar) * RATE))
            for f in progression[j % 4]:
                x[s0:s1] += 0.05 * np.sin(2 * np.pi * f * tt[s0:s1])
            j += 1
    return (np.stack([x, x]) * 0.5).astype(np.float32)


def periodic_song(bpm: float = 120.0, phrase_bars: int = 4, repeats: int = 3) -> np.ndarray:
    """A strictly periodic signal: one phrase of `phrase_bars` bars tiled sample for sample."""
    phrase_s = phrase_bars * 4 * 60.0 / bpm
    phrase = drum_loop(bpm, phrase_s + 0.5)[:, :int(round(phrase_s * RATE))]
    return np.tile(phrase, (1, repeats))


@pytest.mark.parametrize("bpm", [72.0, 97.0, 120.0, 174.0])
def test_the_tracker_finds_the_tempo_of_a_drum_pattern_within_2_percent(bpm):
    an = analyse(drum_loop(bpm, 20.0), RATE)
    assert an.has_beat
    assert abs(an.tempo_bpm / bpm - 1.0) < 0.02
    # and the grid sits on the hits: every hit is 100 ms + k beats
    beat = 60.0 / bpm * RATE
    phase = ((an.beats - 0.1 * RATE) / beat + 0.5) % 1.0 - 0.5
    assert np.median(np.abs(phase)) * beat / RATE < 0.010


def test_a_daw_tempo_hint_settles_an_octave_choice():
    audio = drum_loop(150.0, 20.0)
    assert abs(analyse(audio, RATE, bpm_hint=150.0).tempo_bpm / 150.0 - 1.0) < 0.02


def test_noise_has_no_beat_and_falls_back_to_frame_similarity():
    rng = np.random.default_rng(3)
    noise = (rng.standard_normal((2, 10 * RATE)) * 0.1).astype(np.float32)
    an = analyse(noise, RATE)
    assert not an.has_beat and an.tempo_bpm is None
    # Frame-level candidates still come back (ranked by how well the surroundings match).
    timeline, info = infill_prior(make_sources(["n"], [noise], RATE), 4 * RATE, 5 * RATE, context_s=1.0, seam=0)
    assert timeline is not None and not info.beat_tracked


@pytest.mark.parametrize("gap_at", [3.1, 8.1, 9.37])
def test_the_infill_of_a_removed_bar_of_a_periodic_signal_restores_it(gap_at):
    song = periodic_song()
    g0, g1 = int(gap_at * RATE), int((gap_at + 2.0) * RATE)
    damaged = song.copy()
    damaged[:, g0:g1] = 0.0
    timeline, info = infill_prior(make_sources(["song"], [damaged], RATE), g0, g1, context_s=2.0,
                                  seam=int(0.05 * RATE))
    assert info.kind == "similarity" and info.beat_tracked
    err = np.sqrt(np.mean((timeline[:, g0:g1] - song[:, g0:g1]) ** 2)) / np.sqrt(np.mean(song[:, g0:g1] ** 2))
    assert err < 1e-3
    # The copy comes from a whole number of phrases away, never from the gap itself.
    src = info.segments[0]["source_start_s"]
    assert abs(src - gap_at) >= 2.0 and abs(((src - gap_at) / 8.0) - round((src - gap_at) / 8.0)) < 1e-3
    assert info.to_json()["gain_db"] == pytest.approx(0.0, abs=0.05)   # recorded: the copy kept its level


@pytest.mark.parametrize("louder_db", [-5.0, 5.0])
def test_an_infill_copy_takes_the_level_of_the_passage_it_fills(louder_db):
    """The same phrase played 5 dB softer (or louder) around the gap than where the copy comes from."""
    song = periodic_song(repeats=4)
    phrase = song.shape[1] // 4
    g0, g1 = 2 * phrase + int(3.1 * RATE), 2 * phrase + int(5.1 * RATE)
    damaged = song.copy()
    damaged[:, 2 * phrase:3 * phrase] *= 10 ** (louder_db / 20)
    truth = damaged[:, g0:g1].copy()
    damaged[:, g0:g1] = 0.0
    timeline, info = infill_prior(make_sources(["song"], [damaged], RATE), g0, g1, context_s=2.0,
                                  seam=int(0.05 * RATE))
    assert info.kind == "similarity"
    assert info.to_json()["gain_db"] == pytest.approx(louder_db, abs=0.3)
    level = 20 * np.log10(np.sqrt(np.mean(timeline[:, g0:g1] ** 2)) / np.sqrt(np.mean(truth ** 2)))
    assert abs(level) < 0.5


def test_a_rendered_infill_with_the_builtin_refiner_stays_close_to_the_truth():
    """Prior + seam refinement by the shipped model (asked for: the default ships the prior alone)."""
    song = periodic_song()
    g0, g1 = int(8.1 * RATE), int(10.1 * RATE)
    damaged = song.copy()
    damaged[:, g0:g1] = 0.0
    out = render_audio(RenderRequest(task="infill", audio=(PCMAudio(damaged, RATE),), start_s=8.1, end_s=10.1,
                                     span="region", steps=16, refine_strength=0.1))
    ref = song[:, g0:g1]
    err = np.sqrt(np.mean((out.audio - ref) ** 2)) / np.sqrt(np.mean(ref ** 2))
    assert out.info["kind"] == "similarity"
    assert err < 0.35           # only the zones around the two seams are regenerated
    level = 10 * np.log10(np.mean(out.audio ** 2) / np.mean(ref ** 2))
    assert abs(level) < 1.5


def test_regenerate_gives_a_different_candidate_for_each_seed():
    song = periodic_song(repeats=4)
    spans = set()
    for seed in range(3):
        out = render_audio(RenderRequest(task="regenerate", audio=(PCMAudio(song, RATE),), start_s=8.1, end_s=10.1,
                                         seed=seed, refine_strength=0.0, span="region"))
        spans.add(out.info["segments"][0]["source_start_s"])
    assert len(spans) == 3


def test_continuation_follows_the_loop_and_chains_for_a_minute():
    song = periodic_song(repeats=2)                       # 16 s: two phrases
    cut = song.shape[1]
    stream, info = continuation_prior(make_sources(["song"], [song], RATE), cut, 60 * RATE, context_s=2.0,
                                      seam=int(0.05 * RATE))
    assert stream.shape[1] == cut + 60 * RATE
    assert info.extra["jumps"] >= 2
    # The periodic extension of the song is the truth.
    truth = np.tile(song[:, :8 * RATE], (1, 10))[:, :stream.shape[1]]
    err = np.sqrt(np.mean((stream[:, cut:] - truth[:, cut:]) ** 2)) / np.sqrt(np.mean(truth[:, cut:] ** 2))
    assert err < 0.05
    np.testing.assert_array_equal(stream[:, :cut], song)   # the clip itself is untouched


def _hits(audio: np.ndarray, threshold: float = 0.2) -> np.ndarray:
    """Sample positions of click onsets (the first sample over threshold after 50 ms of quiet)."""
    env = np.abs(audio.mean(axis=0))
    above = np.nonzero(env > threshold)[0]
    hits, last = [], -RATE
    for i in above:
        if i - last > int(0.05 * RATE):
            hits.append(i)
        last = i
    return np.array(hits)


def test_a_transition_between_loops_at_different_tempos_lands_beats_on_a_s_grid_within_10_ms(tmp_path):
    a = drum_loop(120.0, 16.0, chords=False)
    b = drum_loop(100.0, 16.0, chords=False, offset=0.23)
    out = render_audio(RenderRequest(task="transition", audio=(PCMAudio(a, RATE), PCMAudio(b, RATE)), start_s=12.0,
                                     b_start_s=3.0, crossfade_s=2.0, refine_strength=0.0))
    info = out.info
    assert abs(info["stretch_factor"] - 1.2) < 0.03
    join_a = int(info["join_a_s"] * RATE)
    hits = _hits(out.audio[:, join_a + RATE:])                      # B alone, after the crossfade
    assert len(hits) >= 4
    beat = 0.5 * RATE
    grid_err = ((hits + join_a + RATE - 0.1 * RATE) / beat + 0.5) % 1.0 - 0.5
    assert np.max(np.abs(grid_err)) * beat / RATE < 0.010


EIGHTH_S = 14 * 512 / RATE     # 162.5 ms: a kick every other eighth is 184.6 BPM, every third 123.0


def kick_every_other_eighth(seconds: float, offset: float = 0.1, seed: int = 0, hat: float = 0.1) -> np.ndarray:
    """A hat on every eighth note and a kick on every other one: a 184.6 BPM pulse that a tempo prior
    centred on 120 BPM reads, through the hats, as 123.0 (three eighths)."""
    rng = np.random.default_rng(seed)
    x = np.zeros(int(seconds * RATE))
    kick = np.sin(2 * np.pi * 60 * np.arange(4000) / RATE) * np.exp(-np.arange(4000) / 800)
    hits = rng.standard_normal(1500) * np.exp(-np.arange(1500) / 200) * hat
    i, t = 0, offset
    while t < seconds:
        k = int(round(t * RATE))
        x[k:k + 1500] += hits[:len(x[k:k + 1500])]
        if i % 2 == 0:
            x[k:k + 4000] += kick[:len(x[k:k + 4000])]
        t += EIGHTH_S
        i += 1
    return (np.stack([x, x]) * 0.4).astype(np.float32)


def test_a_pulse_heard_two_ways_names_the_stronger_reading():
    from engine.prior.analysis import metre_alternative
    an = analyse(kick_every_other_eighth(20.0), RATE)
    assert abs(an.tempo_bpm / 123.0 - 1.0) < 0.01               # the prior's reading: three eighths
    assert abs(metre_alternative(an) / 184.6 - 1.0) < 0.01      # the onsets repeat more strongly at two
    for bpm in (72.0, 120.0, 174.0):                            # a plain 4/4 loop has no stronger 3:2 pulse
        assert metre_alternative(analyse(drum_loop(bpm, 20.0), RATE)) is None


def _transition_of_files(tmp_path, a: np.ndarray, b: np.ndarray, name: str, start_s: float = 12.0, **fields):
    """A transition of A (joined at `start_s`) into B (from 3 s) rendered from files: (result, sidecar, output)."""
    from engine.audio_io import load_audio, write_audio_atomic
    paths = [str(tmp_path / f"{name}-{side}.wav") for side in ("a", "b")]
    for path, audio in zip(paths, (a, b)):
        write_audio_atomic(path, audio, RATE, bit_depth=32)
    result = render(RenderRequest(task="transition", audio=tuple(paths), start_s=start_s, b_start_s=3.0, crossfade_s=2.0,
                                  refine_strength=0.0, output=str(tmp_path / f"{name}.wav"), **fields))
    return result, json.loads(open(result.sidecar_path).read()), load_audio(result.path)


def _b_off_a_grid_ms(out: np.ndarray, join_a_s: float, beat_s: float, origin_s: float = 0.1) -> float:
    """The worst distance (ms) of B's hits, over the 4 s after a 2 s crossfade, from A's beats at `origin_s` + k beats.

    Only 4 s: pedalboard's stretch runs about 0.2 % off the factor asked (below the
    tracker's resolution), so further on B's beats drift by about 0.7 ms a beat.
    """
    join_a = int(join_a_s * RATE)
    hits = _hits(out[:, join_a + RATE:join_a + 5 * RATE])
    assert len(hits) >= 8
    beat = beat_s * RATE
    grid_err = ((hits + join_a + RATE - origin_s * RATE) / beat + 0.5) % 1.0 - 0.5
    return float(np.max(np.abs(grid_err)) * beat_s * 1000.0)


def test_b_follows_the_tempo_of_the_music_before_the_join_not_the_clip_average(tmp_path):
    """A band that pushes from 119.4 to 120 BPM for its last 30 s: the whole clip's grid averages about
    119.6, and B stretched to that drifts off A's last beats by a few ms a bar. B must run at 120."""
    beats_1 = 120
    first_s = beats_1 * 60.0 / 119.4
    first = drum_loop(119.4, first_s + 1.0, chords=False)[:, :int(round((first_s + 0.1) * RATE))]
    a = np.concatenate([first, drum_loop(120.0, 30.0, chords=False, offset=0.0)], axis=1)
    b = drum_loop(100.0, 16.0, chords=False, offset=0.23)
    _, side, out = _transition_of_files(tmp_path, a, b, "pushed", start_s=first_s + 24.0)
    info = side["prior"]
    assert abs(info["tempo_bpm"] / 120.0 - 1.0) < 0.001, info
    assert abs(info["tempo_a_clip_bpm"] / 120.0 - 1.0) > 0.001     # the whole clip's reading, recorded
    assert abs(info["stretch_factor"] - 1.2) < 0.01
    assert _b_off_a_grid_ms(out, info["join_a_s"], 0.5, origin_s=first_s + 0.1) < 10.0


def test_a_transition_follows_a_s_stronger_pulse_and_says_so_unless_the_daw_names_the_tempo(tmp_path):
    """Read at 123 BPM, A would have B (175 BPM) sped up by 41 % to 246; A's kicks say 184.6, a 5 % stretch
    that lands B's hits on them. The render warns of the choice; a DAW tempo overrides it."""
    a, b = kick_every_other_eighth(16.0), drum_loop(175.0, 16.0, chords=False, offset=0.23)
    followed, side, out = _transition_of_files(tmp_path, a, b, "followed")
    info = side["prior"]
    assert abs(info["stretch_factor"] - 184.6 / 175.0) < 0.02, info
    assert abs(info["tempo_a_other_reading_bpm"] / 123.0 - 1.0) < 0.01
    assert [w for w in followed.warnings if "--bpm 123.0" in w] == [w for w in side["warnings"] if "--bpm" in w]
    assert len([w for w in followed.warnings if "--bpm 123.0" in w]) == 1
    assert _b_off_a_grid_ms(out, info["join_a_s"], 2 * EIGHTH_S) < 10.0     # on A's kicks

    named, side, _ = _transition_of_files(tmp_path, a, b, "named", bpm=123.0)
    assert "tempo_a_other_reading_bpm" not in side["prior"] and abs(side["prior"]["tempo_bpm"] / 123.0 - 1.0) < 0.01
    assert not [w for w in named.warnings if "--bpm" in w]
    # A grid phase from the DAW names A's grid too: the rule would re-track A and lose it.
    gridded, side, _ = _transition_of_files(tmp_path, a, b, "gridded", beat_offset_s=0.1)
    assert "tempo_a_other_reading_bpm" not in side["prior"] and abs(side["prior"]["tempo_bpm"] / 123.0 - 1.0) < 0.01
    assert not [w for w in gridded.warnings if "--bpm" in w]


def test_clip_b_is_read_on_its_stronger_pulse_too_unless_its_tempo_is_given(tmp_path):
    """The same rule for B: its kicks say 184.6 BPM, so a 175 BPM A slows it 5 % (not 29 % toward 123's
    double), and its hits land on A's beats; `b_bpm` names B's tempo and turns the rule off."""
    a, b = drum_loop(175.0, 16.0, chords=False), kick_every_other_eighth(16.0, offset=0.23, hat=0.1)
    followed, side, out = _transition_of_files(tmp_path, a, b, "followed")
    info = side["prior"]
    assert abs(info["stretch_factor"] - 175.0 / 184.6) < 0.02, info
    assert abs(info["tempo_b_other_reading_bpm"] / 123.0 - 1.0) < 0.01
    assert len([w for w in followed.warnings if "--b-bpm 123.0" in w]) == 1
    assert _b_off_a_grid_ms(out, info["join_a_s"], 60.0 / 175.0) < 10.0

    named, side, _ = _transition_of_files(tmp_path, a, b, "named", b_bpm=123.0)
    assert "tempo_b_other_reading_bpm" not in side["prior"] and abs(side["prior"]["tempo_b_bpm"] / 123.0 - 1.0) < 0.01
    assert not [w for w in named.warnings if "--b-bpm" in w]


@pytest.mark.parametrize("late_ms", [-60.0, 17.0, 40.0])
def test_b_hits_that_come_late_on_the_timeline_are_measured_to_a_few_ms(late_ms):
    a = drum_loop(120.0, 12.0, chords=False)
    b = drum_loop(120.0, 12.0, chords=False, seed=3, offset=0.1 + late_ms / 1000.0)
    join, xf = 6 * RATE, 2 * RATE
    shift = onset_phase_shift(a.mean(axis=0), analyse(a, RATE), join, b.mean(axis=0), join, xf)
    assert abs(shift / RATE * 1000.0 - late_ms) < 3.0


def test_a_transition_corrects_a_tempo_the_short_clip_b_misjudged():
    """B's own 8 s give its tempo only roughly; the stretched B's grid must run at A's tempo."""
    from engine.prior.edits import _tempo_miss, transition_prior
    a = drum_loop(120.0, 20.0, chords=False)
    b = drum_loop(93.0, 8.0, chords=False, offset=0.17)
    src = make_sources(["a"], [a], RATE)[0]
    b2, an_b, _, _, info = transition_prior(src, b, "b", 16 * RATE, 2 * RATE, 2 * RATE)
    assert abs(info.extra["stretch_factor"] - 120.0 / 93.0) < 0.01
    assert abs(_tempo_miss(src.analysis, an_b)) < 0.01


@pytest.mark.parametrize("search_s", [0.0, 0.3])
def test_a_transition_moves_its_joins_no_further_than_the_request_allows(search_s):
    """Two loops a fraction of a beat out of phase: left free, the prior moves the joins to land
    B's hits on A's beats; `join_search_s` bounds how far (0: the producer's joins exactly)."""
    a = drum_loop(120.0, 16.0, chords=False)
    b = drum_loop(120.0, 16.0, chords=False, seed=3, offset=0.33)
    base = dict(task="transition", audio=(PCMAudio(a, RATE), PCMAudio(b, RATE)), start_s=10.37, b_start_s=3.11,
                crossfade_s=2.0, refine_strength=0.0)
    free = render_audio(RenderRequest(**base)).info
    assert abs(free["join_a_s"] - 10.37) > search_s or abs(free["join_b_s"] - 3.11) > search_s  # it does move them
    held = render_audio(RenderRequest(**base, join_search_s=search_s)).info
    assert held["stretch_factor"] == 1.0
    assert abs(held["join_a_s"] - 10.37) <= search_s + 1e-6, held["join_a_s"]
    assert abs(held["join_b_s"] - 3.11) <= search_s + 1e-6, held["join_b_s"]
    if search_s == 0.0:   # the producer's choice, said as such (not as a failure to find beats)
        assert held.get("fallback") is None and held["joins"] == "kept as requested (join_search_s 0)"


def test_tempo_match_folds_octaves():
    a = analyse(drum_loop(120.0, 12.0), RATE)
    b = analyse(drum_loop(62.0, 12.0), RATE)
    assert abs(tempo_match(a, b) - 120.0 / 124.0) < 0.03 or abs(tempo_match(a, b) - 120.0 / 62.0) < 0.06


def test_silent_context_falls_back_and_the_sidecar_says_so(tmp_path):
    silent = np.zeros((2, 8 * RATE), np.float32)
    out = tmp_path / "out.wav"
    result = render(RenderRequest(task="infill", audio=(PCMAudio(silent, RATE),), start_s=3.0, end_s=4.0,
                                  output=str(out), steps=4))
    side = json.loads(open(result.sidecar_path).read())
    assert side["prior"]["fallback"] == "the context around the region is silent"
    assert side["prior"]["fallback_to"] == "crossfade"      # the built-in model cannot generate music alone
    assert "used a plain crossfade instead" in " ".join(side["warnings"])


def test_a_clip_too_short_to_continue_from_itself_falls_back_clearly():
    clip = drum_loop(120.0, 1.5)
    out = render_audio(RenderRequest(task="continue", audio=(PCMAudio(clip, RATE),), duration_s=2.0, steps=4))
    assert "too short" in out.info["fallback"]
    assert out.info["fallback_to"] == "crossfade"
    assert out.audio.shape[1] == clip.shape[1] + 2 * RATE
    # the clip's last two seconds, looped: the continuation is as loud as the clip
    level = 10 * np.log10(np.mean(out.audio[:, clip.shape[1]:] ** 2) / np.mean(clip ** 2))
    assert abs(level) < 1.5


def test_explicit_generative_fallback_on_a_model_that_generates():
    clip = drum_loop(120.0, 1.5)
    out = render_audio(RenderRequest(task="continue", model="analytic", prior="similarity",
                                     audio=(PCMAudio(clip, RATE),), duration_s=1.0, steps=4))
    assert out.info["fallback_to"] == "generative"


def test_sources_extend_the_search_to_other_clips(tmp_path):
    """A gap whose material exists only in another clip of the session is filled from that clip."""
    from engine.audio_io import write_audio_atomic

    song = periodic_song(repeats=1)                        # 8 s, one phrase: nothing repeats inside it
    other = periodic_song(repeats=2)
    path = tmp_path / "other.wav"
    write_audio_atomic(path, other, RATE, bit_depth=32)
    damaged = song.copy()
    damaged[:, 3 * RATE:5 * RATE] = 0.0
    out = render_audio(RenderRequest(task="infill", audio=(PCMAudio(damaged, RATE),), start_s=3.0, end_s=5.0,
                                     sources=(str(path),), refine_strength=0.0, span="region"))
    assert out.info["segments"][0]["source"] == str(path)
    ref = song[:, 3 * RATE:5 * RATE]
    assert np.sqrt(np.mean((out.audio - ref) ** 2)) / np.sqrt(np.mean(ref ** 2)) < 0.05


def test_the_cli_says_when_the_prior_fell_back(tmp_path, capsys):
    from engine.audio_io import write_audio_atomic
    from engine.cli import main

    src = tmp_path / "quiet.wav"
    write_audio_atomic(src, np.zeros((2, 6 * RATE), np.float32), RATE, bit_depth=32)
    code = main(["infill", str(src), "--start", "2", "--end", "3", "--steps", "2", "-o", str(tmp_path / "o.wav"),
                 "--quiet"])
    assert code == 0
    err = capsys.readouterr().err
    assert "the retrieval prior was not used (the context around the region is silent); used a plain crossfade" in err


@pytest.mark.parametrize("task", ["infill", "continue"])
def test_a_weak_match_is_a_warning_and_a_real_one_is_not(tmp_path, task):
    """White noise has nothing to match: the copy is a guess, and the render says so (the sidecar and the CLI
    carry the warning); the periodic song's copy is exact, and says nothing."""
    from engine.audio_io import write_audio_atomic

    noise = (0.1 * np.random.default_rng(0).standard_normal((2, 10 * RATE))).astype(np.float32)
    fields = {"infill": dict(start_s=4.0, end_s=5.0), "continue": dict(duration_s=3.0)}[task]
    warned = []
    for name, audio in (("noise", noise), ("song", periodic_song())):
        src = tmp_path / f"{name}.wav"
        write_audio_atomic(src, audio, RATE, bit_depth=32)
        result = render(RenderRequest(task=task, audio=(str(src),), output=str(tmp_path / f"{name}-out.wav"),
                                      refine_strength=0.0, **fields))
        side = json.loads(open(result.sidecar_path).read())
        warned.append([w for w in side["warnings"] if "hardly better than a typical span" in w])
        assert warned[-1] == [w for w in result.warnings if "hardly better" in w]
    assert len(warned[0]) == 1 and warned[1] == []


def test_seams_keep_their_loudness_for_correlated_and_unrelated_material():
    from engine.prior.edits import matched_crossfade

    rng = np.random.default_rng(0)
    a = rng.standard_normal((2, 4410)).astype(np.float32)
    for b in (a.copy(), rng.standard_normal((2, 4410)).astype(np.float32)):   # in phase, unrelated
        mid = matched_crossfade(a, b)[:, 1800:2600]
        level = 10 * np.log10(np.mean(mid ** 2) / np.mean(a ** 2))
        assert abs(level) < 0.5


@pytest.mark.parametrize("content", [None, b"not audio at all"])
def test_a_missing_or_corrupt_source_is_a_coded_error_and_nothing_is_written(tmp_path, content):
    from engine.errors import SegueError

    song = periodic_song(repeats=2)
    source = tmp_path / "other.wav"
    if content is not None:
        source.write_bytes(content)
    out = tmp_path / "out.wav"
    with pytest.raises(SegueError) as err:
        render(RenderRequest(task="infill", audio=(PCMAudio(song, RATE),), start_s=3.0, end_s=5.0,
                             sources=(str(source),), output=str(out)))
    assert err.value.code != "internal"
    assert not out.exists() and not out.with_suffix(".json").exists()


def test_a_continuation_jump_prefers_the_landing_whose_sound_goes_on_like_the_streams_end():
    """Among candidates whose context scores tie, the junction decides: the stream ends on a
    tone, both landings are preceded by that tone, and the one followed by it (not by noise)
    is heard as seamless."""
    from engine.prior.edits import _rank_by_junction
    from engine.prior.search import Candidate

    tt = np.arange(RATE) / RATE
    tone = (0.3 * np.sin(2 * np.pi * 440 * tt)).astype(np.float32)
    noise = (0.3 * np.random.default_rng(0).standard_normal(RATE)).astype(np.float32)
    half = RATE // 2
    into_noise = np.stack([np.concatenate([tone[:half], noise[:half]])] * 2)
    on_tone = np.stack([tone] * 2)
    stream = np.stack([tone[:half]] * 2)
    placed = [(Candidate(0, 0, score=1.00, typical=2.0), half), (Candidate(1, 0, score=1.05, typical=2.0), half)]
    ranked = _rank_by_junction(placed, stream, [into_noise, on_tone], RATE)
    assert ranked[0][0].source == 1, "the landing followed by noise must lose to the one followed by the tone"

    far = [(Candidate(0, 0, score=1.00, typical=2.0), half), (Candidate(1, 0, score=2.00, typical=2.0), half)]
    assert _rank_by_junction(far, stream, [into_noise, on_tone], RATE)[0][0].source == 0, \
        "a clearly better musical match is not traded for a smoother junction"


def test_analyses_are_remembered_by_content_until_the_cache_is_cleared():
    from engine.prior.edits import cached_analysis, clear_analysis_cache

    audio = drum_loop(120.0, 6.0)
    first = cached_analysis(audio, RATE)
    assert cached_analysis(audio.copy(), RATE) is first      # same samples, same analysis
    clear_analysis_cache()
    again = cached_analysis(audio, RATE)
    assert again is not first and again.tempo_bpm == first.tempo_bpm


def test_pedalboards_stretch_of_a_clips_start_is_the_start_of_its_whole_stretch():
    """What lets a transition read a long B's joins on its start and stretch the whole clip once: all
    but the prefix's last tens of milliseconds (the stretcher's flush) are the same samples."""
    from engine.prior.edits import STRETCH_FLUSH_S, _time_stretch
    b = drum_loop(100.0, 12.0, seed=5)
    whole, start = _time_stretch(b, RATE, 1.2), _time_stretch(b[:, :6 * RATE], RATE, 1.2)
    n = start.shape[1] - STRETCH_FLUSH_S * RATE
    assert np.array_equal(whole[:, :n], start[:, :n])
    assert not np.allclose(whole[:, :start.shape[1]], start, atol=1e-6)   # the flush itself differs


def test_a_long_clip_b_is_read_on_its_start_stretched_whole_once_and_says_so_as_it_goes(tmp_path, monkeypatch):
    """Its joins are chosen on the part of B they can reach; the output still holds the whole of B at
    A's tempo, on A's beats; each long step is announced to the progress callback, where a cancel stops it."""
    import engine.prior.edits as edits
    from engine.errors import Cancelled
    from engine.progress import CancelToken
    monkeypatch.setattr(edits, "B_READ_AFTER_JOIN_S", 4.0)     # B's read part: 3 s + 1.5 x (4 + 4) s + 2 s of 30
    a = drum_loop(120.0, 16.0, chords=False)
    b = drum_loop(100.0, 30.0, chords=False, offset=0.23)
    req = RenderRequest(task="transition", audio=(PCMAudio(a, RATE), PCMAudio(b, RATE)), start_s=12.0, b_start_s=3.0,
                        crossfade_s=2.0, refine_strength=0.0)
    stages = []
    out = render_audio(req, progress=lambda ev: stages.append(ev.stage) if ev.stage != "sampling" else None)
    info = out.info
    assert abs(info["stretch_factor"] - 1.2) < 0.01 and "stretch_prefix_difference" not in info
    assert [s for s in stages if s.startswith("stretching clip B")] and stages[-1].startswith("stretching the whole")
    assert stages[-1].endswith("30 s)") and all(s.endswith("17 s)") for s in stages if s.startswith("stretching clip B"))
    join_a = int(info["join_a_s"] * RATE)
    expected = join_a + (b.shape[1] / info["stretch_factor"] - info["join_b_s"] * RATE)
    assert abs(out.audio.shape[1] - expected) < 0.01 * RATE          # all of B, at A's tempo
    assert _b_off_a_grid_ms(out.audio, info["join_a_s"], 0.5) < 10.0

    token, stretched_s = CancelToken(), []
    stretch = edits._time_stretch
    monkeypatch.setattr(edits, "_time_stretch", lambda x, *args: stretched_s.append(x.shape[1] / RATE) or stretch(x, *args))

    def cancel_at_the_whole_stretch(ev):
        if ev.stage.startswith("stretching the whole"):
            token.cancel()
    with pytest.raises(Cancelled):
        render_audio(req, progress=cancel_at_the_whole_stretch, cancel=token)
    assert stretched_s and max(stretched_s) < 18.0             # stopped before the whole clip was stretched


def test_a_running_stretch_lets_a_cancel_through_and_otherwise_gives_the_same_samples():
    """A whole track's stretch takes tens of seconds in native code; it runs on a thread of its own
    while the render polls for a cancel, so a cancel need not wait for it."""
    from engine.errors import Cancelled
    from engine.prior.edits import _time_stretch
    b = drum_loop(100.0, 10.0, seed=2)
    polls = []

    def cancelled() -> None:
        polls.append(1)
        raise Cancelled("the job was cancelled")
    with pytest.raises(Cancelled):
        _time_stretch(b, RATE, 1.2, cancelled)
    assert polls == [1]
    assert np.array_equal(_time_stretch(b, RATE, 1.2, lambda: None), _time_stretch(b, RATE, 1.2))
