"""Shared test settings: one torch thread per process, and per test module.

The suite runs on 2-core CI machines, and several tests start worker processes;
one thread each avoids oversubscription that slows everything down many times.
Small tensors are also fastest on one thread. The fixture below puts every module
back on one thread and restores what it found, so a module that changes the count
cannot slow down the ones after it.
"""
import sys
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)
# Tests load some bench scripts by file; their `import _common` (bench/_common.py) must resolve.
sys.path.append(str(Path(__file__).resolve().parents[1] / "bench"))


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
