"""DICOM on real sample files (pydicom's test files and the `pydicom-data` package): series,
multi-frame objects, compressed transfer syntaxes, HU, geometry, identifiers, bad series.

Expected values come from an independent reading of the same files: SimpleITK's own reader,
MONAI's `PydicomReader`, or pydicom's pixel data and geometry tags.
"""

from __future__ import annotations

import copy
import logging
import shutil
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from nibabel.orientations import aff2axcodes
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from medmim.data import dicom
from medmim.data.io import load_volume, spacing_of
from medmim.data.sources import Record, resolve_source
from medmim.errors import DataError

#: Identifiers in CT_small.dcm's header (patient name, ID, study date): never to be seen.
CT_SMALL_IDENTIFIERS = ("CompressedSamples", "1CT1", "20040119")


def _sample(name: str) -> Path:
    """A pydicom test file (or one of `pydicom-data`), never downloaded."""
    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"{name} needs the pydicom-data package (pip install pydicom-data)")
    return Path(path)


def _dataset(name: str) -> pydicom.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # some samples have deliberately odd values
        return pydicom.dcmread(_sample(name))


def _series_from(
    name: str,
    folder: Path,
    n: int,
    *,
    gap: float = 5.0,
    series_uid=None,
    orientation=None,
    prefix: str = "IM",
    **tags,
) -> list[Path]:
    """`n` copies of a real one-slice file stacked `gap` mm apart along the slice normal (a
    series with the file's own pixels, rescale and identifiers), written in reverse order;
    `tags` are set on every slice."""
    folder.mkdir(parents=True, exist_ok=True)
    src = _dataset(name)
    for keyword, value in tags.items():
        setattr(src, keyword, value)
    if orientation is not None:
        src.ImageOrientationPatient = [f"{v:.6f}" for v in orientation]
    iop = np.asarray(src.ImageOrientationPatient, dtype=np.float64)
    normal = np.cross(iop[:3], iop[3:])
    origin = np.asarray(src.ImagePositionPatient, dtype=np.float64)
    uid = series_uid or generate_uid()
    files = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the samples' own odd UIDs
        for k in range(n):
            ds = copy.deepcopy(src)
            ds.SeriesInstanceUID = uid
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            ds.InstanceNumber = k + 1
            ds.ImagePositionPatient = [f"{v:.4f}" for v in origin + k * gap * normal]
            files.append(folder / f"{prefix}{n - k:03d}.dcm")
            ds.save_as(files[-1])
    return files


