"""Readers of labelled sources: a CSV of (image, label) or a MedMNIST 3D npz -> `LabelledSet`.

- CSV: a header with an image column (`image`) and a label column (`label`); relative paths are
  resolved against the CSV's folder (`medmim.data.sources.read_csv`). Each volume is read with
  `medmim.data.io.load_volume` and given the encoder's intensity recipe (`prepare`); an optional
  `split` column (`train` / `val` / `test`) fixes the held-out split. A group column (the
  patient: `group_key`, by default the first of `GROUP_COLUMNS` present, e.g. `phantom`) fills
  `LabelledSet.groups`, so that `medmim classify` keeps each patient's samples in one fold.
- MedMNIST npz (`{train,val,test}_{images,labels}`, uint8): images / 255 -> [0, 1], as the
  official loader does; the npz split is kept in `LabelledSet.split`. It holds no groups.

The set itself, the options and the dataset that feeds the encoder are in `medmim.eval.labelled`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medmim.errors import ConfigError, DataError, did_you_mean
from medmim.eval.labelled import LabelledOptions, LabelledSet, rename_classes, subset

log = logging.getLogger("medmim.eval")

MEDMNIST_SPLITS = ("train", "val", "test")
#: The columns `group_key="auto"` looks for, in order: the first present one groups the samples.
GROUP_COLUMNS = ("patient_id", "patient", "subject_id", "subject", "case_id", "phantom")


#: label texts that mean "missing" (pandas' and spreadsheets' spellings).
MISSING_LABELS = ("", "none", "nan", "na", "n/a", "null")


def encode_labels(raw: Sequence[Any], where: str) -> tuple[np.ndarray, list[str]]:
    """Class indices and names; integer-like labels keep their numeric order ('2' before '10')
    and '1', '1.0' and 1 are one class.

    Raises:
        DataError: a missing label (empty, NaN, None), fractional numbers (not class labels), or
            numbers mixed with names in one column; the row is named.
    """
    values = [str(v).strip() for v in raw]
    for i, v in enumerate(values):
        if v.lower() in MISSING_LABELS:
            raise DataError(
                where, f"row {i + 1} has no label ({v!r}); every volume needs a class label"
            )
    numbers = [_as_number(v) for v in values]
    if all(n is not None for n in numbers):
        fractional = next((v for v, n in zip(values, numbers) if n != int(n)), None)  # type: ignore[arg-type]
        if fractional is not None:
            raise DataError(
                where,
                f"label {fractional!r} is not a class: give integer classes or names "
                "(regression targets are not supported)",
            )
        values = [str(int(n)) for n in numbers]  # type: ignore[arg-type]
        names = sorted(set(values), key=int)
    elif any(n is not None for n in numbers):
        num = next(v for v, n in zip(values, numbers) if n is not None)
        name = next(v for v, n in zip(values, numbers) if n is None)
        raise DataError(
            where,
            f"labels mix numbers and names (e.g. {num!r} and {name!r}); use one "
            "kind for the whole column",
        )
    else:
        names = sorted(set(values))
    index = {n: i for i, n in enumerate(names)}
    codes = np.array([index[v] for v in values], dtype=np.int64)
    counts = np.bincount(codes, minlength=len(names))
    log.info(
        "%s: %d classes: %s",
        where,
        len(names),
        ", ".join(f"{n} ({c})" for n, c in zip(names, counts)),
    )
    return codes, names


def _as_number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if np.isfinite(value) else None


def load_medmnist(path: str | Path, split: str = "all") -> LabelledSet:
    """A MedMNIST v2 3D archive; `split` is 'train', 'val', 'test' or 'all' (all three)."""
    path = Path(path)
    wanted = MEDMNIST_SPLITS if split == "all" else (split,)
    with np.load(path, allow_pickle=False) as archive:
        keys = list(archive.keys())
        images, labels, splits, ids = [], [], [], []
        for s in wanted:
            if f"{s}_images" not in keys or f"{s}_labels" not in keys:
                raise DataError(
                    path,
                    f"no MedMNIST split '{s}' ({s}_images + {s}_labels)."
                    f"{did_you_mean(f'{s}_images', keys)} Arrays: {keys}",
                )
            x, y = archive[f"{s}_images"], archive[f"{s}_labels"]
            if x.ndim != 4 or len(y) != len(x):
                raise DataError(
                    path,
                    f"'{s}_images' {x.shape} / '{s}_labels' {y.shape}: expected "
                    "(N, D, H, W) volumes and N labels",
                )
            images += list(x)
            labels.append(np.asarray(y).reshape(len(y), -1)[:, 0])
            splits += [s] * len(x)
            ids += [f"{path.name}::{s}[{i}]" for i in range(len(x))]
    y, names = encode_labels(np.concatenate(labels), str(path))
    return LabelledSet(images, y, names, ids, np.array(splits), str(path))


def read_groups(
    records: Sequence[Any], path: str | Path, group_key: str = "auto", image_key: str = "image"
) -> tuple[np.ndarray | None, str | None]:
    """The group ids of a CSV's rows (see `LabelledOptions.group_key`).

    Args:
        records: the CSV's rows (`medmim.data.sources.Record`, other columns in `extra`).
        path: the CSV, for error messages.
        group_key: 'auto' (the first of `GROUP_COLUMNS` present), 'none', or a column name.
        image_key: the image column (listed in the error message).

    Returns:
        `(groups, column)`: (N,) str ids and the column used, or `(None, None)` for no grouping.

    Raises:
        DataError: a named column the CSV lacks, or a row with an empty group cell.
    """
    key = group_key.strip()
    columns = list(records[0].extra) if records else []
    if key.lower() == "none":
        return None, None
    if key.lower() == "auto":
        key = next((c for c in GROUP_COLUMNS if c in columns), "")
        if not key:
            return None, None
    elif key not in columns:
        has_label = bool(records) and records[0].label is not None
        cols = [image_key, *(["label"] if has_label else []), *columns]
        raise DataError(
            path,
            f"no group column '{key}'.{did_you_mean(key, cols)} Columns: {cols}; set "
            "`group_key` to the patient column, or `group_key=none` for no grouping",
        )
    values = [str(r.extra.get(key) or "").strip() for r in records]
    if "" in values:
        row = values.index("") + 1
        raise DataError(
            path,
            f"row {row} has no '{key}' (group) value; fill it, or pass `group_key=none`",
        )
    return np.array(values), key


def load_csv(
    path: str | Path,
    recipe: dict[str, Any] | None = None,
    image_key: str = "image",
    label_key: str = "label",
    group_key: str = "auto",
) -> LabelledSet:
    """Volumes listed in a CSV, each read and given `prepare(volume, recipe)`; `group_key` as in
    `read_groups`.
    """
    from medmim.data.sources import csv_header, read_csv

    path = Path(path)
    records = read_csv(path, key=image_key, key_flag="`image_key`")
    if not records:
        raise DataError(path, "lists no images")
    raw = [r.label if label_key == "label" else r.extra.get(label_key) for r in records]
    if all(v is None for v in raw):
        columns = csv_header(path)
        raise DataError(
            path,
            f"column '{label_key}' has no value in any row; fill it in or set `label_key`"
            if label_key in columns
            else f"no label column '{label_key}'.{did_you_mean(label_key, columns)} "
            f"Columns: {columns}; set `label_key`",
        )
    labels, names = encode_labels(raw, str(path))
    split = np.array([str(r.extra.get("split", "")).strip().lower() for r in records])
    unknown = sorted({str(s) for s in split} - {"", *MEDMNIST_SPLITS})
    if unknown:
        raise DataError(path, f"column 'split' has {unknown}; use train, val or test")
    groups, column = read_groups(records, path, group_key, image_key)
    images = [prepare(r.load(), recipe) for r in records]
    ids = [r.name for r in records]  # unique, also for two series of one DICOM folder
    return LabelledSet(images, labels, names, ids, split, str(path), groups, column)


def prepare(volume: Any, recipe: dict[str, Any] | None) -> np.ndarray:
    """A read volume (1, X, Y, Z) -> (X, Y, Z) float32 after the recipe's intensity mapping.

    Crops are already cut around the object, so only the intensity part of the recipe applies
    (CT window -> [0, 1], MR normalisation); the geometry of a crop is kept as is and the crop is
    resized to the encoder's input later (as MedMNIST does). `recipe=None` is the default recipe
    (`medmim.data.config.RecipeConfig`: CT window -750..1750 HU).
    """
    from medmim.data.preprocess import check_recipe, normalize_intensity

    out = normalize_intensity(volume, check_recipe(recipe if recipe is not None else {}))
    return out.detach().cpu().as_subclass(torch.Tensor).numpy().astype(np.float32)[0]


def source_recipe(
    source: str | Path, meta: dict[str, Any], override: str | None
) -> dict[str, Any] | None:
    """The intensity recipe for a CSV's volumes: `recipe`, else the encoder's (see
    `medmim.eval.runtime.resolve_recipe`); None for a MedMNIST npz, which is already 0..255.
    """
    from medmim.eval.runtime import resolve_recipe

    return resolve_recipe(meta, override) if Path(source).suffix.lower() == ".csv" else None


def load_labelled(
    source: str | Path,
    *,
    recipe: dict[str, Any] | None = None,
    split: str = "all",
    image_key: str = "image",
    label_key: str = "label",
    group_key: str = "auto",
) -> LabelledSet:
    """A CSV or MedMNIST npz as a `LabelledSet` (see the module docstring); `group_key` as in
    `read_groups` (an npz has no groups: only 'auto' or 'none' go with one).
    """
    path = Path(source)
    if not path.is_file():
        raise DataError(path, "not found; give a CSV (image,label) or a MedMNIST .npz")
    if path.suffix.lower() == ".npz":
        if group_key.strip().lower() not in ("auto", "none"):
            raise ConfigError(
                f"`group_key={group_key}`: {path.name} is a MedMNIST npz, which has no group "
                "column; use `group_key=auto` or `group_key=none`"
            )
        return load_medmnist(path, split)
    if path.suffix.lower() == ".csv":
        data = load_csv(path, recipe, image_key, label_key, group_key)
        if split != "all":
            keep = np.flatnonzero(data.split == split)
            data = subset(data, keep)
        return data
    raise DataError(path, f"unsupported extension '{path.suffix}'; give a .csv or a MedMNIST .npz")


def load_for_encoder(
    source: str | Path, meta: dict[str, Any], opts: LabelledOptions, split: str = "all"
) -> LabelledSet:
    """`load_labelled` with the encoder's recipe (`source_recipe`) and `opts`' keys and names."""
    recipe = source_recipe(source, meta, opts.recipe)
    if recipe is not None:
        from medmim.data.sources import read_csv
        from medmim.eval.runtime import check_data_recipe

        records = read_csv(Path(source), key=opts.image_key, key_flag="`image_key`")
        check_data_recipe(records, recipe, opts.force_recipe, opts.recipe, str(source), crops=True)
    data = load_labelled(
        source,
        recipe=recipe,
        split=split,
        image_key=opts.image_key,
        label_key=opts.label_key,
        group_key=opts.group_key,
    )
    return rename_classes(data, opts.class_names)
