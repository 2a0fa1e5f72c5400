"""Labelled scans in, volumes out in the scan's own geometry (segment, attention, localize).

An image is preprocessed with the encoder's recipe (`medmim.data.preprocess`: orientation,
foreground crop, spacing, intensity, padding), exactly as in pretraining. Masks (labels, tumor
masks) are resampled onto that grid with nearest-neighbour interpolation through the affines,
and every map the commands produce (class probabilities, attention) goes back to the file's
grid the same way (ecosystem reference §3.4): resampling from the recipe grid's affine to the
file's `original_affine` and `original_shape` (MONAI `SpatialResample`), so a saved NIfTI has
the input's shape and affine whatever the orientation, spacing and crop were. Voxels outside
the recipe's field of view (cropped away as background) get 0.

The geometry lives in `Preprocessed.meta` / the cache's JSON: 'affine', 'shape',
'original_affine', 'original_shape'.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import SpatialResample
from torch import Tensor

from medmim.data.formats import EXTENSIONS, extension
from medmim.data.io import load_volume, spacing_of
from medmim.data.preprocess import check_recipe, preprocess
from medmim.data.sources import Record
from medmim.errors import DataError

log = logging.getLogger(__name__)


@dataclass
class Case:
    """One scan on the recipe grid.

    Attributes:
        name: file name without extension (unique within a datalist).
        record: where it came from.
        image: (C, X, Y, Z) float32 preprocessed image.
        meta: geometry of `image` and of the original file (see the module docstring).
        masks: mask key -> (X, Y, Z) int64 label map on the recipe grid.
    """

    name: str
    record: Record
    image: np.ndarray
    meta: dict[str, Any]
    masks: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def original_spacing(self) -> tuple[float, ...]:
        """Voxel spacing (mm) of the original file per axis, from its affine."""
        return tuple(spacing_of(self.meta["original_affine"]).tolist())


def case_name(path: str | Path) -> str:
    """'.../case_001.nii.gz' -> 'case_001'."""
    name = Path(path).name
    ext = extension(name)
    return name[: -len(ext)] if ext in EXTENSIONS else name


def record_case_name(record: Record) -> str:
    """`case_name` of a record's image, plus '_series-<hash>' for one series of a DICOM folder
    that holds several (so their outputs do not overwrite each other).
    """
    name = case_name(record.image)
    if getattr(record, "series", None) is not None:
        from medmim.data.sources import series_tag

        name = f"{name}_{series_tag(record.series)}"
    return name


def mask_path(record: Record, key: str, base: str | Path | None = None) -> str | None:
    """The path of `record`'s mask field `key` ("label" or a datalist extra such as "tumor").

    Relative paths in extra fields are resolved against `base` (the datalist's folder).
    """
    value = record.label if key == "label" else record.extra.get(key)
    if value is None or not isinstance(value, str) or not value:
        return None
    path = Path(value).expanduser()
    if not path.is_absolute() and base is not None:
        path = Path(base) / path
    return str(path)


def load_case(
    record: Record,
    recipe: Any,
    mask_keys: tuple[str, ...] = (),
    base: str | Path | None = None,
    require_masks: bool = True,
) -> Case:
    """Preprocess `record`'s image with `recipe` and put its masks on the same grid.

    Raises:
        DataError: unreadable files, a missing mask field, or a mask whose shape differs from
            its image (the file is named).
    """
    volume = record.load()
    pre = preprocess(volume, check_recipe(recipe))
    case = Case(record_case_name(record), record, pre.array, pre.meta)
    for key in mask_keys:
        path = mask_path(record, key, base)
        if path is None:
            if require_masks:
                raise DataError(
                    record.image,
                    f"has no '{key}' mask in the datalist; add a '{key}'"
                    " field to each entry or choose another --mask-key",
                )
            continue
        case.masks[key] = mask_on_grid(load_volume(path), volume, pre.meta)
    return case


def mask_on_grid(mask: MetaTensor, image: MetaTensor, meta: dict[str, Any]) -> np.ndarray:
    """A label map (1, X, Y, Z) in the file's geometry -> (X', Y', Z') int64 on the recipe grid."""
    path = mask.meta.get("filename_or_obj", "<mask>")
    if tuple(mask.shape[1:]) != tuple(image.shape[1:]):
        raise DataError(
            path,
            f"mask shape {tuple(mask.shape[1:])} differs from its image's {tuple(image.shape[1:])}",
        )
    if not np.allclose(mask.affine.numpy(), image.affine.numpy(), atol=1e-3):
        log.warning("%s: affine differs from its image's; using the image's geometry", path)
    mask = MetaTensor(mask.as_tensor().round(), affine=image.affine)
    out = to_grid(mask, meta["affine"], meta["shape"], mode="nearest")
    return out[0].round().long().numpy()


def to_grid(
    volume: Tensor, affine: Any, shape: Any, mode: str = "bilinear", src_affine: Any = None
) -> Tensor:
    """Resample a (C, X, Y, Z) volume onto the grid (`affine`, `shape`) through world space.

    Args:
        volume: a MetaTensor (its `.affine` is the source grid) or a tensor with `src_affine`.
        affine: (4, 4) voxel -> world of the target grid.
        shape: (X, Y, Z) of the target grid.
        mode: "bilinear" for images, probabilities and attention; "nearest" for label maps.
        src_affine: the source affine when `volume` is a plain tensor.

    Returns:
        (C, *shape) float32 tensor; outside the source's field of view 0.
    """
    if src_affine is not None or not isinstance(volume, MetaTensor):
        volume = MetaTensor(
            torch.as_tensor(volume), affine=torch.as_tensor(src_affine, dtype=torch.float64)
        )
    dst = torch.as_tensor(np.asarray(affine, dtype=np.float64))
    out = SpatialResample(mode=mode, padding_mode="zeros", dtype=torch.float64)(
        volume.float(), dst_affine=dst, spatial_size=[int(s) for s in shape]
    )
    return out.as_tensor().float()


def to_original(volume: Tensor, meta: dict[str, Any], mode: str = "bilinear") -> Tensor:
    """(C, X', Y', Z') on the recipe grid -> (C, *original_shape) on the file's grid."""
    return to_grid(volume, meta["original_affine"], meta["original_shape"], mode, meta["affine"])


def to_original_labels(probs: Tensor, meta: dict[str, Any], chunk: int = 2) -> Tensor:
    """Argmax over classes of `to_original(probs)`, resampling `chunk` classes at a time.

    Args:
        probs: (K, X', Y', Z') class probabilities on the recipe grid.
        meta: the case's geometry (recipe grid and original file), as for `to_original`.
        chunk: classes resampled at a time.

    Returns:
        (X, Y, Z) int64 label map on the file's grid; background (0) outside the field of view.
        Same as `to_original(probs, meta).argmax(0)` with K / chunk times less memory.
    """
    best = label = None
    for start in range(0, probs.shape[0], chunk):
        part = to_original(probs[start : start + chunk], meta, mode="bilinear")
        value, index = part.max(0)
        if best is None:
            best, label = value, index
        else:
            better = value > best
            best = torch.where(better, value, best)
            label = torch.where(better, index + start, label)
    return label


def save_nifti(
    array: np.ndarray | Tensor, affine: Any, path: str | Path, dtype: Any = np.float32
) -> Path:
    """Write (X, Y, Z) `array` with `affine` (the original scan's) as NIfTI; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.asarray(array.detach().cpu() if isinstance(array, Tensor) else array).astype(dtype)
    image = nib.Nifti1Image(data, np.asarray(affine, dtype=np.float64))
    image.set_qform(image.affine, code=1)
    image.set_sform(image.affine, code=1)
    nib.save(image, str(path))
    return path
