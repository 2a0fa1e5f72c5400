"""Shared fixtures: small, fast, CPU-only, deterministic."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nibabel
import pytest
import torch

os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)  # tiny tests: threads only add overhead (and resumes stay bit-identical)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    """One torch thread in every test: UMAP's fit (test_cluster) raises the count to 2."""
    torch.set_num_threads(1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


#: A real T1 brain MRI (33 x 41 x 25 voxels of 2 mm) shipped in nibabel's wheel.
ANATOMICAL = Path(nibabel.__file__).parent / "tests" / "data" / "anatomical.nii"


@pytest.fixture
def mr_dir(tmp_path: Path) -> Path:
    """A folder holding nibabel's real T1 as t1.nii (the MR tests' data)."""
    assert ANATOMICAL.is_file(), "nibabel's wheel ships tests/data/anatomical.nii"
    (tmp_path / "mr").mkdir()
    shutil.copy(ANATOMICAL, tmp_path / "mr" / "t1.nii")
    return tmp_path / "mr"
