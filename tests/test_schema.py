"""One request schema: every front end offers each field as engine/schema.py declares it, and bad values get codes.

The CLI, `segue-client`, the OSC parser and the presets are generated from
`engine.schema.FIELDS`; these tests fail when one of them gains a hand-written
option of its own, loses a field, or documents a field differently from the
declaration (PROTOCOL.md's table included).
"""
import argparse
import dataclasses
from pathlib import Path

import pytest

from bridge import client as client_mod
from bridge.osc_server import OPTIONS, decode_osc
from engine import presets, schema
from engine.cli import build_parser
from engine.errors import InvalidRequest, SegueError
from engine.request import RenderRequest, request_from_mapping

ROOT = Path(__file__).resolve().parents[1]
# command-line options that are not request fields
CLI_OWN = {"help", "audio", "audio_b", "play", "quiet", "json"}
CLIENT_OWN = {"help", "task", "audio", "endpoint", "token", "timeout", "id", "json", "quiet"}


def example(spec: schema.FieldSpec):
    """A valid value for the field other than its default (None where the field has no flag)."""
    fixed = {"start_s": 1.0, "end_s": 2.0, "duration_s": 1.5, "b_start_s": 0.5, "beat_offset_s": 0.25,
             "strength": 0.5, "reference": "/ref.wav", "output": "/out/x.wav", "preset": "infill",
             "model": "analytic", "prompt": "warm piano", "seed": 7, "steps": 9, "sources": ("/a.wav", "/b.wav")}
    if spec.name in fixed:
        return fixed[spec.name]
    if spec.kind == "bool":
        return not spec.default
    if spec.kind == "choice":
        return next(c for c in spec.choices if c != spec.default)
    if spec.kind == "pair":
        return (0.25, 0.75)
    if spec.kind in ("float", "time"):
        value = spec.lo + (min(spec.hi, spec.lo + 1.0) - spec.lo) / 4
        return value if value != spec.default else spec.lo
    if spec.kind == "int":
        return spec.lo + 1
    raise AssertionError(spec.name)


