"""Fingerprint: counts, spacing and shape statistics, intensities, modality, unreadable files."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medmim.data.fingerprint import fingerprint, format_summary, guess_modality
from medmim.data.sources import resolve_source


def test_fingerprint_of_a_ct_folder(tmp_path: Path, scans) -> None:
    scans.write_nifti(tmp_path / "a.nii.gz", scans.ct_array(), scans.ras_affine((0.8, 0.9, 2.5)))
    scans.write_nifti(
        tmp_path / "b.nii.gz",
        scans.ct_array((20, 30, 24), seed=1),
        scans.ras_affine((1.0, 0.7, 1.5)),
    )
    scans.write_nifti(
        tmp_path / "c.nii.gz",
        scans.ct_array((30, 20, 10), seed=2),
        scans.ras_affine((0.6, 0.8, 5.0)),
    )
    (tmp_path / "broken.nii.gz").write_bytes(b"")
    fp = fingerprint(resolve_source(tmp_path), samples=2000, progress=False)
    assert (fp["num_records"], fp["num_readable"], fp["num_unreadable"]) == (4, 3, 1)
    assert fp["unreadable"] == [
        {"path": str(tmp_path / "broken.nii.gz"), "reason": "empty file (0 bytes)"}
    ]
    np.testing.assert_allclose(fp["spacing"]["median"], [0.8, 0.8, 2.5], rtol=1e-5)
    np.testing.assert_allclose(fp["spacing"]["min"], [0.6, 0.7, 1.5], rtol=1e-5)
    np.testing.assert_allclose(fp["spacing"]["max"], [1.0, 0.9, 5.0], rtol=1e-5)
    assert fp["shape"] == {"median": [30, 30, 24], "min": [20, 20, 10], "max": [40, 36, 30]}
    assert fp["modality"] == "CT" and fp["orientation"] == {"RAS": 3}
    assert {c["modality_source"] for c in fp["cases"]} == {"intensity"}
    p = fp["intensity"]["percentiles"]
    assert p["0.5"] == -1000 and 0 <= p["99.5"] <= 700 and fp["intensity"]["max"] <= 700
    assert fp["suggested_recipe"] == {"spacing": [0.8, 0.8, 2.5], "intensity": "ct"}
    text = format_summary(fp)
    assert (
        "3 readable, 1 unreadable of 4" in text
        and "modality: CT {'CT': 3} (3 guessed from intensities)" in text
        and "broken.nii.gz: empty file" in text
    )


def test_modality_guess() -> None:
    rng = np.random.default_rng(0)
    assert guess_modality(rng.gamma(2, 100, 1000)) == "MR"
    assert guess_modality(rng.integers(0, 256, 1000)) == "MR"
    ct = np.concatenate([np.full(50, -1000), rng.normal(40, 20, 950)])
    assert guess_modality(ct) == "CT"


def test_broken_geometry_and_rgb_are_unreadable_not_fatal(tmp_path: Path, scans) -> None:
    """A NaN or singular affine or RGB voxels used to abort the whole fingerprint."""
    from test_io_geometry import write_rgb_nifti, write_with_sform

    scans.write_nifti(tmp_path / "good.nii.gz")
    srow = np.eye(4)[:3].copy()
    srow[1, 1] = np.nan
    write_with_sform(tmp_path / "nan.nii", srow)
    write_with_sform(tmp_path / "singular.nii", np.diag([1.0, 1.0, 0.0, 1.0])[:3])
    write_rgb_nifti(tmp_path / "rgb.nii.gz")
    fp = fingerprint(resolve_source(tmp_path), samples=500, progress=False)
    assert (fp["num_readable"], fp["num_unreadable"]) == (1, 3)
    reasons = {Path(u["path"]).name: u["reason"] for u in fp["unreadable"]}
    assert "NaN or infinite" in reasons["nan.nii"] and "singular" in reasons["singular.nii"]
    assert "colour/vector pixels" in reasons["rgb.nii.gz"]


def test_dicom_modality_tag_wins_over_the_intensity_guess(tmp_path: Path, scans) -> None:
    from test_dicom import _series_from

    _series_from("CT_small.dcm", tmp_path / "mr", 3, Modality="MR")  # HU values, tagged MR
    ct = scans.ct_array()
    scans.write_nifti(tmp_path / "ct.nii.gz", ct)
    fp = fingerprint(resolve_source(tmp_path), samples=500, progress=False)
    cases = {Path(c["path"]).name: c for c in fp["cases"]}
    assert (cases["mr"]["modality"], cases["mr"]["modality_source"]) == ("MR", "dicom")
    assert (cases["ct.nii.gz"]["modality"], cases["ct.nii.gz"]["modality_source"]) == (
        "CT",
        "intensity",
    )
    assert "(1 from DICOM tags, 1 guessed from intensities)" in format_summary(fp)
