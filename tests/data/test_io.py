"""Readers: every format gives the same voxels and the same RAS affine; every bad input names
the file and the reason."""

from __future__ import annotations

import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from medmim.data.io import load_volume, spacing_of
from medmim.data.sources import resolve_source
from medmim.errors import DataError


def _sitk_image(array_xyz: np.ndarray, spacing, origin, direction=(1, 0, 0, 0, 1, 0, 0, 0, 1)):
    img = sitk.GetImageFromArray(np.ascontiguousarray(array_xyz.transpose(2, 1, 0)))
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    img.SetDirection(direction)
    return img


def _expected_ras(spacing, origin, direction) -> np.ndarray:
    lps = np.eye(4)
    lps[:3, :3] = np.asarray(direction, float).reshape(3, 3) * np.asarray(spacing)
    lps[:3, 3] = origin
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def test_nifti_keeps_values_spacing_and_affine(ct_file: Path, scans) -> None:
    vol = load_volume(ct_file)
    assert vol.shape == (1, *scans.SHAPE) and vol.dtype.is_floating_point
    np.testing.assert_array_equal(vol[0].numpy(), scans.ct_array())
    np.testing.assert_allclose(vol.affine.numpy(), scans.ras_affine())
    np.testing.assert_allclose(spacing_of(vol.affine), scans.SPACING)
    assert vol.meta["filename_or_obj"] == str(ct_file) and vol.meta["format"] == "nifti"


@pytest.mark.parametrize("ext", [".mha", ".mhd", ".nrrd", ".nii.gz"])
def test_itk_formats_agree_on_voxels_and_ras_affine(tmp_path: Path, scans, ext: str) -> None:
    """One oblique-free but flipped LPS image, written by SimpleITK in four formats."""
    array = scans.ct_array()
    spacing, origin, direction = (0.8, 0.9, 2.5), (1.0, 2.0, 3.0), (-1, 0, 0, 0, 1, 0, 0, 0, 1)
    path = tmp_path / f"scan{ext}"
    sitk.WriteImage(_sitk_image(array, spacing, origin, direction), str(path))
    vol = load_volume(path)
    np.testing.assert_array_equal(vol[0].numpy(), array)
    np.testing.assert_allclose(
        vol.affine.numpy(), _expected_ras(spacing, origin, direction), atol=1e-5
    )


def _write_dicom_series(
    folder: Path,
    array: np.ndarray,
    spacing,
    origin,
    *,
    series_uid="1.2.826.0.1.3680043.2.1125.1",
    start=0,
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    img = _sitk_image(array.astype(np.int16), spacing, origin)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(img.GetDepth()):
        sl = img[:, :, k]
        tags = {
            "0010|0010": "Doe^Jane",
            "0010|0020": "PATIENT-ID-42",
            "0008|0060": "CT",
            "0020|000d": "1.2.826.0.1.3680043.2.1125.9",
            "0020|000e": series_uid,
            "0020|0013": str(k + 1),
            "0020|0037": "1\\0\\0\\0\\1\\0",
            "0020|0032": "\\".join(f"{v:g}" for v in img.TransformIndexToPhysicalPoint((0, 0, k))),
            "0028|0030": f"{spacing[1]:g}\\{spacing[0]:g}",
            "0018|0050": f"{spacing[2]:g}",
        }
        for tag, value in tags.items():
            sl.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"IM{start + k:04d}.dcm"))
        writer.Execute(sl)


def test_dicom_series_folder(tmp_path: Path, scans, caplog) -> None:
    array = scans.ct_array(shape=(24, 20, 6))
    spacing, origin = (0.8, 0.9, 2.5), (1.0, 2.0, 3.0)
    _write_dicom_series(tmp_path / "series", array, spacing, origin)
    with caplog.at_level(logging.DEBUG):
        vol = load_volume(tmp_path / "series")
    np.testing.assert_array_equal(vol[0].numpy(), array)
    np.testing.assert_allclose(
        vol.affine.numpy(), _expected_ras(spacing, origin, np.eye(3).ravel()), atol=1e-4
    )
    text = repr(dict(vol.meta)) + caplog.text
    assert "Doe" not in text and "PATIENT-ID-42" not in text


