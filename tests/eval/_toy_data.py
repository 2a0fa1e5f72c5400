"""Tiny labelled data for the classify / cluster tests (imported by those test files)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np

#: Tiny Swin (32^3 inputs) as an encoder.json-only "export": enough for `scratch:<dir>`.
TINY_SWIN = {"name": "swin", "embed_dim": 12, "depths": [1, 1, 1, 1], "num_heads": [3, 3, 3, 3]}


def toy_volumes(labels: np.ndarray, size: int = 28, seed: int = 0) -> np.ndarray:
    """uint8 (N, size, size, size): noise, plus a bright cube whose corner depends on the class."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 80, (len(labels), size, size, size)).astype(np.uint8)
    for i, c in enumerate(labels):
        o = 2 + 7 * int(c)
        x[i, o : o + 10, o : o + 10, 4:14] = 250
    return x


def write_medmnist(path: Path, counts=(24, 8, 12), classes: int = 2, seed: int = 0) -> Path:
    """A MedMNIST-v2-3D-like npz (6 keys, uint8, labels (N, 1)) with balanced classes."""
    arrays = {}
    for k, (split, n) in enumerate(zip(("train", "val", "test"), counts)):
        y = np.arange(n) % classes
        arrays[f"{split}_images"] = toy_volumes(y, seed=seed + k)
        arrays[f"{split}_labels"] = y.reshape(-1, 1).astype(np.uint8)
    np.savez(path, **arrays)
    return path


def write_crops_csv(
    folder: Path, n: int = 18, names=("benign", "malignant", "unsure"), with_split: bool = False
) -> Path:
    """NIfTI crops in HU (24^3) listed in a CSV `image,label[,split]` with string labels."""
    folder.mkdir(parents=True, exist_ok=True)
    y = np.arange(n) % len(names)
    vols = toy_volumes(y, size=24).astype(np.float32) * 4 - 500  # -> HU-like values
    rows = []
    for i, (c, v) in enumerate(zip(y, vols)):
        rel = f"crops/c{i:03d}.nii.gz"
        (folder / "crops").mkdir(exist_ok=True)
        nib.save(nib.Nifti1Image(v, np.eye(4)), str(folder / rel))
        row = {"image": rel, "label": names[c]}
        if with_split:
            row["split"] = "test" if i >= n - len(names) * 2 else "train"
        rows.append(row)
    path = folder / "crops.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def write_scratch_spec(folder: Path, backbone: dict = TINY_SWIN, crop=(32, 32, 32)) -> Path:
    """An encoder.json without weights: the architecture `scratch:<folder>` builds."""
    folder.mkdir(parents=True, exist_ok=True)
    meta = {
        "backbone": backbone,
        "method": "smart",
        "recipe": None,
        "in_channels": 1,
        "crop_size": list(crop),
    }
    (folder / "encoder.json").write_text(json.dumps(meta), encoding="utf-8")
    return folder
