"""`load_volume` refuses broken geometry and voxels it cannot use, naming the file, what is
wrong and the fix: non-finite or singular affines, implausible spacings, complex, RGB and
vector voxels."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from medmim.data.io import MAX_SPACING, MIN_SPACING, load_volume
from medmim.errors import DataError


def write_with_sform(path: Path, srow: np.ndarray, shape=(6, 5, 4)) -> Path:
    """A NIfTI whose sform rows are written as given (nibabel refuses to build such affines)."""
    nib.save(nib.Nifti1Image(np.zeros(shape, np.int16), np.eye(4)), str(path))
    header = nib.load(str(path)).header
    raw = bytearray(path.read_bytes())
    raw[252:256] = np.asarray([0, 1], "<i2").tobytes()  # qform_code 0, sform_code 1
    raw[280:328] = np.asarray(srow, "<f4").tobytes()  # srow_x, srow_y, srow_z
    assert header.sizeof_hdr == 348 and not path.name.endswith(".gz")
    path.write_bytes(bytes(raw))
    return path


def write_rgb_nifti(path: Path) -> Path:
    rgb = np.zeros((6, 5, 4, 3), np.uint8).view([("R", "u1"), ("G", "u1"), ("B", "u1")])
    nib.save(nib.Nifti1Image(rgb.reshape(6, 5, 4), np.eye(4)), str(path))
    return path


def _refused(path: Path, *phrases: str) -> str:
    with pytest.raises(DataError) as err:
        load_volume(path)
    assert err.value.path == str(path)
    for phrase in phrases:
        assert phrase in err.value.reason
    return err.value.reason


def test_nan_sform_is_refused(tmp_path: Path) -> None:
    srow = np.eye(4)[:3].copy()
    srow[0, 0] = np.nan
    path = write_with_sform(tmp_path / "nan.nii", srow)
    assert not np.isfinite(nib.load(str(path)).affine).all()  # the file does hold a NaN
    _refused(path, "NaN or infinite", "sform_code 1", "fix the sform/qform")


@pytest.mark.parametrize(
    "srow",
    [
        [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]],  # a zero axis
        [[1, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 0]],  # two parallel axes
    ],
)
def test_singular_affine_is_refused(tmp_path: Path, srow) -> None:
    path = write_with_sform(tmp_path / "singular.nii", np.asarray(srow, float))
    _refused(path, "affine is singular", "fix the header geometry")


@pytest.mark.parametrize("factor", [0.5, 2.0])
def test_spacing_outside_the_plausible_range_is_refused(tmp_path: Path, factor: float) -> None:
    bound = MIN_SPACING if factor < 1 else MAX_SPACING
    affine = np.diag([1.0, 1.0, bound * factor, 1.0])
    nib.save(nib.Nifti1Image(np.zeros((6, 5, 4), np.int16), affine), str(tmp_path / "s.nii.gz"))
    _refused(tmp_path / "s.nii.gz", f"{bound * factor:.4g} mm is outside", "wrong units")
    affine[2, 2] = bound  # the bound itself is accepted
    nib.save(nib.Nifti1Image(np.zeros((6, 5, 4), np.int16), affine), str(tmp_path / "ok.nii.gz"))
    assert load_volume(tmp_path / "ok.nii.gz").shape == (1, 6, 5, 4)


def test_complex_rgb_and_vector_voxels_are_refused(tmp_path: Path) -> None:
    nib.save(
        nib.Nifti1Image(np.ones((6, 5, 4), np.complex64), np.eye(4)), str(tmp_path / "c.nii.gz")
    )
    _refused(tmp_path / "c.nii.gz", "complex voxels (complex64)", "magnitude")
    _refused(
        write_rgb_nifti(tmp_path / "rgb.nii.gz"),
        "colour/vector pixels",
        "R, G, B",
        "convert it to grayscale",
    )
    sitk.WriteImage(sitk.Image([6, 5, 4], sitk.sitkVectorUInt8, 3), str(tmp_path / "v.mha"))
    _refused(tmp_path / "v.mha", "colour/vector pixels (3 components per pixel)")
