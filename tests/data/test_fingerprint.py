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
