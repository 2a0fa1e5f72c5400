"""Data sources: where the images are. Every source becomes a list of `Record`s.

A source is one of:

- a folder, scanned recursively for image files and DICOM folders; a DICOM folder gives one
  record per series (SeriesInstanceUID), named `folder::series-<hash>` when it holds several.
  A sub-folder that cannot be listed is an error, or, given a `skipped` list, recorded there
  and passed over (training's `on_error=skip`). Sub-folders whose
  name starts with 'label' or 'mask' (MSD `labelsTr`, nnU-Net, the phantoms' `labels/`) are
  skipped, so a dataset root never feeds segmentations to pretraining as images. MedMNIST
  archives found in a folder are skipped too (give the `.npz` itself as the source);
- an MSD-style datalist JSON `{"training": [{"image": ..., "label": ...}, ...]}` (the section is
  `split`, the image field is `key`; relative paths are resolved against the JSON's folder);
- a CSV with a header `image,label,...` (relative paths resolved against the CSV's folder);
- a MedMNIST v2 3D `.npz` (`train_images` (N, 28, 28, 28) uint8, `train_labels` (N, 1), `val_*`,
  `test_*`); one record per volume, values kept as uint8 0..255: use the "medmnist" recipe
  (`orientation='' spacing=null window=[0,255] foreground_crop=false`).
  'training'/'validation' are read as 'train'/'val';
- a single image file or DICOM folder.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medmim.data.dicom import list_series, series_tag
from medmim.data.formats import EXTENSIONS, extension, is_dicom_dir, is_dicom_file
from medmim.data.io import load_volume
from medmim.errors import DataError, did_you_mean

#: Folder name prefixes that hold segmentations, skipped when a folder is scanned.
LABEL_DIR_PREFIXES: tuple[str, ...] = ("label", "mask")
_SPLIT_ALIASES = {"training": "train", "validation": "val", "testing": "test"}


@dataclass(frozen=True)
class Record:
    """One image of a source.

    Attributes:
        image: path of the image file or DICOM series folder.
        label: the label path or class, if the source has one.
        extra: the other fields of the datalist / CSV row.
        array_key: for `.npz` sources, the array holding the volume ('train_images').
        array_index: for stacked volumes (MedMNIST), the volume's index in `array_key`.
        series: for a DICOM folder that holds several series, the SeriesInstanceUID of this
            one (None: the folder's only series).
    """

    image: str
    label: Any = None
    extra: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    array_key: str | None = None
    array_index: int | None = None
    series: str | None = None

    @property
    def name(self) -> str:
        """A unique, readable id: the path, plus '::key[i]' for a volume inside an archive or
        '::series-<hash>' for one series of a DICOM folder (no patient identifier).
        """
        if self.series is not None:
            return f"{self.image}::{series_tag(self.series)}"
        if self.array_key is None:
            return self.image
        return f"{self.image}::{self.array_key}[{self.array_index}]"

    def load(self, **kwargs: Any):
        """Read the volume (see `medmim.data.io.load_volume`)."""
        return load_volume(
            self.image,
            array_key=self.array_key,
            array_index=self.array_index,
            series=self.series,
            **kwargs,
        )


def resolve_source(
    source: str | Path,
    *,
    key: str = "image",
    split: str = "training",
    skipped: list[DataError] | None = None,
) -> list[Record]:
    """List the records of a source (a folder, datalist JSON, CSV, MedMNIST npz or one image).

    Args:
        source: the source path.
        key: datalist / CSV field of the image path.
        split: datalist section or MedMNIST split.
        skipped: when given (training's `on_error=skip`), sub-folders of a folder source that
            cannot be listed are appended here as `DataError`s and passed over; when None they
            are an error.

    Raises:
        DataError: when the source does not exist, cannot be parsed or holds no images.
    """
    path = Path(source).expanduser()
    if not str(source):
        raise DataError(
            "data.source", "no source given; set data.source=PATH (folder, JSON, CSV or npz)"
        )
    if not path.exists():
        raise DataError(path, "source not found")
    ext = extension(path)
    try:
        dicom = is_dicom_dir(path)
    except OSError as exc:
        raise _unlistable(path, exc) from exc
    if path.is_dir() and not dicom:
        records = scan_folder(path, skipped=skipped)
    elif dicom:
        records = dicom_records(path)
    elif ext == ".json":
        records = read_datalist(path, key=key, split=split)
    elif ext == ".csv":
        records = read_csv(path, key=key)
    elif ext == ".npz" and _medmnist_keys(path):
        records = read_medmnist(path, split=split)
    else:
        records = [Record(str(path))]
    if not records:
        raise DataError(
            path, f"source holds no images (supported: {', '.join(EXTENSIONS)}, DICOM folders)"
        )
    return records


def scan_folder(
    folder: str | Path, *, skipped: list[DataError] | None = None, _seen: set[str] | None = None
) -> list[Record]:
    """Image files and DICOM series under `folder`, sorted by path (see `dicom_records`).

    Symbolic links are followed once: a folder or file whose resolved path was already scanned
    (a link loop such as `ln -s . a`, or a second link to the same data) is skipped, so a scan
    always ends and lists each scan once.

    Args:
        folder: the folder to scan.
        skipped: when given, a sub-folder that cannot be listed is appended here (as a
            `DataError` naming it) and passed over instead of raising.

    Raises:
        DataError: a folder that cannot be listed (permissions), named; for a sub-folder only
            when `skipped` is None.
    """
    folder = Path(folder)
    seen = set() if _seen is None else _seen
    seen.add(os.path.realpath(folder))
    try:
        entries = sorted(folder.iterdir())
    except OSError as exc:
        if skipped is None or _seen is None:
            raise _unlistable(folder, exc) from exc
        skipped.append(_unlistable(folder, exc))
        return []
    found: list[Record] = []
    for path in entries:
        real = os.path.realpath(path)
        if path.name.startswith(".") or real in seen:
            continue
        if path.is_dir():
            if path.name.lower().startswith(LABEL_DIR_PREFIXES):
                continue
            try:
                dicom = is_dicom_dir(path)
            except OSError as exc:
                if skipped is None:
                    raise _unlistable(path, exc) from exc
                skipped.append(_unlistable(path, exc))
                continue
            if dicom:
                found.extend(dicom_records(path))
            found.extend(scan_folder(path, skipped=skipped, _seen=seen))
        elif extension(path) in EXTENSIONS and not is_dicom_file(path):
            seen.add(real)
            if extension(path) == ".npz" and _medmnist_keys(path):
                continue
            found.append(Record(str(path)))
    return found


def dicom_records(folder: str | Path) -> list[Record]:
    """One record per DICOM series in `folder` (its direct files); `series` is set only when
    the folder holds several, so a one-series folder keeps its plain name. A folder in which
    GDCM finds no image series gives one record, whose loading names the problem.
    """
    uids = list_series(folder)
    if len(uids) <= 1:
        return [Record(str(folder))]
    return [Record(str(folder), series=uid) for uid in uids]


def _unlistable(folder: Path, exc: OSError) -> DataError:
    return DataError(
        folder,
        f"cannot be listed ({exc.strerror or exc}); fix its permissions or "
        "move it out of the source folder",
    )


def read_datalist(path: str | Path, *, key: str = "image", split: str = "training") -> list[Record]:
    """Records of one section of an MSD-style datalist JSON."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(path, f"not a readable JSON datalist: {exc}") from exc
    if not isinstance(data, dict) or split not in data:
        keys = list(data) if isinstance(data, dict) else []
        raise DataError(
            path,
            f"no section '{split}'.{did_you_mean(split, keys)} Sections: {keys}; set data.split",
        )
    records = []
    entries = data[split]
    if not isinstance(entries, list):
        raise DataError(
            path, f"section '{split}' is a {type(entries).__name__}, not a list of entries"
        )
    for i, item in enumerate(entries):
        if not isinstance(item, (str, dict)):
            raise DataError(
                path,
                f"{split}[{i}] is a {type(item).__name__} ({item!r:.40}), not an "
                f'object like {{"{key}": "path"}} or a path',
            )
        item = {key: item} if isinstance(item, str) else dict(item)
        if key not in item:
            raise DataError(
                path,
                f"{split}[{i}] has no field '{key}'.{did_you_mean(key, item)} Fields: {list(item)}",
            )
        records.append(_record(path.parent, item, key))
    return records


def read_csv(path: str | Path, *, key: str = "image", key_flag: str = "data.key") -> list[Record]:
    """Records of a CSV with a header row; `key` names the image column (`key_flag`: how the
    caller sets it, for the error message). A UTF-8 byte-order mark is skipped.

    Raises:
        DataError: no such column, or a file that is not UTF-8 text.
    """
    path = Path(path)
    columns = csv_header(path)
    if key not in columns:
        raise DataError(
            path,
            f"no column '{key}'.{did_you_mean(key, columns)} Columns: {columns}; set {key_flag}",
        )
    with open(path, newline="", encoding="utf-8-sig") as fh:
        return [_record(path.parent, row, key) for row in csv.DictReader(fh) if row.get(key)]


def csv_header(path: str | Path) -> list[str]:
    """The column names of a CSV, as written (a UTF-8 byte-order mark is skipped).

    Raises:
        DataError: not UTF-8 text (the byte and its position), or no header row.
    """
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            header = next(csv.reader(fh), None)
            fh.read()  # decode the rest now, so a bad byte further down is reported here
    except UnicodeDecodeError as exc:
        raise DataError(
            path,
            f"is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at position {exc.start}); "
            "save it as UTF-8 (CSV UTF-8 in a spreadsheet program)",
        ) from exc
    if not header:
        raise DataError(path, "is empty: a CSV needs a header row naming its columns")
    return header


def read_medmnist(path: str | Path, *, split: str = "train") -> list[Record]:
    """One record per volume of a MedMNIST v2 3D archive split; the label is an int."""
    path = Path(path)
    split = _SPLIT_ALIASES.get(split, split)
    splits = sorted(k[: -len("_images")] for k in _medmnist_keys(path))
    if split not in splits:
        raise DataError(
            path, f"no MedMNIST split '{split}'.{did_you_mean(split, splits)} Splits: {splits}"
        )
    with np.load(path, allow_pickle=False) as archive:
        images = archive[f"{split}_images"]
        labels = archive[f"{split}_labels"] if f"{split}_labels" in archive else None
    if images.ndim != 4:
        raise DataError(
            path, f"'{split}_images' has shape {images.shape}; MedMNIST 3D is (N, D, H, W)"
        )
    if labels is not None:
        _check_medmnist_labels(path, split, images.shape[0], labels)
    return [
        Record(
            str(path),
            label=None if labels is None else int(np.asarray(labels[i]).reshape(-1)[0]),
            array_key=f"{split}_images",
            array_index=i,
        )
        for i in range(images.shape[0])
    ]


def _check_medmnist_labels(path: Path, split: str, n: int, labels: np.ndarray) -> None:
    """One finite label per volume."""
    if labels.shape[:1] != (n,):
        raise DataError(
            path,
            f"'{split}_labels' has shape {labels.shape} but '{split}_images' "
            f"holds {n} volumes; MedMNIST needs one label row per volume, (N, 1): "
            "re-download or re-export the archive",
        )
    if not np.issubdtype(labels.dtype, np.number):
        raise DataError(
            path,
            f"'{split}_labels' has non-numeric type {labels.dtype}; MedMNIST labels are integers",
        )
    bad = ~np.isfinite(labels.astype(np.float64).reshape(-1))
    if bad.any():
        raise DataError(
            path,
            f"'{split}_labels' holds {int(bad.sum())} NaN/infinite labels "
            f"(first at volume {int(np.argmax(bad))}); MedMNIST labels are integers: "
            "re-download or re-export the archive",
        )


def _record(base: Path, item: dict[str, Any], key: str) -> Record:
    image = _resolve(base, item.pop(key))
    label = item.pop("label", None)
    if isinstance(label, str) and label:
        label = _resolve(base, label) if extension(label) in EXTENSIONS else label
    return Record(image, label=label, extra=item)


def _resolve(base: Path, value: str) -> str:
    path = Path(str(value)).expanduser()
    return str(path if path.is_absolute() else (base / path).resolve())


def _medmnist_keys(path: Path) -> list[str]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            return [k for k in archive.keys() if k.endswith("_images")]
    except Exception:
        return []
