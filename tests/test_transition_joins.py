"""What `segue-client --json` says about a transition's joins, checked against the audio the engine rendered.

A DAW script places B so that, at the clip's end, it plays `b_at_clip_end_s` of B's file. These
tests render the same transition twice (the clip alone, and the whole timeline) and check that
this is where the rendered timeline really is in B's file: sample for sample when B is not
stretched, beat for beat when it is.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from bridge.client import JobResult
from bridge.transition_joins import read_transition_joins, transition_joins
from engine.render import render
from engine.request import request_from_mapping
from support.daw_support import read_wav, write_wav
from support.transition_loops import loops

RATE = 44100
REQUEST = dict(task="transition", start_s=5.37, b_start_s=1.61, crossfade_s=2.5, model="builtin", steps=4,
               prior="similarity", refine_strength=0.0)


def _render(tmp_path, case: str, span: str) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray]:
    a, b = loops(case)
    pa, pb = write_wav(tmp_path / f"a-{case}.wav", a, RATE), write_wav(tmp_path / f"b-{case}.wav", b, RATE)
    out = tmp_path / f"{case}-{span}.wav"
    result = render(request_from_mapping(dict(REQUEST, audio=[str(pa), str(pb)], span=span, output=str(out))))
    sidecar = json.loads(open(result.sidecar_path).read())
    return sidecar, read_wav(out)[0], a, b


def test_joins_the_engine_moved_say_where_b_continues_sample_for_sample(tmp_path):
    clip_sc, clip, a, b = _render(tmp_path, "moved", "region")
    joins = transition_joins(clip_sc)
    assert joins is not None and joins.moved and joins.stretch_factor == 1.0
    assert abs(joins.join_a_s - 5.37) > 0.05          # the engine chose other joins than asked
    _, full, _, _ = _render(tmp_path, "moved", "full")
    clip_end = int(round((clip_sc["offset_s"] + clip_sc["duration_s"]) * RATE))
    # the whole timeline past the clip is B's file, from the sample the client names
    at = int(round(joins.b_at_clip_end_s * RATE))
    n = min(full.shape[1] - clip_end, b.shape[1] - at)
    assert n > RATE
    np.testing.assert_allclose(full[:, clip_end:clip_end + n], b[:, at:at + n], atol=1e-4)
    # and the clip itself is that timeline's crossfade, ending where B takes over
    np.testing.assert_allclose(clip, full[:, clip_end - clip.shape[1]:clip_end], atol=1e-4)


def _hits(x: np.ndarray, threshold: float = 0.2) -> np.ndarray:
    env = np.abs(x.mean(axis=0))
    out, last = [], -RATE
    for i in np.nonzero(env > threshold)[0]:
        if i - last > int(0.05 * RATE):
            out.append(i)
        last = i
    return np.array(out)


def test_a_stretched_b_continues_from_the_beat_its_stretched_copy_had_reached(tmp_path):
    clip_sc, _, _, _ = _render(tmp_path, "stretched", "region")
    joins = transition_joins(clip_sc)
    assert joins is not None and joins.moved and joins.stretch_factor == pytest.approx(1.2, abs=0.03)
    _, full, _, _ = _render(tmp_path, "stretched", "full")
    clip_end = clip_sc["offset_s"] + clip_sc["duration_s"]
    # B alone past the clip: its hits, mapped back through the factor from where the client says the
    # clip's end is in B's file, land on B's own beat grid (0.23 s + k * 0.6 s)
    hits = _hits(full[:, int(clip_end * RATE):]) / RATE
    assert len(hits) >= 2
    in_b = joins.b_at_clip_end_s + hits * joins.stretch_factor
    grid_err = ((in_b - 0.23) / 0.6 + 0.5) % 1.0 - 0.5
    assert np.max(np.abs(grid_err)) * 0.6 < 0.012, in_b


def test_without_the_prior_the_requested_joins_stand():
    sidecar = {"request": {"task": "transition", "start_s": 4.0, "b_start_s": 1.5, "crossfade_s": 2.0,
                           "span": "region"}, "prior": {}, "offset_s": 3.0, "duration_s": 2.0}
    joins = transition_joins(sidecar)
    assert (joins.join_a_s, joins.b_join_s, joins.stretch_factor, joins.b_at_clip_end_s) == (4.0, 1.5, 1.0, 2.5)
    assert not joins.moved
    # no start_s: the join is A's end, the middle of a region-span clip
    no_start = dict(sidecar, request=dict(sidecar["request"], start_s=None))
    assert transition_joins(no_start).join_a_s == 4.0
    assert transition_joins({"request": {"task": "infill"}, "offset_s": 0, "duration_s": 1}) is None


def test_the_client_json_of_a_transition_carries_its_joins_and_sidecar(tmp_path):
    clip_sc, _, _, _ = _render(tmp_path, "stretched", "region")
    path = str(tmp_path / "stretched-region.wav")
    sidecar = str(tmp_path / "stretched-region.json")
    out = JobResult.from_reply("j", {"path": path, "sidecar_path": sidecar, "offset_s": clip_sc["offset_s"],
                                     "duration_s": clip_sc["duration_s"], "sample_rate": RATE}).to_json()
    assert out["sidecar_path"] == sidecar
    assert out["transition"] == read_transition_joins(sidecar).to_json()
    assert out["transition"]["moved"] is True
    # a daemon on another machine: no readable sidecar, so no joins (scripts keep the requested ones)
    gone = JobResult.from_reply("j", {"path": path, "sidecar_path": str(tmp_path / "nope.json"),
                                      "offset_s": 0.0, "duration_s": 1.0}).to_json()
    assert "transition" not in gone
