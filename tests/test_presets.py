"""Presets: the shipped ones are valid and meaningful, and bad ones fail with clear errors."""
from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from engine import presets as P
from engine.errors import PresetError
from engine.request import request_from_mapping

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "presets"))
import build_references  # noqa: E402

STYLE_NAMES = ["lofi-warm", "bright-synth", "dark-ambient", "percussive", "strings-pad", "piano-clean"]


@pytest.fixture(scope="module")
def embedder():
    import torch

    torch.set_num_threads(1)
    from engine.embedders import load_embedder

    return load_embedder("dsp")


@pytest.fixture
def tmp_presets(tmp_path, monkeypatch):
    """An empty user preset folder searched before the built-in one."""
    d = tmp_path / "presets"
    d.mkdir()
    monkeypatch.setenv(P.ENV_PRESET_PATH, str(d))
    return d


def write(d: Path, name: str, text: str) -> Path:
    p = d / f"{name}.toml"
    p.write_text(text)
    return p


def test_shipped_presets_cover_every_task_and_six_styles():
    names = P.list_presets()
    loaded = [P.load_preset(n) for n in names]
    assert {p.task for p in loaded if p.kind == "task"} == {"infill", "regenerate", "continue", "transition"}
    styles = sorted(p.name for p in loaded if p.kind == "style")
    assert styles == sorted(STYLE_NAMES)


@pytest.mark.parametrize("name", P.list_presets())
def test_every_shipped_preset_becomes_a_valid_request(name):
    preset = P.load_preset(name)
    fields = {"task": preset.task, "audio": ["a.wav", "b.wav"] if preset.task == "transition" else ["a.wav"],
              "start_s": 1.0, "end_s": 3.0, "duration_s": 4.0}
    if preset.task not in ("infill", "regenerate", "style"):
        fields.pop("end_s")
    if preset.task != "continue":
        fields.pop("duration_s")
    req = request_from_mapping(P.apply_preset(fields, name))
    assert req.preset == name
    for key, value in preset.settings.items():
        assert getattr(req, key) == value
    if preset.kind == "style":
        assert req.reference_embedding == preset.reference.vector
        assert len(req.reference_embedding) == 274


def test_task_preset_values_reach_the_request():
    fields = P.preset_to_request_fields(P.load_preset("infill-fast"))
    assert fields["steps"] == 12 and fields["context_s"] == 1.5 and fields["seam_ms"] == 30.0
    assert fields["preset"] == "infill-fast"
    assert P.preset_to_request_fields(P.load_preset("regenerate-subtle"))["mix_k"] == 0.6
    assert P.preset_to_request_fields(P.load_preset("transition-long"))["crossfade_s"] == 6.0


def test_explicit_request_values_win_over_the_preset():
    merged = P.apply_preset({"task": "infill", "steps": 7, "seed": 3, "guidance_scale": None}, "infill-quality")
    assert merged["steps"] == 7 and merged["seed"] == 3
    assert merged["recon_loss"] == "mrstft" and merged["context_s"] == 4.0
    assert "guidance_scale" not in merged  # None means "not given", not "override with None"


def test_preset_for_another_task_is_refused():
    with pytest.raises(PresetError, match="is for task 'transition', not 'infill'"):
        P.apply_preset({"task": "infill"}, "transition")


@pytest.mark.parametrize("name", STYLE_NAMES)
def test_style_reference_matches_the_running_embedder(name, embedder):
    P.check_reference(P.load_preset(name), embedder)


def test_style_references_are_distinct_and_recognise_their_own_style(embedder):
    """A clip of the same style made from another seed is nearest to its own preset's reference."""
    refs = {n: np.asarray(P.load_preset(n).reference.vector) for n in STYLE_NAMES}
    for name in STYLE_NAMES:
        fresh = build_references.STYLES[name](np.random.default_rng(999))
        v = P.embed(embedder, fresh)
        dist = {m: float(np.linalg.norm(v - refs[m])) for m in STYLE_NAMES}
        nearest = min(dist, key=dist.get)
        assert nearest == name, (name, dist)
        others = sorted(d for m, d in dist.items() if m != name)
        assert dist[name] < 0.5 * others[0], (name, dist)