def _sitk_series(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def _assert_like_sitk(vol, image: sitk.Image) -> None:
    """Same voxels (X, Y, Z), spacing, axis codes and HU range as SimpleITK's own reading."""
    expected = sitk.GetArrayFromImage(image).transpose(2, 1, 0)
    assert tuple(vol.shape[1:]) == image.GetSize()
    np.testing.assert_array_equal(vol[0].numpy(), expected)
    np.testing.assert_allclose(spacing_of(vol.affine), image.GetSpacing(), rtol=1e-5)
    lps = np.asarray(image.GetDirection()).reshape(3, 3)
    codes = "".join(
        "LR"[int(c[0] < 0)]
        if abs(c[0]) >= max(abs(c[1]), abs(c[2]))
        else ("PA"[int(c[1] < 0)] if abs(c[1]) >= abs(c[2]) else "SI"[int(c[2] < 0)])
        for c in lps.T
    )  # ITK's LPS axis codes; RAS codes must name the same sides
    assert "".join(aff2axcodes(vol.affine.numpy())) == codes
    assert (float(vol.min()), float(vol.max())) == (float(expected.min()), float(expected.max()))


def test_ct_series_matches_sitk_monai_and_pydicom(tmp_path: Path, caplog) -> None:
    """A CT series built from real slices, oblique, files named against slice order."""
    c, s = np.cos(0.3), np.sin(0.3)
    _series_from("CT_small.dcm", tmp_path / "ct", 4, orientation=[c, s, 0, -s, c, 0])
    with caplog.at_level(logging.DEBUG):
        vol = load_volume(tmp_path / "ct")
    _assert_like_sitk(vol, _sitk_series(tmp_path / "ct"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from monai.data import PydicomReader
    reader = PydicomReader(fname_regex=None)
    array, meta = reader.get_data(reader.read(str(tmp_path / "ct")))
    np.testing.assert_allclose(vol.affine.numpy(), meta["affine"], atol=1e-3)
    ds = _dataset("CT_small.dcm")
    hu = ds.pixel_array.T * float(ds.RescaleSlope) + float(ds.RescaleIntercept)  # (cols, rows)
    np.testing.assert_array_equal(vol[0, :, :, 0].numpy(), hu)
    assert (
        float(vol.min()) < -500 and vol.meta["modality"] == "CT" and vol.meta["format"] == "dicom"
    )
    text = repr(dict(vol.meta)) + caplog.text
    assert not [i for i in CT_SMALL_IDENTIFIERS if i in text]


def test_multiframe_enhanced_ct(tmp_path: Path) -> None:
    """eCT_Supplemental: 2 frames whose geometry and rescale live in functional groups."""
    path = _sample("eCT_Supplemental.dcm")
    vol = load_volume(path)
    _assert_like_sitk(vol, sitk.ReadImage(str(path)))
    ds = _dataset("eCT_Supplemental.dcm")
    shared = ds.SharedFunctionalGroupsSequence[0]
    rows_cols = [float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing]
    positions = np.asarray(
        [
            f.PlanePositionSequence[0].ImagePositionPatient
            for f in ds.PerFrameFunctionalGroupsSequence
        ],
        dtype=np.float64,
    )
    iop = np.asarray(shared.PlaneOrientationSequence[0].ImageOrientationPatient, dtype=np.float64)
    expected_lps = np.eye(4)
    expected_lps[:3, 0] = iop[:3] * rows_cols[1]
    expected_lps[:3, 1] = iop[3:] * rows_cols[0]
    expected_lps[:3, 2] = positions[1] - positions[0]
    expected_lps[:3, 3] = positions[0]
    np.testing.assert_allclose(
        vol.affine.numpy(), np.diag([-1, -1, 1, 1]) @ expected_lps, atol=1e-3
    )
    assert tuple(vol.shape[1:]) == (ds.Columns, ds.Rows, int(ds.NumberOfFrames))
    rescale = shared.PixelValueTransformationSequence[0]
    hu = ds.pixel_array * float(rescale.RescaleSlope) + float(rescale.RescaleIntercept)
    np.testing.assert_array_equal(vol[0].numpy(), hu.transpose(2, 1, 0))
    assert vol.meta["modality"] == "CT"
    folder = tmp_path / "one_object"  # a folder holding only this object is the same volume
    folder.mkdir()
    shutil.copy(path, folder / "IM0001")
    np.testing.assert_array_equal(load_volume(folder).numpy(), vol.numpy())
    assert resolve_source(folder) == [Record(str(folder))]


@pytest.mark.parametrize(
    "name",
    ["emri_small_RLE.dcm", "emri_small_jpeg_ls_lossless.dcm", "emri_small_jpeg_2k_lossless.dcm"],
)
def test_compressed_multiframe_mr_equals_uncompressed(name: str) -> None:
    """RLE, JPEG-LS and JPEG 2000 lossless decode (GDCM) to the uncompressed object's voxels."""
    plain = load_volume(_sample("emri_small.dcm"))
    vol = load_volume(_sample(name))
    np.testing.assert_array_equal(vol.numpy(), plain.numpy())
    np.testing.assert_allclose(vol.affine.numpy(), plain.affine.numpy())
    assert vol.meta["modality"] == "MR" and tuple(vol.shape[1:]) == (64, 64, 10)


def test_jpeg_lossless_ct_series(tmp_path: Path) -> None:
    """Real JPEG lossless (process 14) CT slices stacked into a series."""
    _series_from("bad_sequence.dcm", tmp_path / "jpeg", 3, gap=1.5)
    vol = load_volume(tmp_path / "jpeg")
    image = _sitk_series(tmp_path / "jpeg")
    _assert_like_sitk(vol, image)
    ds = _dataset("bad_sequence.dcm")
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.JPEGLosslessSV1
    assert float(vol.min()) < -500 and spacing_of(vol.affine)[2] == pytest.approx(1.5, abs=1e-3)
    single = load_volume(_sample("bad_sequence.dcm"), allow_2d=True)  # the file alone is 2D
    _assert_like_sitk(single, sitk.ReadImage(str(_sample("bad_sequence.dcm"))))


def test_folder_with_two_series_gives_two_records(tmp_path: Path, caplog) -> None:
    folder = tmp_path / "study"
    _series_from("CT_small.dcm", folder, 3, gap=5.0, prefix="A")
    _series_from("CT_small.dcm", folder, 2, gap=2.0, prefix="B")
    with caplog.at_level(logging.DEBUG):
        records = resolve_source(folder)
        assert [r.image for r in records] == [str(folder)] * 2 and records[0].series != records[
            1
        ].series
        depths = sorted(r.load().shape[-1] for r in records)
    assert depths == [2, 3]
    assert all(r.name == f"{folder}::{dicom.series_tag(r.series)}" for r in records)
    assert all(len(r.name) - len(str(folder)) == len("::series-") + 8 for r in records)
    assert resolve_source(tmp_path) == records  # the same records from a scan of the parent
    with pytest.raises(
        DataError, match=r"holds 2 DICOM series \(series-[0-9a-f]{8}, series-"
    ) as err:
        load_volume(folder)
    text = " ".join(r.name for r in records) + str(err.value) + caplog.text
    assert not [i for i in CT_SMALL_IDENTIFIERS if i in text]


def test_duplicate_slice_position_is_named(tmp_path: Path) -> None:
    files = _series_from("CT_small.dcm", tmp_path / "dup", 3)
    ds = pydicom.dcmread(files[0])
    position = [float(v) for v in ds.ImagePositionPatient]
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.save_as(tmp_path / "dup" / "copy.dcm")
    with pytest.raises(DataError, match="2 files share the slice position") as err:
        load_volume(tmp_path / "dup")
    assert err.value.path == str(tmp_path / "dup")
    assert ", ".join(f"{v:g}" for v in position) in err.value.reason
    assert "copy.dcm" in err.value.reason and "remove the duplicates" in err.value.reason
    assert not [i for i in CT_SMALL_IDENTIFIERS if i in str(err.value)]


def test_rgb_and_segmentation_objects_are_refused() -> None:
    with pytest.raises(DataError, match=r"colour/vector pixels \(SamplesPerPixel 3, RGB\)") as err:
        load_volume(_sample("SC_rgb_2frame.dcm"))
    assert err.value.path == str(_sample("SC_rgb_2frame.dcm"))
    with pytest.raises(DataError, match=r"segmentation \(a label, not an image\)"):
        load_volume(_sample("liver.dcm"))


def test_undecodable_pixel_data_names_syntax_and_decoder() -> None:
    """GDCM cannot decode this JPEG 2000 object; pydicom can with pylibjpeg-openjpeg only."""
    import importlib.util

    if importlib.util.find_spec("openjpeg") or importlib.util.find_spec("gdcm"):
        pytest.skip("a pydicom JPEG 2000 decoder is installed: the file would be read")
    path = _sample("JPEG2000-embedded-sequence-delimiter.dcm")
    with pytest.raises(DataError) as err:
        load_volume(path, allow_2d=True)
    reason = err.value.reason
    assert err.value.path == str(path)
    assert "'JPEG 2000 Image Compression' (1.2.840.10008.1.2.4.91)" in reason
    assert "`pip install pylibjpeg pylibjpeg-openjpeg`" in reason and "python-gdcm" in reason


def test_pydicom_decodes_what_gdcm_cannot(monkeypatch) -> None:
    """When GDCM fails on compressed pixels, pydicom's own RLE decoder is used instead."""
    real = dicom._sitk_read
    sample = _sample("emri_small_RLE.dcm")

    def gdcm_fails_on_the_original(files):
        if Path(files[0]) == sample:
            raise RuntimeError(
                "ITK ERROR: GDCMImageIO(0x0): Failed to change to Implicit Transfer Syntax"
            )
        return real(files)

    monkeypatch.setattr(dicom, "_sitk_read", gdcm_fails_on_the_original)
    vol = load_volume(sample)
    np.testing.assert_array_equal(vol.numpy(), load_volume(_sample("emri_small.dcm")).numpy())
