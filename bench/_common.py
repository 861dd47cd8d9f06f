"""What every bench script shares: this checkout importable, whichever way the script is started.

`python bench/x.py` puts bench/ on sys.path, so a script's `import _common` finds
this file, which puts the repository root first (the checkout's `engine` and
`bridge`, not an installed copy) and keeps bench/ reachable for sibling scripts.
Tests that load a script by file put bench/ on sys.path themselves (tests/conftest.py).
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
if str(BENCH) not in sys.path:
    sys.path.append(str(BENCH))