def as_text(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return str(value)


def argv_for(spec: schema.FieldSpec, value) -> list[str]:
    flag = spec.cli[0]
    if spec.kind == "bool":
        return [flag]
    if spec.kind == "pair":
        return [flag, *map(str, value)]
    if spec.kind == "paths":
        return [a for v in value for a in (flag, v)]
    return [flag, str(value)]


def options_of(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {a.dest: a for a in parser._actions}


def subparser(task: str) -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[task]


def test_the_request_dataclass_is_the_declaration():
    fields = dataclasses.fields(RenderRequest)
    assert [f.name for f in fields] == [s.name for s in schema.FIELDS]
    for f, s in zip(fields, schema.FIELDS):
        assert (f.default is dataclasses.MISSING) == s.required, s.name
        if not s.required:
            assert f.default == s.default, s.name


@pytest.mark.parametrize("task", schema.TASKS)
def test_each_segue_subcommand_offers_exactly_the_declared_fields(task):
    opts = options_of(subparser(task))
    expected = {s.name: s for s in schema.FIELDS
                if s.cli and (s.tasks is None or task in s.tasks)}
    assert set(opts) - CLI_OWN == set(expected), "a subcommand option that is not declared, or a field missing"
    for name, spec in expected.items():
        action = opts[name]
        assert tuple(action.option_strings) == spec.cli, name
        assert action.required == (task in spec.required_for), name
        if spec.kind == "choice":
            assert tuple(action.choices) == spec.choices, name
        assert spec.help.split(" (")[0][:20] in (action.help or "") or spec.flag_help, name


def test_segue_client_offers_every_declared_field_with_the_same_flags():
    opts = options_of(client_mod.build_parser())
    expected = {s.name: s for s in schema.FIELDS if s.cli}
    assert set(opts) - CLIENT_OWN == set(expected)
    for name, spec in expected.items():
        assert tuple(opts[name].option_strings) == spec.cli, name


def test_the_osc_parser_takes_every_declared_key_and_only_those():
    assert OPTIONS == {s.osc: s for s in schema.FIELDS if s.osc}
    assert all(s.osc for s in schema.FIELDS if s.cli), "a field on the command line but not in OSC"


def test_presets_check_exactly_the_fields_declared_for_presets():
    assert set(presets._SETTINGS) == {s.name for s in schema.FIELDS if s.preset}


def test_protocol_md_holds_the_generated_field_table():
    doc = (ROOT / "bridge" / "PROTOCOL.md").read_text()
    assert schema.markdown_table() in doc, "regenerate it: python -m engine.schema"


def test_every_flag_of_segue_reaches_the_request():
    """Each flag, given a value other than its default, arrives in the request unchanged."""
    from engine.cli import request_fields

    for task in schema.TASKS:
        specs = [s for s in schema.FIELDS if s.cli and (s.tasks is None or task in s.tasks)
                 and s.name not in ("native_inpaint", "preset")]
        argv = [task, "/in/a.wav", *(["/in/b.wav"] if task == "transition" else [])]
        values = {s.name: example(s) for s in specs}
        if task == "style":
            values["end_s"] = 2.0
        for s in specs:
            argv += argv_for(s, values[s.name])
        fields = request_fields(build_parser().parse_args(argv))
        request = request_from_mapping(fields)
        for name, value in values.items():
            assert getattr(request, name) == value, (task, name)


def test_every_osc_option_reaches_the_request():
    specs = [s for s in schema.FIELDS if s.osc and s.name not in ("native_inpaint", "preset", "duration_s")]
    values = {s.name: example(s) for s in specs}
    args = ["/in/a.wav", 1.0, 2.0]
    for s in specs:
        if s.kind == "paths":
            args += [f"{s.osc}={v}" for v in values[s.name]]
        else:
            args.append(f"{s.osc}={as_text(values[s.name])}")
    msg = decode_osc("/segue/regenerate", args)
    request = request_from_mapping(msg.params)
    for name, value in values.items():
        assert getattr(request, name) == value, name


def test_osc_text_that_is_not_of_the_field_type_is_a_bad_message():
    for arg in ("steps=1.5", "data_consistency=maybe", "recon_t_range=0.5", "bpm=fast"):
        with pytest.raises(SegueError) as e:
            decode_osc("/segue/infill", ["/a.wav", 1.0, 2.0, arg])
        assert e.value.code == "bad_message", arg


def test_segue_client_sends_every_flag_and_leaves_a_relative_output_to_the_daemon():
    specs = [s for s in schema.FIELDS if s.cli]
    argv = ["regenerate", "a.wav"]
    values = {s.name: example(s) for s in specs}
    values.update(output="mine.wav", reference="ref.wav", sources=("x.wav",))
    for s in specs:
        argv += argv_for(s, values[s.name])
    params = client_mod.params_from_args(client_mod.build_parser().parse_args(argv))
    assert params["audio"] == [str(Path("a.wav").resolve())]
    assert params["output"] == "mine.wav"
    assert params["reference"] == str(Path("ref.wav").resolve())
    assert params["sources"] == [str(Path("x.wav").resolve())]
    for name, value in values.items():
        if name not in ("output", "reference", "sources"):
            assert params[name] == value, name


BASE = {"audio": ["/in/a.wav"]}


@pytest.mark.parametrize("fields", [
    {"task": "continue", "duration_s": 1.0, "end_s": []},
    {"task": "continue", "duration_s": 1.0, "end_s": "x"},
    {"task": "transition", "audio": ["/a.wav", "/b.wav"], "end_s": []},
    {"task": "transition", "audio": ["/a.wav", "/b.wav"], "end_s": "x"},
    {"task": "style", "reference": True},
    {"task": "style", "reference": 5},
    {"task": "style", "reference": ["/etc/passwd"]},
    {"task": "infill", "start_s": 1.0, "end_s": 2.0, "preset": {"name": "infill"}},
    {"task": "infill", "start_s": 1.0, "end_s": 2.0, "sources": "/one.wav"},
    {"task": "infill", "start_s": 1.0, "end_s": 2.0, "sources": [3]},
    {"task": "infill", "start_s": 1.0, "end_s": 2.0, "bit_depth": "24"},
    {"task": "infill", "start_s": 1.0, "end_s": 2.0, "overwrite": "yes"},
    {"task": "infill", "start_s": 1.0, "end_s": 2.0, "recon_t_range": "0,1"},
])
def test_values_of_the_wrong_type_are_invalid_requests_not_internal_errors(fields):
    with pytest.raises(InvalidRequest) as e:
        request_from_mapping({**BASE, **fields})
    assert e.value.code == "invalid_request"


@pytest.mark.parametrize("fields,words", [
    ({"task": "transition", "audio": ["/a.wav", "/b.wav"], "join_search_s": -1.0}, "within [0.0, 16.0]"),
    ({"task": "transition", "audio": ["/a.wav", "/b.wav"], "join_search_s": 17.0}, "within [0.0, 16.0]"),
    ({"task": "transition", "audio": ["/a.wav", "/b.wav"], "join_search_s": "far"}, "must be a number"),
    ({"task": "style", "reference": "/r.wav", "texture_iterations": 1001}, "within [0, 1000]"),
    ({"task": "style", "reference": "/r.wav", "texture_iterations": -1}, "within [0, 1000]"),
    ({"task": "style", "reference": "/r.wav", "texture_iterations": 2.5}, "must be an integer"),
    ({"task": "transition", "audio": ["/a.wav", "/b.wav"], "b_bpm": 10.0}, "within [20.0, 400.0]"),
    ({"task": "transition", "audio": ["/a.wav", "/b.wav"], "b_bpm": float("nan")}, "must be finite"),
    ({"task": "transition", "audio": ["/a.wav", "/b.wav"], "b_bpm": "fast"}, "must be a number"),
])
def test_join_search_texture_iterations_and_b_bpm_refuse_values_outside_their_declaration(fields, words):
    with pytest.raises(InvalidRequest) as e:
        request_from_mapping({**BASE, **fields})
    assert e.value.code == "invalid_request" and words in e.value.message


def test_a_preset_name_over_255_characters_is_refused_before_any_lookup():
    with pytest.raises(SegueError) as e:
        request_from_mapping({**BASE, "task": "infill", "start_s": 1.0, "end_s": 2.0, "preset": "p" * 300})
    assert e.value.code == "bad_preset" and "255" in e.value.message


@pytest.mark.parametrize("fields,words", [
    ({"task": "infill", "start_s": 3700.0, "end_s": 3701.0}, "too long"),
    ({"task": "continue", "duration_s": 1.0, "start_s": -1.0}, "within [0, 3600] s"),
    ({"task": "continue", "duration_s": 4000.0}, "3600 s"),
    ({"task": "transition", "audio": ["/a.wav", "/b.wav"], "b_start_s": 5000.0}, "too long"),
    ({"task": "infill", "start_s": 1.0, "end_s": 1.01}, "at least 50 ms"),
    ({"task": "infill", "start_s": 0.0, "end_s": 200.0}, "at most 120 s"),
])
def test_times_outside_the_limits_are_region_out_of_range(fields, words):
    with pytest.raises(InvalidRequest) as e:
        request_from_mapping({**BASE, **fields})
    assert e.value.code == schema.REGION_OUT_OF_RANGE and words in e.value.message


def test_a_request_from_json_equals_the_same_request_from_python():
    a = request_from_mapping({**BASE, "task": "infill", "start_s": 1, "end_s": 2, "recon_t_range": [0, 1],
                              "sources": ["/s.wav"]})
    b = RenderRequest(task="infill", audio=("/in/a.wav",), start_s=1.0, end_s=2.0, sources=("/s.wav",))
    assert a == b and isinstance(a.start_s, float) and a.recon_t_range == (0.0, 1.0)


def test_the_default_output_is_32_bit_float():
    assert RenderRequest(task="infill", audio=("/a.wav",), start_s=1.0, end_s=2.0).bit_depth == 32


def test_the_daemon_confines_sources_like_audio_and_places_a_relative_output_in_its_folder(tmp_path):
    from bridge.paths import PathPolicy
    from engine.errors import PathNotAllowed

    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "in" / "a.wav").write_bytes(b"RIFF")
    (tmp_path / "secret.wav").write_bytes(b"RIFF")
    policy = PathPolicy.create([tmp_path / "in"], tmp_path / "out", 1 << 20)
    params = {"task": "infill", "audio": str(tmp_path / "in" / "a.wav"), "output": "mine.wav",
              "sources": [str(tmp_path / "in" / "a.wav")]}
    confined = policy.confine(params)
    assert confined["output"] == str((tmp_path / "out" / "mine.wav").resolve())
    assert confined["sources"] == [str((tmp_path / "in" / "a.wav").resolve())]
    with pytest.raises(PathNotAllowed) as e:
        policy.confine({**params, "sources": [str(tmp_path / "secret.wav")]})
    assert "--allow-root" in e.value.message
    with pytest.raises(PathNotAllowed):
        policy.confine({**params, "output": "../escape.wav"})


def test_the_readme_offers_what_the_schema_declares():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "|".join(schema.SAMPLER_NAMES) in readme        # the --sampler choices
    assert f"{schema.MAX_DURATION_S:.0f} s" in readme and f"{schema.MAX_REGION_S:.0f} s" in readme
    assert "--bit-depth " + "|".join(map(str, schema.BIT_DEPTHS)) in readme


def test_missing_required_fields_are_named():
    for fields, words in (({}, "task and audio are required"), ({"task": "infill"}, "audio is required"),
                          ({"audio": "/a.wav"}, "task is required")):
        with pytest.raises(InvalidRequest, match=words) as e:
            request_from_mapping(fields)
        assert e.value.code == "invalid_request"
