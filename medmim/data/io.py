"""Read 3D medical images into MONAI `MetaTensor`s, keeping spacing, orientation and affine.

Formats and the reader behind each (MONAI's readers, plus SimpleITK for MetaImage since the
optional `itk` package that MONAI's `ITKReader` needs is not a dependency):

| extension            | reader                                   |
|----------------------|------------------------------------------|
| .nii, .nii.gz        | `monai.data.NibabelReader`               |
| .nrrd, .nhdr         | `monai.data.NrrdReader` (LPS -> RAS)     |
| .mha, .mhd           | SimpleITK (LPS -> RAS, as `ITKReader`)   |
| DICOM series folder  | `monai.data.PydicomReader` (LPS -> RAS)  |
| .dcm (one file)      | `monai.data.PydicomReader`               |
| .npy, .npz           | `numpy.load` (no pickles; no geometry: 1 mm, identity affine) |

Every volume comes back channel-first as float32 `(1, X, Y, Z)` with `.affine` mapping voxel
indices to RAS world millimetres (the NIfTI convention MONAI uses). Only geometry is kept in
`.meta`; DICOM tags (patient name, ID, dates, ...) are dropped and never logged.

Every failure is a `DataError(path, reason)`: a missing path, an empty (0-byte) file, an unknown
extension (with the supported ones), a corrupt or truncated file, a NaN-filled volume, a 2D image
where a 3D volume is expected (unless `allow_2d`), a folder that holds no (or more than one)
DICOM series.

NaN policy: a volume whose non-finite voxels (NaN, +-inf) exceed `max_nonfinite` (default 0.5,
i.e. "mostly NaN", which includes all-NaN) is rejected. A few non-finite voxels (e.g. outside the
field of view of a resampled MR) are replaced by the smallest finite value, i.e. background,
with one warning naming the file and the count.
"""

from __future__ import annotations

import functools
import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from monai.data import MetaTensor

from medmim.errors import DataError, did_you_mean

log = logging.getLogger(__name__)

#: Supported file extensions (a DICOM series is a folder).
EXTENSIONS: tuple[str, ...] = (
    ".nii.gz",
    ".nii",
    ".nrrd",
    ".nhdr",
    ".mha",
    ".mhd",
    ".dcm",
    ".npy",
    ".npz",
)
#: Axis flip between DICOM/ITK world (LPS) and NIfTI/MONAI world (RAS).
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def extension(path: str | Path) -> str:
    """The (possibly double) lower-case extension: 'scan.nii.gz' -> '.nii.gz'."""
    name = Path(path).name.lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    return Path(name).suffix


def is_dicom_file(path: str | Path) -> bool:
    """True for a `.dcm` file or a file with the 'DICM' magic at byte 128."""
    path = Path(path)
    if path.suffix.lower() == ".dcm":
        return True
    if extension(path) in EXTENSIONS:
        return False
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def is_dicom_dir(path: str | Path) -> bool:
    """True when a folder directly holds at least one DICOM file."""
    path = Path(path)
    return path.is_dir() and any(p.is_file() and is_dicom_file(p) for p in path.iterdir())


def is_supported(path: str | Path) -> bool:
    """A file with a supported extension or a DICOM series folder."""
    return extension(path) in EXTENSIONS or is_dicom_dir(path)


def load_volume(
    path: str | Path,
    *,
    array_key: str | None = None,
    array_index: int | None = None,
    max_nonfinite: float = 0.5,
    allow_2d: bool = False,
) -> MetaTensor:
    """Read one 3D volume (or, with `allow_2d`, a one-slice 2D image).

    Args:
        path: an image file or a DICOM series folder.
        array_key: for `.npz`, the array to read (default: 'image', else the only array).
        array_index: for a stack of volumes in `.npy`/`.npz` (N, X, Y, Z), the volume to take
            (MedMNIST). Values are kept as stored (uint8 0..255 for MedMNIST).
        max_nonfinite: reject when more than this fraction of voxels is NaN or infinite.
        allow_2d: accept a 2D image (PUMIT's native mode) as one slice: (1, X, Y, 1), or the
            file's own (1, X, Y, Z) when one axis has one voxel; otherwise it is an error.

    Returns:
        float32 `MetaTensor` of shape (1, X, Y, Z) with `.affine` (4, 4) voxel -> RAS mm and
        `.meta` keys 'filename_or_obj', 'spatial_shape', 'format', 'original_affine'.

    Raises:
        DataError: naming `path` and what is wrong with it.
    """
    path = Path(path)
    fmt = _check_path(path)
    try:
        array, affine = _READERS[fmt](path, array_key, array_index)
    except DataError:
        raise
    except Exception as exc:  # every reader error becomes a message naming the file
        raise DataError(
            path, f"cannot be read as {fmt} (corrupt or truncated?): {_short(exc)}"
        ) from exc
    array = _as_3d(path, np.asarray(array), allow_2d)
    array = _check_finite(path, array.astype(np.float32, copy=False), max_nonfinite)
    affine = torch.as_tensor(np.asarray(affine, dtype=np.float64))
    meta = {
        "filename_or_obj": str(path),
        "spatial_shape": np.asarray(array.shape),
        "format": fmt,
        "original_affine": affine.clone(),
    }
    return MetaTensor(torch.from_numpy(np.ascontiguousarray(array))[None], affine=affine, meta=meta)


