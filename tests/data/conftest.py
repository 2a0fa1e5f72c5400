"""Tiny synthetic scans for the data tests (written with nibabel; 40 x 36 x 30 voxels)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

SHAPE = (40, 36, 30)
SPACING = (0.8, 0.9, 2.5)


def ct_array(shape=SHAPE, seed: int = 0) -> np.ndarray:
    """int16 HU: air (-1000) around an ellipsoid body (40 HU +- noise) with a 700 HU 'spine'."""
    rng = np.random.default_rng(seed)
    grid = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    body = (grid[0] / 0.7) ** 2 + (grid[1] / 0.6) ** 2 + (grid[2] / 0.8) ** 2 <= 1
    vol = np.full(shape, -1000, dtype=np.int16)
    vol[body] = 40 + rng.integers(-20, 20, int(body.sum()))
    vol[body & (grid[0] ** 2 + (grid[1] + 0.3) ** 2 < 0.02)] = 700
    return vol


def ras_affine(spacing=SPACING, origin=(10.0, -20.0, 30.0)) -> np.ndarray:
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = origin
    return affine


def write_nifti(
    path: Path, array: np.ndarray | None = None, affine: np.ndarray | None = None
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    array = ct_array() if array is None else array
    nib.save(nib.Nifti1Image(array, ras_affine() if affine is None else affine), str(path))
    return path


@pytest.fixture
def ct_file(tmp_path: Path) -> Path:
    """One 40 x 36 x 30 int16 CT in HU, spacing 0.8 x 0.9 x 2.5 mm, RAS affine."""
    return write_nifti(tmp_path / "ct.nii.gz")


class Scans:
    """The helpers above, for tests (a conftest is not imported by name)."""

    SHAPE = SHAPE
    SPACING = SPACING
    ct_array = staticmethod(ct_array)
    ras_affine = staticmethod(ras_affine)
    write_nifti = staticmethod(write_nifti)


@pytest.fixture
def scans() -> type[Scans]:
    return Scans
