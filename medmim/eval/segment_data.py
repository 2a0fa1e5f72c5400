"""Cases, splits, label names and training crops for `medmim segment`.

Splits of an MSD-style datalist JSON: `training` is fine-tuned on; `validation` is evaluated
(when the datalist has none, a seeded `val_fraction` of `training` is held out, at least one
case); `test` entries are only predicted. `train_fraction` keeps a seeded subset of the
training cases (the limited-data study, SMART sec. 5.6), always at least one.

Training crops follow SMIT's fine-tuning pipeline (smart-smit-attmask reference §2):
`RandCropByPosNegLabeld` (pos 1, neg 1, `num_samples` crops per scan) after padding to the
ROI, `RandRotate90d` (p 0.2, in the axial plane when it is square), `RandScaleIntensityd` and
`RandShiftIntensityd` (0.1, p 0.1). Flips are off, as in SMIT.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import DataLoader, Dataset, list_data_collate
from monai.transforms import (
    Compose,
    RandCropByPosNegLabeld,
    RandRotate90d,
    RandScaleIntensityd,
    RandShiftIntensityd,
    SpatialPadd,
)

from medmim.data.sources import Record, resolve_source
from medmim.errors import ConfigError, DataError
from medmim.eval.volumes import Case, load_case

log = logging.getLogger(__name__)


@dataclass
class Splits:
    """Records per role; `base` is the datalist's folder (for relative extra fields)."""

    train: list[Record]
    val: list[Record]
    test: list[Record]
    base: Path


def datalist_sections(path: str | Path) -> dict[str, Any]:
    """The parsed datalist JSON (DataError when it is not one)."""
    path = Path(path)
    if path.suffix.lower() != ".json":
        raise DataError(
            path,
            "segmentation needs an MSD-style datalist JSON "
            '({"training": [{"image": ..., "label": ...}], ...})',
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(path, f"not a readable JSON datalist: {exc}") from exc
    if not isinstance(data, dict) or "training" not in data:
        raise DataError(
            path,
            f"no 'training' section (sections: {list(data) if isinstance(data, dict) else []})",
        )
    return data


def make_splits(
    path: str | Path, train_fraction: float = 1.0, val_fraction: float = 0.2, seed: int = 0
) -> Splits:
    """Training / validation / test records of a datalist (see the module docstring)."""
    if not 0 < train_fraction <= 1:
        raise ConfigError(f"--train-fraction={train_fraction}: give a fraction in (0, 1]")
    data = datalist_sections(path)
    train = resolve_source(path, split="training")
    missing = [r.image for r in train if r.label is None]
    if missing:
        raise DataError(path, f"training entries without a 'label': {missing[:3]}")
    rng = random.Random(seed)
    if "validation" in data:
        val = resolve_source(path, split="validation")
    else:
        if len(train) < 2:
            raise DataError(path, "one training case and no 'validation' section: add cases")
        order = list(range(len(train)))
        rng.shuffle(order)
        n_val = min(len(train) - 1, max(1, round(val_fraction * len(train))))
        val = [train[i] for i in sorted(order[:n_val])]
        train = [train[i] for i in sorted(order[n_val:])]
    if train_fraction < 1:
        keep = sorted(rng.sample(range(len(train)), max(1, round(train_fraction * len(train)))))
        train = [train[i] for i in keep]
    test = resolve_source(path, split="test") if data.get("test") else []
    return Splits(train, val, test, Path(path).parent)


def label_names(path: str | Path, given: Sequence[str] | None, cases: Sequence[Case]) -> list[str]:
    """Foreground class names, class k = names[k - 1].

    From `--labels`, else the datalist's MSD `labels` dict ({"0": "background", "1": ...}),
    else `class_1..class_K` with K the largest label value in the training cases.
    """
    for c in cases:
        check_label_map(c.masks["label"], c.record.label)
    top = max(int(c.masks["label"].max()) for c in cases)
    if given:
        names = list(given)
    else:
        labels = datalist_sections(path).get("labels")
        if isinstance(labels, dict):
            names = [str(labels[k]) for k in sorted(labels, key=int) if int(k) > 0]
        else:
            present = sorted({int(v) for c in cases for v in np.unique(c.masks["label"]) if v > 0})
            if top > MAX_UNNAMED_CLASSES and len(present) < top:
                raise DataError(
                    path,
                    f"label values {present[:8]}{' ...' if len(present) > 8 else ''} "
                    f"reach {top} with no class names: that would train {top} classes. "
                    "Name the classes with --labels or a datalist 'labels' dict, or "
                    "remap the label maps to 0..K",
                )
            names = [f"class_{k}" for k in range(1, top + 1)]
    if top > len(names):
        bad = next(c for c in cases if int(c.masks["label"].max()) > len(names))
        raise DataError(
            bad.record.label,
            f"label value {int(bad.masks['label'].max())} but only "
            f"{len(names)} classes named ({names}); fix --labels",
        )
    return names


#: without class names, label values up to this are taken as classes 1..K even when some
#: do not occur in the training cases; above it, gaps mean the label maps are not class maps.
MAX_UNNAMED_CLASSES = 16


def check_label_map(label: Any, where: Any) -> None:
    """A label map holds integers >= 0 (0 = background).

    Raises:
        DataError: negative or non-integer values, with the file and the fix.
    """
    values = np.asarray(label)
    low = float(values.min()) if values.size else 0.0
    if low < 0:
        raise DataError(
            where,
            f"label map holds negative values (min {low:g}); labels are 0 "
            "(background) and 1..K; remap it",
        )
    if values.dtype.kind == "f" and not np.array_equal(values, np.round(values)):
        frac = float(values[values != np.round(values)].flat[0])
        raise DataError(
            where,
            f"label map holds non-integer values (e.g. {frac:g}): is it an image "
            "rather than a label map? Labels are integers 0..K",
        )


def load_cases(records: Sequence[Record], recipe: Any, with_labels: bool = True) -> list[Case]:
    """Preprocess each record (and its label) with the recipe."""
    return [load_case(r, recipe, ("label",) if with_labels else ()) for r in records]


def crop_loader(
    cases: Sequence[Case], roi: Sequence[int], num_samples: int, batch_size: int, seed: int
) -> DataLoader:
    """A shuffled DataLoader of (B * num_samples) random crops {"image", "label"} (C, *roi)."""
    items = [
        {
            "image": torch.from_numpy(np.ascontiguousarray(c.image)),
            "label": torch.from_numpy(c.masks["label"][None].astype(np.float32)),
        }
        for c in cases
    ]
    roi = [int(r) for r in roi]
    steps = [
        SpatialPadd(["image", "label"], spatial_size=roi),
        RandCropByPosNegLabeld(
            ["image", "label"],
            label_key="label",
            spatial_size=roi,
            pos=1,
            neg=1,
            num_samples=num_samples,
            image_key="image",
            image_threshold=-float("inf"),
            allow_smaller=False,
        ),
    ]
    if roi[0] == roi[1]:
        steps.append(RandRotate90d(["image", "label"], prob=0.2, max_k=3, spatial_axes=(0, 1)))
    steps += [
        RandScaleIntensityd("image", factors=0.1, prob=0.1),
        RandShiftIntensityd("image", offsets=0.1, prob=0.1),
    ]
    transform = Compose(steps).set_random_state(seed=seed)
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        Dataset(items, transform),
        batch_size=batch_size,
        shuffle=True,
        collate_fn=list_data_collate,
        generator=generator,
        num_workers=0,
    )