def test_dicom_folder_errors(tmp_path: Path, scans) -> None:
    array = scans.ct_array(shape=(24, 20, 3))
    _write_dicom_series(tmp_path / "mixed", array, (1, 1, 1), (0, 0, 0))
    _write_dicom_series(
        tmp_path / "mixed", array, (1, 1, 1), (0, 0, 9), series_uid="1.2.3.99", start=10
    )
    with pytest.raises(DataError, match="2 DICOM series") as info:
        load_volume(tmp_path / "mixed")  # a folder of several series: one is chosen, or an error
    assert info.value.path == str(tmp_path / "mixed")
    records = resolve_source(tmp_path / "mixed")
    assert sorted(r.series for r in records) == ["1.2.3.99", "1.2.826.0.1.3680043.2.1125.1"]
    for record in records:
        vol = record.load()
        np.testing.assert_array_equal(vol[0].numpy(), array)
        assert float(vol.affine[2, 3]) == (9.0 if record.series == "1.2.3.99" else 0.0)
    text = str(info.value) + " ".join(r.name for r in records)
    assert "Doe" not in text and "PATIENT-ID-42" not in text
    _write_dicom_series(tmp_path / "dup", array, (1, 1, 1), (0, 0, 0))
    _write_dicom_series(tmp_path / "dup", array[:, :, :1], (1, 1, 1), (0, 0, 0), start=5)
    reason = _bad(tmp_path / "dup").reason  # two files at (0, 0, 0)
    assert "2 files share the slice position (0, 0, 0) mm" in reason
    assert "Doe" not in reason and "PATIENT-ID-42" not in reason
    _write_dicom_series(tmp_path / "single", array[:, :, :1], (1, 1, 1), (0, 0, 0))
    with pytest.raises(DataError, match="2D image"):
        load_volume(tmp_path / "single")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(DataError, match="no DICOM files"):
        load_volume(tmp_path / "empty_dir")


def test_numpy_formats(tmp_path: Path, scans) -> None:
    array = scans.ct_array()
    np.save(tmp_path / "a.npy", array)
    np.save(tmp_path / "chan.npy", array[None])
    np.savez(tmp_path / "a.npz", image=array, other=np.zeros(3))
    stack = np.stack([array, array + 1])
    np.savez_compressed(tmp_path / "stack.npz", train_images=stack)
    for name in ("a.npy", "chan.npy", "a.npz"):
        vol = load_volume(tmp_path / name)
        np.testing.assert_array_equal(vol[0].numpy(), array)
        np.testing.assert_array_equal(vol.affine.numpy(), np.eye(4))
    vol = load_volume(tmp_path / "stack.npz", array_key="train_images", array_index=1)
    np.testing.assert_array_equal(vol[0].numpy(), array + 1)
    with pytest.raises(DataError, match="out of range"):
        load_volume(tmp_path / "stack.npz", array_key="train_images", array_index=2)
    with pytest.raises(DataError, match="'imagez' not found. Did you mean 'image'"):
        load_volume(tmp_path / "a.npz", array_key="imagez")


def _bad(path: Path, **kwargs) -> DataError:
    with pytest.raises(DataError) as info:
        load_volume(path, **kwargs)
    assert info.value.path == str(path)
    assert str(path) in str(info.value)
    return info.value


def test_missing_empty_unknown(tmp_path: Path, ct_file: Path) -> None:
    assert "file not found. Did you mean 'ct.nii.gz'" in _bad(tmp_path / "ct.nii.gzz").reason
    (tmp_path / "empty.nii.gz").write_bytes(b"")
    assert _bad(tmp_path / "empty.nii.gz").reason == "empty file (0 bytes)"
    (tmp_path / "scan.niigz").write_bytes(b"x" * 10)
    reason = _bad(tmp_path / "scan.niigz").reason
    assert "unsupported extension '.niigz'" in reason and "Supported: .nii.gz" in reason


