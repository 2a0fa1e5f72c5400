"""Read 3D medical images into MONAI `MetaTensor`s, keeping spacing, orientation and affine.

Formats: NIfTI, NRRD, MetaImage, DICOM (a series folder or one file), NumPy `.npy` / `.npz`;
the detection and the reader behind each are in `medmim.data.formats`.

Every volume comes back channel-first as float32 `(1, X, Y, Z)` with `.affine` mapping voxel
indices to RAS world millimetres (the NIfTI convention MONAI uses). Only geometry is kept in
`.meta`, plus the DICOM `Modality` tag as `meta["modality"]` for DICOM; identifying tags
(patient name, ID, dates, ...) are never read.

Every failure is a `DataError(path, reason)`: a missing path, an empty (0-byte) file, an unknown
extension (with the supported ones), a corrupt or truncated file, a NaN-filled volume, a 2D image
where a 3D volume is expected (unless `allow_2d`), a folder that holds no DICOM series (or
several, and none chosen), duplicate DICOM slice positions, undecodable DICOM pixel data, and
bad geometry or voxels:

- a non-finite or singular affine (NaN in the sform, a zero or repeated axis);
- a voxel spacing outside [`MIN_SPACING`, `MAX_SPACING`] mm (0.05 to 50: wrong units or a broken
  header);
- complex voxels, colour (RGB) or vector pixels.

NaN policy: a volume whose non-finite voxels (NaN, +-inf) exceed `max_nonfinite` (default 0.5,
i.e. "mostly NaN", which includes all-NaN) is rejected. A few non-finite voxels (e.g. outside the
field of view of a resampled MR) are replaced by the smallest finite value, i.e. background,
with one warning naming the file and the count.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch
from monai.data import MetaTensor

from medmim.data.formats import (
    EXTENSIONS,
    FORMATS,
    READERS,
    extension,
    is_dicom_dir,
    is_dicom_file,
    itk_reason,
    short_error,
)
from medmim.errors import DataError, did_you_mean

log = logging.getLogger(__name__)

#: Accepted voxel spacing range (mm); outside it the header's units or geometry are wrong.
MIN_SPACING, MAX_SPACING = 0.05, 50.0


def load_volume(
    path: str | Path,
    *,
    array_key: str | None = None,
    array_index: int | None = None,
    series: str | None = None,
    max_nonfinite: float = 0.5,
    allow_2d: bool = False,
) -> MetaTensor:
    """Read one 3D volume (or, with `allow_2d`, a one-slice 2D image).

    Args:
        path: an image file or a DICOM series folder.
        array_key: for `.npz`, the array to read (default: 'image', else the only array).
        array_index: for a stack of volumes in `.npy`/`.npz` (N, X, Y, Z), the volume to take
            (MedMNIST). Values are kept as stored (uint8 0..255 for MedMNIST).
        series: for a DICOM folder, the SeriesInstanceUID to read (`Record.series`); None
            reads the folder's only series.
        max_nonfinite: reject when more than this fraction of voxels is NaN or infinite.
        allow_2d: accept a 2D image (PUMIT's native mode) as one slice: (1, X, Y, 1), or the
            file's own (1, X, Y, Z) when one axis has one voxel; otherwise it is an error.

    Returns:
        float32 `MetaTensor` of shape (1, X, Y, Z) with `.affine` (4, 4) voxel -> RAS mm and
        `.meta` keys 'filename_or_obj', 'spatial_shape', 'format', 'original_affine', and for
        DICOM with a Modality tag 'modality' ('CT', 'MR', 'PT', ...).

    Raises:
        DataError: naming `path` and what is wrong with it.
    """
    path = Path(path)
    fmt = _check_path(path)
    if path.is_file() and not os.access(path, os.R_OK):
        raise DataError(
            path,
            "cannot be opened: permission denied; fix its permissions "
            "(chmod a+r) or remove it from the source",
        )
    try:
        array, affine, extra = READERS[fmt](path, key=array_key, index=array_index, series=series)
    except DataError:
        raise
    except PermissionError as exc:
        raise DataError(
            path,
            f"cannot be opened: permission denied ({short_error(exc)}); fix its "
            "permissions (chmod a+r) or remove it from the source",
        ) from exc
    except Exception as exc:  # every reader error becomes a message naming the file
        raise DataError(
            path, f"cannot be read as {fmt} (corrupt or truncated?): {itk_reason(exc)}"
        ) from exc
    array = _as_3d(path, _check_voxels(path, np.asarray(array)), allow_2d)
    array = _check_finite(path, array.astype(np.float32, copy=False), max_nonfinite)
    affine = np.asarray(affine, dtype=np.float64)
    check_geometry(path, affine, array.shape)
    affine = torch.as_tensor(affine)
    meta = {
        "filename_or_obj": str(path),
        "spatial_shape": np.asarray(array.shape),
        "format": fmt,
        "original_affine": affine.clone(),
        **extra,
    }
    return MetaTensor(torch.from_numpy(np.ascontiguousarray(array))[None], affine=affine, meta=meta)


def spacing_of(affine: torch.Tensor | np.ndarray) -> np.ndarray:
    """Voxel spacing (mm) per array axis: the column norms of the affine's 3x3 part."""
    a = np.asarray(affine, dtype=np.float64)[:3, :3]
    return np.sqrt((a**2).sum(axis=0))


def check_geometry(path: str | Path, affine: np.ndarray, shape: tuple[int, ...]) -> None:
    """Refuse a non-finite or singular voxel -> world affine and implausible spacings.

    Raises:
        DataError: naming the file, the bad affine or spacing, and what to fix.
    """
    affine = np.asarray(affine, dtype=np.float64)
    if not np.isfinite(affine).all():
        raise DataError(
            path,
            "its voxel -> world affine holds NaN or infinite values; fix the "
            "header geometry (NIfTI sform/qform, DICOM ImagePosition/Orientation)",
        )
    spacing = spacing_of(affine)
    text = " x ".join(f"{s:.4g}" for s in spacing)
    rotation = affine[:3, :3] / np.where(spacing > 0, spacing, 1.0)
    if spacing.min() <= 0 or abs(np.linalg.det(rotation)) < 1e-3:
        raise DataError(
            path,
            f"its voxel -> world affine is singular (spacing {text} mm, axes "
            f"{np.round(affine[:3, :3], 4).tolist()}): an axis has zero length or two "
            "axes are parallel; fix the header geometry",
        )
    if spacing.min() < MIN_SPACING or spacing.max() > MAX_SPACING:
        raise DataError(
            path,
            f"voxel spacing {text} mm is outside [{MIN_SPACING:g}, "
            f"{MAX_SPACING:g}] mm: wrong units (m or um instead of mm) or a broken "
            "header; fix the spacing (NIfTI pixdim / sform, DICOM PixelSpacing)",
        )


def _check_voxels(path: Path, array: np.ndarray) -> np.ndarray:
    """Refuse complex, colour (structured RGB) and non-numeric voxels."""
    from medmim.data.formats import rgb_error

    if array.dtype.names:
        raise rgb_error(path, f"voxel type with fields {', '.join(array.dtype.names)}")
    if np.iscomplexobj(array):
        raise DataError(
            path,
            f"has complex voxels ({array.dtype}); medmim reads real "
            "intensities: save the magnitude (abs) as a real image",
        )
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise DataError(path, f"has non-numeric voxels ({array.dtype}); save a numeric image")
    return array


def _check_path(path: Path) -> str:
    """The format of `path`, or a DataError for a missing / empty / unsupported path."""
    if not path.exists():
        hint = ""
        if path.parent.is_dir():
            hint = did_you_mean(path.name, [p.name for p in path.parent.iterdir()])
        raise DataError(path, f"file not found.{hint}")
    if path.is_dir():
        if not is_dicom_dir(path):
            raise DataError(
                path, "folder holds no DICOM files (a folder is read as a DICOM series)"
            )
        return "dicom"
    if path.stat().st_size == 0:
        raise DataError(path, "empty file (0 bytes)")
    ext = extension(path)
    fmt = FORMATS.get(ext)
    if fmt is None and is_dicom_file(path):
        fmt = "dicom"
    if fmt is None:
        raise DataError(
            path,
            f"unsupported extension '{ext or '(none)'}'.{did_you_mean(ext, EXTENSIONS)} "
            f"Supported: {', '.join(EXTENSIONS)} and DICOM series folders",
        )
    return fmt


def _as_3d(path: Path, array: np.ndarray, allow_2d: bool = False) -> np.ndarray:
    """Drop singleton axes (trailing, or a leading channel axis) beyond three; reject 2D images
    (unless `allow_2d`: then an (X, Y) image becomes (X, Y, 1)) and 4D stacks.
    """
    while array.ndim > 3 and array.shape[-1] == 1:
        array = array[..., 0]
    while array.ndim > 3 and array.shape[0] == 1:
        array = array[0]
    if allow_2d and array.ndim == 2:
        array = array[..., None]
    spatial = [s for s in array.shape if s > 1]
    if array.ndim < 3 or len(spatial) < (2 if allow_2d else 3):
        raise DataError(
            path, f"2D image of shape {tuple(array.shape)} where a 3D volume is expected"
        )
    if array.ndim > 3:
        raise DataError(
            path,
            f"{array.ndim}D array of shape {tuple(array.shape)}; expected one 3D volume "
            "(split multi-channel or time series files into one volume per file)",
        )
    return array


def _check_finite(path: Path, array: np.ndarray, max_nonfinite: float) -> np.ndarray:
    bad = ~np.isfinite(array)
    n_bad = int(bad.sum())
    if n_bad == 0:
        return array
    frac = n_bad / array.size
    if frac > max_nonfinite or n_bad == array.size:
        raise DataError(path, f"NaN-filled: {frac:.0%} of voxels are NaN or infinite")
    fill = float(array[~bad].min())
    log.warning("%s: %d NaN/inf voxels (%.2f%%) set to %g", path, n_bad, 100 * frac, fill)
    array = array.copy()
    array[bad] = fill
    return array
