"""Synthetic CT phantoms: medmim's embedded default data for its demo and tests.

`generate_phantoms(out_dir, n, seed)` writes `n` thorax-abdomen CT volumes (HU, int16 NIfTI with
a real, sometimes oblique affine and varied, often anisotropic spacing) with organ labels, lung
nodules (benign / malignant, each with a mask), one abdominal tumor each, and the derived
datasets the downstream tasks read:

```
OUT/images/phantom_0000.nii.gz                  CT in HU (the pretraining source: OUT/images)
OUT/labels/phantom_0000_organs.nii.gz           organ label map (ORGAN_LABELS)
OUT/labels/phantom_0000_nodules.nii.gz          nodule instance map (0 = none, k = nodule k)
OUT/labels/phantom_0000_tumor.nii.gz            tumor mask (0/1)
OUT/meta/phantom_0000.json                      geometry, tissue HU, lesion descriptions
OUT/nodule_crops/phantom_0000_n01.nii.gz        RAS crop around each nodule (HU)
OUT/labels/nodule_crops/phantom_0000_n01_mask.nii.gz
OUT/nodules.csv                                 one row per nodule: image (crop), label
                                                (malignant)...
OUT/organs.json                                 MSD-style datalist: image + organ label map
OUT/tumors.json                                 datalist: image + tumor mask (zero-shot
                                                localization)
OUT/organmnist3d.npz, OUT/organmnist3d_64.npz   OrganMNIST3D-like organ crops (28^3, 64^3 uint8)
OUT/phantoms.json                               label tables, options and counts
```

Splits are by phantom (70 / 15 / 15 %, in index order), so no phantom feeds two splits. The
same seed gives the same bytes on the same NumPy/SciPy/nibabel; phantom i does not depend on n.
See docs/phantoms.md for the anatomy and what the phantoms can and cannot stand in for.
"""

from __future__ import annotations

import csv
import io
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from medmim.data.config import RecipeConfig
from medmim.data.synth.export import save_json, save_npz
from medmim.data.synth.geometry import SIZES
from medmim.data.synth.phantom import ORGAN_CLASSES, PhantomOptions, make_phantom
from medmim.data.synth.tissues import ORGAN_LABELS, TISSUE_HU
from medmim.errors import ConfigError, did_you_mean

__all__ = ["ORGAN_CLASSES", "ORGAN_LABELS", "SIZES", "generate_phantoms", "split_of"]

SPLITS = ("train", "val", "test")
_DATALIST_SPLITS = {"train": "training", "val": "validation", "test": "test"}
CSV_FIELDS = (
    "image",
    "label",
    "split",
    "phantom",
    "phantom_image",
    "nodule_id",
    "diameter_mm",
    "volume_mm3",
    "center_x_mm",
    "center_y_mm",
    "center_z_mm",
    "center_i",
    "center_j",
    "center_k",
    "lung",
    "juxtapleural",
    "lobulation",
    "spicules",
    "calcification",
    "halo_mm",
    "cavitated",
    "crop_mask",
)


def split_of(index: int, n: int) -> str:
    """The split of phantom `index` of `n`: the last 15 % test, the 15 % before them val
    (each at least one phantom once n >= 3), the rest train.
    """
    n_hold = max(1, round(0.15 * n)) if n >= 3 else 0
    if index >= n - n_hold:
        return "test"
    if index >= n - 2 * n_hold:
        return "val"
    return "train"