def spacing_of(affine: torch.Tensor | np.ndarray) -> np.ndarray:
    """Voxel spacing (mm) per array axis: the column norms of the affine's 3x3 part."""
    a = np.asarray(affine, dtype=np.float64)[:3, :3]
    return np.sqrt((a**2).sum(axis=0))


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
    fmt = _FORMATS.get(ext)
    if fmt is None and is_dicom_file(path):
        fmt = "dicom"
    if fmt is None:
        raise DataError(
            path,
            f"unsupported extension '{ext or '(none)'}'.{did_you_mean(ext, EXTENSIONS)} "
            f"Supported: {', '.join(EXTENSIONS)} and DICOM series folders",
        )
    return fmt


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


def _as_3d(path: Path, array: np.ndarray, allow_2d: bool = False) -> np.ndarray:
    """Drop singleton axes (trailing, or a leading channel axis) beyond three; reject 2D images
    (unless `allow_2d`: then an (X, Y) image becomes (X, Y, 1)) and 4D stacks."""
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


def _read_monai(reader, path: Path) -> tuple[np.ndarray, np.ndarray]:
    image = reader.read(str(path))
    array, meta = reader.get_data(image)
    return np.asarray(array), np.asarray(meta["affine"])


def _read_nifti(path: Path, *_: object) -> tuple[np.ndarray, np.ndarray]:
    from monai.data import NibabelReader

    return _read_monai(NibabelReader(), path)


def _read_nrrd(path: Path, *_: object) -> tuple[np.ndarray, np.ndarray]:
    from monai.data import NrrdReader

    return _read_monai(NrrdReader(), path)


def _read_dicom(path: Path, *_: object) -> tuple[np.ndarray, np.ndarray]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nvImageCodec notice on import
        from monai.data import PydicomReader
    if path.is_dir():
        _check_one_series(path)
    return _read_monai(PydicomReader(fname_regex=None), path)


def _check_one_series(folder: Path) -> None:
    """A folder must hold one DICOM series of at least 2 slices (identifiers are never read)."""
    import pydicom

    uids: set[str] = set()
    n = 0
    for file in sorted(p for p in folder.iterdir() if p.is_file() and is_dicom_file(p)):
        try:
            ds = pydicom.dcmread(file, stop_before_pixels=True, specific_tags=["SeriesInstanceUID"])
        except Exception as exc:
            raise DataError(file, f"corrupt DICOM file in series folder: {_short(exc)}") from exc
        uids.add(str(getattr(ds, "SeriesInstanceUID", "")))
        n += 1
    if len(uids) > 1:
        raise DataError(
            folder, f"folder holds {len(uids)} DICOM series; put each series in its own folder"
        )
    if n < 2:
        raise DataError(
            folder, f"DICOM series of {n} slice: a 2D image where a 3D volume is expected"
        )


def _read_metaimage(path: Path, *_: object) -> tuple[np.ndarray, np.ndarray]:
    import SimpleITK as sitk

    image = sitk.ReadImage(str(path))
    array = sitk.GetArrayFromImage(image)  # (z, y, x)
    array = np.transpose(array, tuple(range(array.ndim))[::-1])  # -> (x, y, z)
    dim = image.GetDimension()
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(dim, dim)
    affine = np.eye(4)
    k = min(dim, 3)
    affine[:k, :k] = (direction * np.asarray(image.GetSpacing()))[:k, :k]
    affine[:k, 3] = np.asarray(image.GetOrigin())[:k]
    return array, _LPS_TO_RAS @ affine


def _read_numpy(path: Path, key: str | None, index: int | None) -> tuple[np.ndarray, np.ndarray]:
    if extension(path) == ".npz":
        array = _npz_array(str(path), key, path.stat().st_mtime_ns)
    else:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    if index is not None:
        if array.ndim != 4 or not 0 <= index < array.shape[0]:
            raise DataError(
                path, f"volume index {index} out of range for array of shape {array.shape}"
            )
        array = array[index]
    return np.asarray(array), np.eye(4)


@functools.lru_cache(maxsize=2)
def _npz_array(path: str, key: str | None, _mtime_ns: int) -> np.ndarray:
    """One array of an `.npz` archive, kept for the next call (a MedMNIST file holds thousands
    of volumes, read one by one)."""
    with np.load(path, allow_pickle=False) as archive:
        keys = list(archive.keys())
        if key is None:
            key = "image" if "image" in keys else (keys[0] if len(keys) == 1 else None)
        if key not in keys:
            raise DataError(
                path, f"npz array '{key}' not found.{did_you_mean(str(key), keys)} Arrays: {keys}"
            )
        return archive[key]


_FORMATS = {
    ".nii.gz": "nifti",
    ".nii": "nifti",
    ".nrrd": "nrrd",
    ".nhdr": "nrrd",
    ".mha": "metaimage",
    ".mhd": "metaimage",
    ".dcm": "dicom",
    ".npy": "numpy",
    ".npz": "numpy",
}
_READERS = {
    "nifti": _read_nifti,
    "nrrd": _read_nrrd,
    "metaimage": _read_metaimage,
    "dicom": _read_dicom,
    "numpy": _read_numpy,
}