def test_corrupt_and_truncated(tmp_path: Path, ct_file: Path) -> None:
    data = ct_file.read_bytes()
    (tmp_path / "trunc.nii.gz").write_bytes(data[: len(data) // 2])
    assert "corrupt or truncated" in _bad(tmp_path / "trunc.nii.gz").reason
    (tmp_path / "junk.nii").write_bytes(b"not an image" * 50)
    assert "cannot be read as nifti" in _bad(tmp_path / "junk.nii").reason
    (tmp_path / "junk.mha").write_bytes(b"ObjectType = Image\nNDims = 3\n")
    assert "cannot be read as metaimage" in _bad(tmp_path / "junk.mha").reason


def test_nan_policy(tmp_path: Path, scans, caplog) -> None:
    base = scans.ct_array().astype(np.float32)
    all_nan = np.full_like(base, np.nan)
    mostly = base.copy()
    mostly.reshape(-1)[: int(0.6 * mostly.size)] = np.nan
    few = base.copy()
    few[0, 0, :5] = np.nan
    few[1, 0, 0] = np.inf
    for name, arr in (("all", all_nan), ("mostly", mostly), ("few", few)):
        scans.write_nifti(tmp_path / f"{name}.nii.gz", arr)
    assert "NaN-filled: 100% of voxels" in _bad(tmp_path / "all.nii.gz").reason
    assert "NaN-filled: 60% of voxels" in _bad(tmp_path / "mostly.nii.gz").reason
    with caplog.at_level(logging.WARNING):
        vol = load_volume(tmp_path / "few.nii.gz")
    assert np.isfinite(vol.numpy()).all() and float(vol[0, 0, 0, 0]) == float(
        np.nanmin(few[np.isfinite(few)])
    )
    assert "6 NaN/inf voxels" in caplog.text and "few.nii.gz" in caplog.text


def test_2d_and_4d(tmp_path: Path, scans) -> None:
    for name, arr in (
        ("flat", np.zeros((40, 36), np.int16)),
        ("slice", np.zeros((40, 36, 1), np.int16)),
    ):
        nib.save(nib.Nifti1Image(arr, np.eye(4)), str(tmp_path / f"{name}.nii.gz"))
        assert "2D image of shape" in _bad(tmp_path / f"{name}.nii.gz").reason
    nib.save(
        nib.Nifti1Image(np.zeros((8, 8, 8, 3), np.int16), np.eye(4)), str(tmp_path / "t.nii.gz")
    )
    assert "4D array of shape (8, 8, 8, 3)" in _bad(tmp_path / "t.nii.gz").reason
    nib.save(
        nib.Nifti1Image(np.ones((8, 8, 8, 1), np.int16), np.eye(4)), str(tmp_path / "t1.nii.gz")
    )
    assert load_volume(tmp_path / "t1.nii.gz").shape == (1, 8, 8, 8)


def test_2d_images_are_one_slice_volumes_when_allowed(tmp_path: Path) -> None:
    affine = np.diag([0.5, 0.6, 3.0, 1.0])
    flat = np.arange(40 * 36, dtype=np.int16).reshape(40, 36)
    for name, arr in (("flat", flat), ("slice", flat[:, :, None]), ("coronal", flat[:, None, :])):
        nib.save(nib.Nifti1Image(arr, affine), str(tmp_path / f"{name}.nii.gz"))
        vol = load_volume(tmp_path / f"{name}.nii.gz", allow_2d=True)
        assert vol.shape == (1, *(arr.shape if arr.ndim == 3 else (*arr.shape, 1)))
        np.testing.assert_array_equal(vol.numpy().ravel(), flat.ravel())
        np.testing.assert_allclose(spacing_of(vol.affine), [0.5, 0.6, 3.0])
    nib.save(nib.Nifti1Image(np.zeros(40, np.int16), np.eye(4)), str(tmp_path / "line.nii.gz"))
    with pytest.raises(DataError, match="2D image of shape"):
        load_volume(tmp_path / "line.nii.gz", allow_2d=True)  # 1D is still no image


def test_permission_denied_is_not_called_corrupt(ct_file: Path, monkeypatch) -> None:
    from medmim.data import io

    def denied(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setitem(io.READERS, "nifti", denied)
    with pytest.raises(DataError, match=r"cannot be opened: permission denied .*chmod a\+r") as err:
        load_volume(ct_file)
    assert "corrupt" not in str(err.value)
