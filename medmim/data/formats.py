"""The image formats `medmim.data.io.load_volume` reads: detection by extension (or the DICOM
magic bytes) and one reader per format, each returning the raw array and its voxel -> RAS mm
affine.

| extension            | reader                                   |
|----------------------|------------------------------------------|
| .nii, .nii.gz        | `monai.data.NibabelReader`               |
| .nrrd, .nhdr         | `monai.data.NrrdReader` (LPS -> RAS)     |
| .mha, .mhd           | SimpleITK (LPS -> RAS, as `ITKReader`)   |
| DICOM series folder  | `monai.data.PydicomReader` (LPS -> RAS)  |
| .dcm (one file)      | `monai.data.PydicomReader`               |
| .npy, .npz           | `numpy.load` (no pickles; no geometry: 1 mm, identity affine) |

SimpleITK reads MetaImage because the optional `itk` package that MONAI's `ITKReader` needs is
not a dependency. DICOM identifiers are never read (only `SeriesInstanceUID`, to refuse a folder
that mixes series).
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

import numpy as np

from medmim.errors import DataError, did_you_mean

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
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


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


def short_error(exc: Exception) -> str:
    """'TypeName: first line of the message' (at most 200 characters)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


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
            raise DataError(file, f"corrupt DICOM file in series folder: {short_error(exc)}") from exc
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
    return array, LPS_TO_RAS @ affine


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


#: extension -> format name.
FORMATS = {
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
#: format name -> reader(path, npz key, stack index) -> (array, affine).
READERS = {
    "nifti": _read_nifti,
    "nrrd": _read_nrrd,
    "metaimage": _read_metaimage,
    "dicom": _read_dicom,
    "numpy": _read_numpy,
}