def generate_phantoms(
    out_dir: str | Path,
    n: int,
    seed: int = 0,
    size: str = "default",
    *,
    nodules: tuple[int, int] = (2, 4),
    p_malignant: float = 0.5,
    crop_size: int = 32,
    crop_spacing: float = 1.5,
    window: tuple[float, float] | None = None,
    workers: int = 1,
    callback: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Generate `n` phantoms and their derived datasets in `out_dir` (see the module docstring).

    Args:
        out_dir: output folder (created; existing files of the same names are overwritten).
        n: number of phantoms.
        seed: the set's seed; phantom i uses (seed, i).
        size: 'default' (1.2-2 mm in-plane, 1.5-5 mm slices, <= 4 M voxels, about a second each)
            or 'small' (2.8-3.6 mm, 3-6 mm slices, <= 0.6 M voxels; for tests).
        nodules: (min, max) nodules per phantom.
        p_malignant: probability a nodule is malignant.
        crop_size: side of the cubic nodule crops, in voxels.
        crop_spacing: voxel size of the nodule crops, in mm.
        window: HU window mapped to 0..255 in the OrganMNIST3D-like archives; default: the
            pretraining recipe's CT window, so archive / 255 matches preprocessed volumes.
        workers: processes generating phantoms in parallel (the output does not depend on it).
        callback: called with each phantom's record (in index order) as it is done.

    Returns:
        A summary: counts of phantoms, nodules (benign / malignant per split), tumors per organ,
        organ crops, spacings, the files written and the seconds taken.
    """
    if size not in SIZES:
        raise ConfigError(
            f"phantom size '{size}' is unknown.{did_you_mean(size, SIZES)} "
            f"Choose one of {list(SIZES)}."
        )
    if n < 1:
        raise ConfigError(f"phantom count n={n} must be at least 1.")
    if not 0 <= nodules[0] <= nodules[1]:
        raise ConfigError(f"nodules={nodules} must be (min, max) with 0 <= min <= max.")
    if not 0.0 <= p_malignant <= 1.0 or crop_size < 1 or crop_spacing <= 0:
        raise ConfigError(
            f"p_malignant={p_malignant} must lie in [0, 1], crop_size={crop_size} be >= 1 "
            f"and crop_spacing={crop_spacing} be > 0."
        )
    window = tuple(window or RecipeConfig().window)
    opts = PhantomOptions(
        size=size,
        nodules=tuple(nodules),
        p_malignant=p_malignant,
        crop_size=crop_size,
        crop_spacing=crop_spacing,
        window=window,
    )  # type: ignore[arg-type]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    records = []
    for record in _run(n, seed, out, opts, workers):
        record["split"] = split_of(len(records), n)
        records.append(record)
        if callback is not None:
            callback(record)
    files = _write_datasets(out, records, opts)
    summary = _summary(records, opts, seed, files)
    save_json(out / "phantoms.json", summary)
    return {**summary, "out_dir": str(out), "seconds": round(time.perf_counter() - start, 2)}


def _run(n: int, seed: int, out: Path, opts: PhantomOptions, workers: int):
    if workers <= 1:
        for i in range(n):
            yield make_phantom(i, seed, out, opts)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(make_phantom, range(n), [seed] * n, [out] * n, [opts] * n)


def _write_datasets(out: Path, records: list[dict[str, Any]], opts: PhantomOptions) -> list[str]:
    """nodules.csv, organs.json, tumors.json and the OrganMNIST3D-like archives."""
    rows = []
    for rec in records:
        for nod in rec["nodules"]:
            rows.append(_csv_row(rec, nod))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    (out / "nodules.csv").write_text(buf.getvalue(), encoding="utf-8")
    labels = {str(k): v for k, v in ORGAN_LABELS.items()}
    organs: dict[str, Any] = {
        "name": "medmim phantoms: organs",
        "modality": {"0": "CT"},
        "labels": labels,
    }
    tumors: dict[str, Any] = {
        "name": "medmim phantoms: tumors",
        "modality": {"0": "CT"},
        "labels": {"0": "background", "1": "tumor"},
    }
    for split in SPLITS:
        part = [r for r in records if r["split"] == split]
        organs[_DATALIST_SPLITS[split]] = [
            {"image": r["files"]["image"], "label": r["files"]["organs"]} for r in part
        ]
        tumors[_DATALIST_SPLITS[split]] = [
            {
                "image": r["files"]["image"],
                "label": r["files"]["tumor"],
                "organ": r["tumor"]["organ"],
                "center_mm": r["tumor"]["center_mm"],
                "diameter_mm": r["tumor"]["diameter_mm"],
            }
            for r in part
            if r["tumor"] is not None
        ]
    save_json(out / "organs.json", organs)
    save_json(out / "tumors.json", tumors)
    files = ["nodules.csv", "organs.json", "tumors.json"]
    for size in opts.organ_sizes:
        name = "organmnist3d.npz" if size == 28 else f"organmnist3d_{size}.npz"
        arrays = {}
        for split in SPLITS:
            part = [r for r in records if r["split"] == split]
            images = [r["organ_crops"][size] for r in part]
            arrays[f"{split}_images"] = (
                np.concatenate(images) if images else np.zeros((0,) + (size,) * 3, np.uint8)
            )
            labels_ = [r["organ_labels"] for r in part]
            arrays[f"{split}_labels"] = (
                np.concatenate(labels_) if labels_ else np.zeros(0, np.uint8)
            )[:, None]
        save_npz(out / name, arrays)
        files.append(name)
    return files


def _csv_row(rec: dict[str, Any], nod: dict[str, Any]) -> dict[str, Any]:
    row = {
        "image": nod["crop"],
        "label": nod["malignant"],
        "split": rec["split"],
        "phantom": rec["name"],
        "phantom_image": rec["files"]["image"],
        "nodule_id": nod["id"],
        "crop_mask": nod["crop_mask"],
    }
    for axis, v in zip("xyz", nod["center_mm"]):
        row[f"center_{axis}_mm"] = v
    for axis, v in zip("ijk", nod["center_voxel"]):
        row[f"center_{axis}"] = v
    for key in (
        "diameter_mm",
        "volume_mm3",
        "lung",
        "juxtapleural",
        "lobulation",
        "spicules",
        "calcification",
        "halo_mm",
        "cavitated",
    ):
        row[key] = int(nod[key]) if isinstance(nod[key], bool) else nod[key]
    return row


def _summary(
    records: list[dict[str, Any]], opts: PhantomOptions, seed: int, files: list[str]
) -> dict[str, Any]:
    nodules = {s: Counter() for s in SPLITS}
    for rec in records:
        for nod in rec["nodules"]:
            nodules[rec["split"]]["malignant" if nod["malignant"] else "benign"] += 1
    spacing = np.array([r["meta"]["spacing"] for r in records])
    organ_counts = Counter(ORGAN_CLASSES[int(c)] for r in records for c in r["organ_labels"])
    return {
        "n": len(records),
        "seed": seed,
        "options": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(opts).items()},
        "splits": dict(Counter(r["split"] for r in records)),
        "nodules": {
            s: {"benign": c["benign"], "malignant": c["malignant"]} for s, c in nodules.items()
        },
        "tumors": dict(Counter(r["tumor"]["organ"] for r in records if r["tumor"] is not None)),
        "organ_crops": {o: organ_counts[o] for o in ORGAN_CLASSES},
        "anisotropic": int((spacing[:, 2] / spacing[:, 0] > 1.25).sum()),
        "spacing_mm": {
            "inplane": [float(spacing[:, 0].min()), float(spacing[:, 0].max())],
            "slice": [float(spacing[:, 2].min()), float(spacing[:, 2].max())],
        },
        "voxels": int(sum(np.prod(r["meta"]["shape"]) for r in records)),
        "organ_labels": {str(k): v for k, v in ORGAN_LABELS.items()},
        "organ_classes": {str(i): o for i, o in enumerate(ORGAN_CLASSES)},
        "tissue_hu": {k: {"native": v[0], "portal": v[1]} for k, v in TISSUE_HU.items()},
        "files": ["images/", "labels/", "meta/", "nodule_crops/"] + files,
    }
