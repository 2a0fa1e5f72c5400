"""Make tests/methods/method_helpers.py importable, and run the tiny method tests on one thread
(on a shared 2-core machine, two OpenMP threads per process make these small ops many times
slower than one)."""

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