def test_reference_built_by_another_embedder_version_is_a_clear_error(tmp_presets, embedder):
    doc = json.loads((P.BUILTIN_DIR / "references" / "percussive.json").read_text())
    doc["probe"] = [v * 1.01 for v in doc["probe"]]
    (tmp_presets / "old.json").write_text(json.dumps(doc))
    write(tmp_presets, "old", 'name = "old"\nkind = "style"\ntask = "style"\n'
          '[reference]\nembedding = "old.json"\nsource = "test"\n')
    with pytest.raises(PresetError, match="another version of embedder 'dsp'.*build_references.py"):
        P.check_reference(P.load_preset("old"), embedder)


def test_reference_of_the_wrong_size_is_a_clear_error(tmp_presets, embedder):
    doc = {"embedder": "dsp", "dim": 3, "vector": [0.1, 0.2, 0.3], "probe": [1.0, 2.0, 3.0]}
    (tmp_presets / "small.json").write_text(json.dumps(doc))
    write(tmp_presets, "small", 'name = "small"\nkind = "style"\ntask = "style"\n'
          '[reference]\nembedding = "small.json"\nsource = "test"\n')
    with pytest.raises(PresetError, match="has 3 values but embedder 'dsp' gives 274"):
        P.check_reference(P.load_preset("small"), embedder)


def test_user_folder_overrides_builtin_and_is_listed(tmp_presets):
    write(tmp_presets, "infill", 'name = "infill"\nkind = "task"\ntask = "infill"\n[settings]\nsteps = 5\n')
    write(tmp_presets, "mine", 'name = "mine"\nkind = "task"\ntask = "continue"\n')
    assert P.load_preset("infill").settings == {"steps": 5}
    assert "mine" in P.list_presets() and "lofi-warm" in P.list_presets()


def test_style_preset_with_reference_audio_sends_the_path(tmp_presets):
    (tmp_presets / "ref.wav").write_bytes(b"RIFF")
    write(tmp_presets, "byaudio", 'name = "byaudio"\nkind = "style"\ntask = "style"\n'
          '[reference]\naudio = "ref.wav"\nsource = "my own recording"\n')
    fields = P.preset_to_request_fields(P.load_preset("byaudio"))
    assert fields["reference"] == str(tmp_presets / "ref.wav")
    assert "reference_embedding" not in fields


@pytest.mark.parametrize("body, message", [
    ('kind = "task"\ntask = "infill"\ncolour = "red"\n', r"unknown key\(s\) colour"),
    ('kind = "task"\ntask = "infill"\n[settings]\nstepz = 5\n', "unknown setting 'stepz'"),
    ('kind = "task"\ntask = "infill"\n[settings]\nsteps = 0\n', r"steps must be within \[1, 1000\], got 0"),
    ('kind = "task"\ntask = "infill"\n[settings]\nsteps = 2.5\n', "steps must be an integer, got 2.5"),
    ('kind = "task"\ntask = "infill"\n[settings]\nsampler = "euler"\n', "sampler must be one of ddim, .*got 'euler'"),
    ('kind = "task"\ntask = "infill"\n[settings]\nmix_k = 1.5\n', r"mix_k must be within \[0.0, 1.0\], got 1.5"),
    ('kind = "task"\ntask = "infill"\n[settings]\ndata_consistency = "yes"\n', "data_consistency must be true or false"),
    ('kind = "task"\ntask = "infill"\n[settings]\nseam_ms = "50"\n', "seam_ms must be a number"),
    ('kind = "task"\ntask = "mashup"\n', "task must be one of infill, regenerate, continue, transition, style, got 'mashup'"),
    ('kind = "filter"\ntask = "infill"\n', "kind must be one of task, style, got 'filter'"),
    ('name = "other"\nkind = "task"\ntask = "infill"\n', "name 'other' must match the file name 'bad'"),
    ('kind = "style"\ntask = "style"\n', "a style preset needs a \\[reference\\]"),
    ('kind = "style"\ntask = "infill"\n', "a style preset must have task = \"style\""),
    ('kind = "task"\ntask = "infill"\n[reference]\naudio = "x.wav"\nsource = "s"\n', "only style presets take a \\[reference\\]"),
    ('kind = "style"\ntask = "style"\n[reference]\nembedding = "gone.json"\nsource = "s"\n', "missing reference embedding file .*gone.json"),
    ('kind = "style"\ntask = "style"\n[reference]\naudio = "gone.wav"\nsource = "s"\n', "missing reference audio file .*gone.wav"),
    ('kind = "style"\ntask = "style"\n[reference]\naudio = "x.wav"\n', "needs `source`"),
    ('kind = "task"\ntask = "infill"\nsteps = [\n', "not valid TOML"),
])
def test_bad_presets_fail_naming_file_and_key(tmp_presets, body, message):
    write(tmp_presets, "bad", body)
    with pytest.raises(PresetError, match=message) as info:
        P.load_preset("bad")
    assert str(tmp_presets / "bad.toml") in str(info.value)
    assert info.value.code == "bad_preset"


