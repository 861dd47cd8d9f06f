"""The layers hold: nothing in `engine` imports `bridge`, and no modules import each other in a circle.

Imports are read from the source (every `import`, at module level or inside a
function), so a lazy import that closes a circle counts too: both cycles this
test was written for (stable_audio <-> stable_audio_single, request <->
presets) were lazy ones.
"""
import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("engine", "bridge")


def modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def imported_by(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The project modules `name` imports (`from pkg import sub` counts as importing the submodule)."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            for a in node.names:
                sub = f"{module}.{a.name}"
                found.add(sub if sub in known else module)
    return {m for m in found if m.split(".")[0] in PACKAGES and m != name}


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imported_by(name, path, known) for name, path in known.items()}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in g:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10000))
    for v in g:
        if v not in index:
            visit(v)
    return out


def test_the_walk_sees_relative_absolute_and_lazy_imports():
    g = graph()
    assert "engine.schema" in g["engine.cli"]                      # from . import schema
    assert "engine.request" in g["bridge.client"]                  # from engine.request import ...
    assert "engine.presets" in g["engine.request"]                 # imported inside a function
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_nothing_in_the_engine_imports_the_bridge():
    g = graph()
    upward = sorted((m, i) for m, deps in g.items() if m.startswith("engine") for i in deps if i.startswith("bridge"))
    assert upward == []


def test_there_are_no_import_cycles():
    assert cycles(graph()) == []


def test_the_bridge_adds_segue_serve_through_its_entry_point():
    r = subprocess.run([sys.executable, "-m", "engine.cli", "serve", "--help"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and "--allow-root" in r.stdout, r.stderr


def test_the_readme_links_only_files_in_the_repository():
    import re

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    links = [m.split("#")[0] for m in re.findall(r"\]\(([^)\s]+)\)", text) if "://" not in m]
    assert links, "the README links its documents"
    for link in links:
        target = (ROOT / link).resolve()
        assert target.is_relative_to(ROOT) and target.exists(), link
    assert "shared/" not in text
