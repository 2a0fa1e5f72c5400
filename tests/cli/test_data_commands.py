"""Smoke tests of `medmim data fingerprint|cache|preview` and the interim `medmim demo`."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medmim.cli.main import main


def _ct(shape=(40, 36, 30), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    vol = np.full(shape, -1000, np.int16)
    vol[5:-5, 6:-6, 3:-3] = rng.integers(-50, 300, (shape[0] - 10, shape[1] - 12, shape[2] - 6))
    return vol


def _write(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(_ct(seed=seed), np.diag([0.8, 0.9, 2.5, 1.0])), str(path))
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    for i in range(2):
        _write(tmp_path / "scans" / f"ct{i}.nii.gz", seed=i)
    (tmp_path / "scans" / "bad.nii.gz").write_bytes(b"")
    return tmp_path / "scans"


def test_fingerprint_command(folder: Path, tmp_path: Path, capsys) -> None:
    assert (
        main(
            [
                "data",
                "fingerprint",
                str(folder),
                "--out",
                str(tmp_path / "fp.json"),
                "--samples",
                "500",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "2 readable, 1 unreadable of 3" in out and "bad.nii.gz: empty file (0 bytes)" in out
    assert json.loads((tmp_path / "fp.json").read_text(encoding="utf-8"))["modality"] == "CT"


def test_cache_command(folder: Path, tmp_path: Path, capsys) -> None:
    args = [
        "data",
        "cache",
        str(folder),
        "--recipe",
        "smit",
        "--cache-dir",
        str(tmp_path / "c"),
        "--set",
        "window=[-500,500]",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "cached 2 of 3 scans" in out and "skipped:" in out
    recipe = json.loads(next((tmp_path / "c").glob("*/recipe.json")).read_text(encoding="utf-8"))
    assert recipe["spacing"] == [1.5, 1.5, 2.0] and recipe["window"] == [-500.0, 500.0]
    assert main(args[:-2] + ["--on-error", "fail"]) == 2
    assert "bad.nii.gz: empty file" in capsys.readouterr().err
    assert main(["data", "cache", str(folder), "--recipe", "smrt"]) == 2
    assert "Did you mean 'smart'" in capsys.readouterr().err


def test_preview_command(folder: Path, tmp_path: Path) -> None:
    png = tmp_path / "p.png"
    args = [
        "data",
        "preview",
        str(folder),
        "--out",
        str(png),
        "--crop",
        "16",
        "--cache-dir",
        str(tmp_path / "c"),
    ]
    assert main(args + ["--index", "0"]) == 2  # sorted first: bad.nii.gz, named in the error
    assert main(args + ["--index", "1"]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(args + ["--index", "9"]) == 2
