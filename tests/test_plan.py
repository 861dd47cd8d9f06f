"""A request is resolved against its model once (the plan); the sidecar records it, and a rerun reproduces the file."""
import json
import subprocess
import sys

import numpy as np
import pytest

from engine.audio_io import load_audio, write_audio_atomic
from engine.demo import demo_clip
from engine.errors import InvalidRequest
from engine.plan import plan_render
from engine.render import get_model, render, rerun_request
from engine.request import PCMAudio, RenderRequest

RATE = 44100


@pytest.fixture()
def song(tmp_path):
    path = tmp_path / "song.wav"
    write_audio_atomic(path, demo_clip(3.0), RATE)
    return path


def segue(*args):
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], capture_output=True, text=True, timeout=300)


def test_the_plan_takes_the_requests_values_and_the_models_defaults_for_the_rest():
    model = get_model("analytic")
    r = RenderRequest(task="infill", audio=("/a.wav",), start_s=1.0, end_s=2.0, model="analytic")
    plan = plan_render(r, model)
    assert (plan.steps, plan.step_mode) == (model.default_steps, model.default_step_mode)
    assert plan.guidance_scale == model.default_scale(model.default_step_mode)
    assert plan.prior == getattr(model, "default_prior", "none")
    own = plan_render(r.replace(steps=5, step_mode="fixed", guidance_scale=0.5, prior="none"), model)
    assert (own.steps, own.step_mode, own.guidance_scale, own.prior) == (5, "fixed", 0.5, "none")
    applied = plan.apply(r)
    assert applied.steps == plan.steps and applied.guidance_scale == plan.guidance_scale


def test_the_sidecar_records_the_plan_and_no_default_is_left_null(song, tmp_path):
    out = tmp_path / "out.wav"
    result = render(RenderRequest(task="infill", audio=(str(song),), start_s=1.0, end_s=2.0, model="analytic",
                                  output=str(out)))
    side = json.loads((tmp_path / "out.json").read_text())
    model = get_model("analytic")
    assert side["request"]["steps"] == model.default_steps == side["plan"]["steps"]
    assert side["request"]["step_mode"] == side["plan"]["step_mode"] == model.default_step_mode
    assert side["request"]["guidance_scale"] == side["plan"]["guidance_scale"]
    assert side["plan"]["schedule"] == "cosine" and side["plan"]["model"] == "analytic"
    assert isinstance(side["prior"], dict) and side["warnings"] == []
    assert result.warnings == ()


def test_segue_rerun_reproduces_the_file_bit_for_bit(song, tmp_path):
    out = tmp_path / "out.wav"
    r = segue("regenerate", str(song), "--start", "1", "--end", "2", "--model", "analytic", "--steps", "5",
              "--seed", "9", "-o", str(out), "-q")
    assert r.returncode == 0, r.stderr
    r = segue("rerun", str(tmp_path / "out.json"), "-q")
    assert r.returncode == 0, r.stderr
    again = tmp_path / "out.rerun.wav"
    assert r.stdout.strip() == str(again)
    assert again.read_bytes() == out.read_bytes()


def test_a_rerun_does_not_depend_on_the_defaults_of_the_version_that_reruns_it(song, tmp_path):
    """Change the model's defaults after the render: the rerun still gives the same samples, a fresh request not."""
    model = get_model("analytic")
    request = RenderRequest(task="infill", audio=(str(song),), start_s=1.0, end_s=2.0, model="analytic",
                            output=str(tmp_path / "first.wav"))
    first = load_audio(render(request, model=model).path)
    sidecar = json.loads((tmp_path / "first.json").read_text())
    saved = (model.default_steps, model.default_guidance_scale)
    try:
        model.default_steps, model.default_guidance_scale = 7, 0.9
        rerun = rerun_request(sidecar, output=str(tmp_path / "rerun.wav"))
        again = load_audio(render(rerun, model=model).path)
        fresh = load_audio(render(request.replace(output=str(tmp_path / "fresh.wav")), model=model).path)
    finally:
        model.default_steps, model.default_guidance_scale = saved
    assert np.array_equal(again, first)
    assert not np.array_equal(fresh, first)


def test_rerun_refuses_what_it_cannot_reproduce(tmp_path):
    with pytest.raises(InvalidRequest) as e:
        rerun_request({"not": "a sidecar"})
    assert e.value.code == "bad_sidecar"
    pcm = RenderRequest(task="infill", audio=(PCMAudio(demo_clip(3.0), RATE),), start_s=1.0, end_s=2.0)
    with pytest.raises(InvalidRequest, match="PCM"):
        rerun_request({"request": pcm.to_json()})
    r = segue("rerun", str(tmp_path / "none.json"))
    assert r.returncode == 2 and "error [file_not_found]" in r.stderr


def test_integer_output_warns_when_it_clips_and_float_output_keeps_the_level(tmp_path):
    loud = demo_clip(3.0)
    loud = (loud / np.abs(loud).max() * 1.5).astype(np.float32)     # decodes above full scale
    base = dict(task="infill", audio=(PCMAudio(loud, RATE),), start_s=1.0, end_s=2.0, model="analytic", steps=4)
    as_float = render(RenderRequest(**base, output=str(tmp_path / "f.wav")))
    assert as_float.warnings == ()
    kept = load_audio(as_float.path)
    peak = np.abs(loud[:, :RATE]).max()
    assert peak > 1.0 and np.abs(kept[:, :RATE]).max() == pytest.approx(peak, rel=1e-6)  # untouched, not clipped
    as_int = render(RenderRequest(**base, bit_depth=24, output=str(tmp_path / "i.wav")))
    assert len(as_int.warnings) == 1 and "clipped by the 24-bit output" in as_int.warnings[0]
    assert json.loads((tmp_path / "i.json").read_text())["warnings"] == list(as_int.warnings)


def test_the_texture_match_is_planned_on_for_a_reference_clip_and_off_after_a_preset():
    """Toward a --reference clip the texture match measurably helps (distance and chroma), after a preset's
    chain it does not: the plan turns it on only for the first, and a request or preset can say otherwise."""
    model = get_model("builtin")
    ref = RenderRequest(task="style", audio=("/a.wav",), reference="/ref.wav")
    assert plan_render(ref, model).texture_iterations == 60
    assert plan_render(ref.replace(texture_iterations=0), model).texture_iterations == 0
    assert plan_render(ref.replace(preset="dark-ambient"), model).texture_iterations == 0
    assert plan_render(ref.replace(preset="dark-ambient", texture_iterations=30), model).texture_iterations == 30
    assert plan_render(RenderRequest(task="infill", audio=("/a.wav",), start_s=1.0, end_s=2.0),
                       model).texture_iterations == 0
    assert plan_render(ref, model).apply(ref).texture_iterations == 60     # what the task and the sidecar read
