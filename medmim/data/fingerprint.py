"""Dataset fingerprint, after nnU-Net's: what is in a source before any recipe is chosen.

For every readable scan: shape, spacing, orientation and a uniform sample of its voxels. Over
the source: counts, spacing and shape statistics (median, min, max per axis), intensity
percentiles of the pooled samples, a modality guess, the unreadable files with their reasons,
and a suggested recipe (median spacing, as nnU-Net's default target).

Modality, per scan: the DICOM `Modality` tag when the scan has one (`modality_source: "dicom"`),
else a guess from the intensities (`modality_source: "intensity"`): "CT" when at least 1% of the
sampled voxels are below -500 (air in Hounsfield units; MR and MedMNIST intensities are never
that negative), else "MR" (which covers any non-HU intensity scale). The source's modality is
the majority of its scans.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
from nibabel.orientations import aff2axcodes

from medmim.data.io import spacing_of
from medmim.data.sources import Record, resolve_source
from medmim.errors import DataError

PERCENTILES = (0.5, 5.0, 25.0, 50.0, 75.0, 95.0, 99.5)


def fingerprint(
    records: Sequence[Record], *, samples: int = 10_000, seed: int = 0, progress: bool = True
) -> dict[str, Any]:
    """Read every record and summarise the source (a JSON-able dict, see module docstring).

    Args:
        records: the source's records (`medmim.data.sources.resolve_source`).
        samples: voxels sampled per scan for the intensity statistics.
        seed: seed of the voxel sampling.
        progress: show a progress bar.
    """
    from tqdm.auto import tqdm

    rng = np.random.default_rng(seed)
    cases, unreadable, pooled = [], [], []
    for record in tqdm(
        records, desc="fingerprint", unit="scan", disable=not progress or None, leave=False
    ):
        try:
            volume = record.load()
        except DataError as exc:
            unreadable.append(exc.to_record())
            continue
        values = volume.numpy().reshape(-1)
        sample = values[rng.integers(0, values.size, size=min(samples, values.size))]
        pooled.append(sample)
        cases.append(_case(record, volume, sample))
    return _summarise(records, cases, unreadable, pooled)


def fingerprint_source(
    source: str,
    *,
    key: str = "image",
    split: str = "training",
    samples: int = 10_000,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """`fingerprint` of every record of `source`; sub-folders that cannot be listed are
    counted and listed among the unreadable files instead of stopping the scan.

    Args:
        source: a folder, datalist JSON, CSV, MedMNIST npz or one image.
        key: the datalist / CSV field of the image path.
        split: the datalist section or npz split.
        samples: voxels sampled per scan.
        seed: seed of the voxel sampling.
        progress: show a progress bar.
    """
    unlisted: list[DataError] = []
    records = resolve_source(source, key=key, split=split, skipped=unlisted)
    fp = fingerprint(records, samples=samples, seed=seed, progress=progress)
    fp["unreadable"] = [e.to_record() for e in unlisted] + fp["unreadable"]
    fp["num_unreadable"] += len(unlisted)
    return fp


def guess_modality(sample: np.ndarray) -> str:
    """'CT' when >= 1% of the voxels are below -500 (air in HU), else 'MR'."""
    return "CT" if sample.size and float((sample < -500).mean()) >= 0.01 else "MR"


def _case(record: Record, volume: Any, sample: np.ndarray) -> dict[str, Any]:
    affine = np.asarray(volume.affine, dtype=np.float64)
    return {
        "path": record.name,
        "shape": [int(s) for s in volume.shape[1:]],
        "spacing": [round(float(s), 4) for s in spacing_of(affine)],
        "orientation": "".join(aff2axcodes(affine)),
        "min": float(sample.min()),
        "max": float(sample.max()),
        **_modality(volume, sample),
    }


def _modality(volume: Any, sample: np.ndarray) -> dict[str, str]:
    """The DICOM Modality tag when present, else the intensity guess; and which it was."""
    tag = getattr(volume, "meta", {}).get("modality")
    if tag:
        return {"modality": str(tag), "modality_source": "dicom"}
    return {"modality": guess_modality(sample), "modality_source": "intensity"}


def _axis_stats(rows: list[list[float]]) -> dict[str, list[float]]:
    a = np.asarray(rows, dtype=np.float64)
    return {"median": np.median(a, 0).tolist(), "min": a.min(0).tolist(), "max": a.max(0).tolist()}


def _summarise(records, cases, unreadable, pooled) -> dict[str, Any]:
    out: dict[str, Any] = {
        "num_records": len(records),
        "num_readable": len(cases),
        "num_unreadable": len(unreadable),
        "unreadable": unreadable,
    }
    if cases:
        sample = np.concatenate(pooled)
        votes = Counter(c["modality"] for c in cases)
        modality = votes.most_common(1)[0][0]
        spacing = _axis_stats([c["spacing"] for c in cases])
        out.update(
            spacing=spacing,
            shape=_axis_stats([c["shape"] for c in cases]),
            orientation=dict(Counter(c["orientation"] for c in cases)),
            intensity={
                "percentiles": {
                    str(p): float(v)
                    for p, v in zip(PERCENTILES, np.percentile(sample, PERCENTILES))
                },
                "mean": float(sample.mean()),
                "std": float(sample.std()),
                "min": float(sample.min()),
                "max": float(sample.max()),
            },
            modality=modality,
            modality_votes=dict(votes),
            suggested_recipe={
                "spacing": [round(s, 3) for s in spacing["median"]],
                "intensity": "ct" if modality == "CT" else "mr_zscore",
            },
        )
    out["cases"] = cases
    return out


def format_summary(fp: dict[str, Any]) -> str:
    """A few readable lines of a fingerprint."""
    lines = [
        f"scans: {fp['num_readable']} readable, {fp['num_unreadable']} unreadable "
        f"of {fp['num_records']}"
    ]
    if fp["num_readable"]:

        def fmt(v: list[float]) -> str:
            return " x ".join(f"{x:g}" for x in v)

        for name, unit in (("spacing", " mm"), ("shape", "")):
            s = fp[name]
            lines.append(
                f"{name}: median {fmt(s['median'])}{unit} "
                f"(min {fmt(s['min'])}, max {fmt(s['max'])})"
            )
        p = fp["intensity"]["percentiles"]
        lines.append(
            f"intensity: p0.5 {p['0.5']:.4g}, median {p['50.0']:.4g}, p99.5 {p['99.5']:.4g} "
            f"(mean {fp['intensity']['mean']:.4g}, std {fp['intensity']['std']:.4g})"
        )
        lines.append(f"orientation: {', '.join(f'{k} x{v}' for k, v in fp['orientation'].items())}")
        lines.append(
            f"modality: {fp['modality']} {fp['modality_votes']} ({_sources(fp['cases'])}); "
            f"suggested recipe {fp['suggested_recipe']}"
        )
    for bad in fp["unreadable"]:
        lines.append(f"unreadable: {bad['path']}: {bad['reason']}")
    return "\n".join(lines)


def _sources(cases: list[dict[str, Any]]) -> str:
    """'2 from DICOM tags, 1 guessed from intensities'."""
    votes = Counter(c.get("modality_source", "intensity") for c in cases)
    parts = [f"{votes['dicom']} from DICOM tags"] if votes["dicom"] else []
    if votes["intensity"]:
        parts.append(f"{votes['intensity']} guessed from intensities")
    return ", ".join(parts)