def test_corrupt_embedding_file_is_reported(tmp_presets):
    (tmp_presets / "nan.json").write_text('{"embedder": "dsp", "dim": 2, "vector": [1.0, NaN], "probe": [1, 2]}')
    write(tmp_presets, "nan", 'kind = "style"\ntask = "style"\n[reference]\nembedding = "nan.json"\nsource = "s"\n')
    with pytest.raises(PresetError, match="vector must hold finite numbers only"):
        P.load_preset("nan")


def test_unknown_preset_lists_the_available_ones():
    with pytest.raises(PresetError, match=r"unknown preset 'lofi-cold'; available: .*lofi-warm"):
        P.load_preset("lofi-cold")


def test_cli_list_and_show():
    import argparse

    parser = argparse.ArgumentParser()
    P.add_presets_cli(parser.add_subparsers(dest="command"))
    out = io.StringIO()
    args = parser.parse_args(["presets", "list", "--json"])
    args.out = out
    assert args.func(args) == 0
    rows = {r["name"]: r for r in json.loads(out.getvalue())}
    assert rows["percussive"]["kind"] == "style" and rows["continue"]["task"] == "continue"
    out = io.StringIO()
    args = parser.parse_args(["presets", "show", "strings-pad"])
    args.out = out
    assert args.func(args) == 0
    shown = json.loads(out.getvalue())
    assert shown["settings"]["strength"] == 1.0 and shown["reference"]["dim"] == 274
    assert shown["style"]["tone"] == "dark" and shown["style"]["chain"][0].startswith("HighShelfFilter(")


def test_cli_reports_unknown_preset_with_code(capsys):
    assert P.main(["show", "nope"]) == 2
    assert "error [bad_preset]: unknown preset 'nope'" in capsys.readouterr().err


def test_build_references_is_reproducible(tmp_path, embedder):
    """Rebuilding one reference gives the stored vector: the source is really this script."""
    (path,) = build_references.build(["piano-clean"], out_dir=tmp_path)
    rebuilt = json.loads(path.read_text())
    stored = json.loads((P.BUILTIN_DIR / "references" / "piano-clean.json").read_text())
    np.testing.assert_allclose(rebuilt["vector"], stored["vector"], atol=1e-5)
    assert rebuilt["embedder"] == "dsp" and rebuilt["dim"] == 274


def test_the_documented_format_lists_every_setting_and_validates():
    """presets/README.md's example names every accepted setting, with values that pass validation."""
    import tomllib

    doc = (P.BUILTIN_DIR / "README.md").read_text()
    example = tomllib.loads(doc.split("```toml")[1].split("```")[0])
    assert set(example["settings"]) == set(P._SETTINGS)
    for key, value in example["settings"].items():
        P._check_setting(key, value, lambda msg: PresetError(msg))


def test_a_task_preset_can_ask_for_the_models_refinement(tmp_presets):
    """The built-in engine ships the prior unrefined; a producer's preset can have the model polish its seams."""
    write(tmp_presets, "polished", 'name = "polished"\nkind = "task"\ntask = "infill"\n[settings]\n'
          'refine_strength = 0.2\nrefine_span = "gap"\nprior = "similarity"\n')
    req = request_from_mapping(P.apply_preset({"task": "infill", "audio": ["song.wav"], "start_s": 1.0,
                                               "end_s": 2.0}, "polished"))
    assert (req.refine_strength, req.refine_span, req.prior) == (0.2, "gap", "similarity")
    write(tmp_presets, "bad", 'name = "bad"\nkind = "task"\ntask = "infill"\n[settings]\nrefine_strength = 2.0\n')
    with pytest.raises(PresetError, match="refine_strength"):
        P.load_preset("bad")
