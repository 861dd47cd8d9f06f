"""The wheel is the product: built from the tree, installed (not editable) into a fresh venv, it runs.

The venv reuses this interpreter's site-packages (`--system-site-packages`) for the
dependencies, so nothing is downloaded (`--no-index`); pip still checks that every
requirement is met. Segue itself comes from the wheel: the test checks that
`engine` is imported from the venv, not from this source tree.
"""
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(*cmd, cwd, env=None, timeout=300):
    r = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    assert r.returncode == 0, f"{' '.join(map(str, cmd))}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def source_files() -> list[str]:
    """The files a fresh clone has (tracked, plus new files git does not ignore)."""
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=ROOT,
                         capture_output=True, check=True).stdout.decode()
    return [f for f in out.split("\0") if f and (ROOT / f).is_file()]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("src")
    for name in source_files():
        dest = src / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes((ROOT / name).read_bytes())
    out = tmp_path_factory.mktemp("dist")
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w", out,
        src, cwd=src)
    (path,) = out.glob("segue-*.whl")
    return path


def test_the_wheel_holds_every_package_the_presets_and_the_weights(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    packages = {str(p.parent.relative_to(ROOT)) for p in ROOT.glob("engine/**/__init__.py")} | {"bridge"}
    for package in packages:
        assert f"{package}/__init__.py" in names, f"package {package} is not in the wheel"
    for toml in (ROOT / "presets").glob("*.toml"):
        assert f"engine/builtin_presets/{toml.name}" in names
    for ref in (ROOT / "presets" / "references").glob("*.json"):
        assert f"engine/builtin_presets/references/{ref.name}" in names
    assert "engine/models/weights/builtin.safetensors" in names and "engine/models/weights/builtin.json" in names


def test_installed_from_the_wheel_segue_lists_presets_and_renders_the_demo(wheel, tmp_path):
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", venv, cwd=tmp_path)  # pip, setuptools: ours
    py, segue = venv / "bin" / "python", venv / "bin" / "segue"
    run(py, "-m", "pip", "install", "--no-index", "-q", wheel, cwd=tmp_path)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SEGUE_PRESETS")}
    env["XDG_CONFIG_HOME"] = str(tmp_path / "config")    # no user presets
    where = run(py, "-c", "import engine, engine.presets as p; print(engine.__file__); print(p.BUILTIN_DIR)",
                cwd=tmp_path, env=env).stdout.split()
    assert all(Path(w).resolve().is_relative_to(venv.resolve()) for w in where), where
    listed = run(segue, "presets", "list", cwd=tmp_path, env=env).stdout
    for toml in (ROOT / "presets").glob("*.toml"):
        assert toml.stem in listed and "INVALID" not in listed
    run(segue, "demo", "-q", "--steps", "4", "-o", tmp_path / "demo.wav", cwd=tmp_path, env=env)
    assert (tmp_path / "demo.wav").stat().st_size > 44100 and (tmp_path / "demo.json").is_file()
