"""A binary file given as a CSV, and DICOM identifiers in what the data commands write."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_io import _write_dicom_series

from medmim.cli.main import main
from medmim.data.sources import resolve_source
from medmim.errors import DataError


def test_a_binary_file_named_csv_is_named(tmp_path: Path) -> None:
    (tmp_path / "list.csv").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    with pytest.raises(
        DataError,
        match=r"list.csv.*is not UTF-8 text \(byte 0x89 at position 0\); save it as UTF-8",
    ):
        resolve_source(tmp_path / "list.csv")


def test_data_commands_write_no_patient_identifier(tmp_path: Path, scans, capsys) -> None:
    """The series carries PatientName Doe^Jane and PatientID PATIENT-ID-42 in every slice."""
    folder = tmp_path / "study"
    _write_dicom_series(
        folder / "s1", scans.ct_array(shape=(24, 20, 6)), (0.8, 0.9, 2.5), (1.0, 2.0, 3.0)
    )
    (folder / "broken.nii.gz").write_bytes(b"")
    assert (
        main(
            [
                "data",
                "fingerprint",
                str(folder),
                "--out",
                str(tmp_path / "fp.json"),
                "--samples",
                "200",
            ]
        )
        == 0
    )
    assert (
        main(["data", "cache", str(folder), "--recipe", "smit", "--cache-dir", str(tmp_path / "c")])
        == 0
    )
    written = [
        tmp_path / "fp.json",
        *(p for p in (tmp_path / "c").rglob("*") if p.suffix in (".json", ".jsonl")),
    ]
    assert len(written) >= 3  # fingerprint, recipe.json and the entry's metadata
    assert json.loads((tmp_path / "fp.json").read_text(encoding="utf-8"))["num_readable"] == 1
    text = capsys.readouterr().out + "".join(p.read_text(encoding="utf-8") for p in written)
    assert str(folder / "s1") in text  # the scan is there, by its path
    assert "Doe" not in text and "PATIENT-ID-42" not in text
