"""The image formats `medmim.data.io.load_volume` reads: detection by extension (or the DICOM
magic bytes) and one reader per format, each returning the raw array, its voxel -> RAS mm
affine and format-specific meta.

| extension            | reader                                                         |
|----------------------|----------------------------------------------------------------|
| .nii, .nii.gz        | `monai.data.NibabelReader` (a NaN sform/qform is refused)      |
| .nrrd, .nhdr         | `monai.data.NrrdReader` (LPS -> RAS)                           |
| .mha, .mhd           | SimpleITK (LPS -> RAS, as `ITKReader`)                         |
| DICOM folder         | SimpleITK/GDCM, one volume per SeriesInstanceUID (LPS -> RAS)  |
| .dcm (one file)      | SimpleITK/GDCM, multi-frame objects included (LPS -> RAS)      |
| .npy, .npz           | `numpy.load` (no pickles; no geometry: 1 mm, identity affine)  |

SimpleITK reads MetaImage because the optional `itk` package that MONAI's `ITKReader` needs is
not a dependency. DICOM details (series, HU rescale, the `Modality` tag, undecodable transfer
syntaxes, identifiers never read) are in `medmim.data.dicom`.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

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


#: What a reader returns: the array, its voxel -> RAS mm affine (4, 4), format meta.
Raw = tuple[np.ndarray, np.ndarray, dict]


def rgb_error(path: str | Path, what: str) -> DataError:
    """The error for colour (RGB) or vector pixels, which medmim does not read."""
    return DataError(
        path,
        f"has colour/vector pixels ({what}); medmim reads one intensity per "
        "voxel: convert it to grayscale or remove it from the source",
    )


def image_to_ras(path: Path, image: Any) -> tuple[np.ndarray, np.ndarray]:
    """A SimpleITK image as an (X, Y, Z) array and its voxel -> RAS mm affine.

    ITK indexes (x, y, z) and stores LPS geometry; `GetArrayFromImage` gives (z, y, x), so the
    array is transposed to match the affine's columns, as NIfTI is returned.

    Raises:
        DataError: RGB or vector pixels.
    """
    import SimpleITK as sitk

    components = image.GetNumberOfComponentsPerPixel()
    if components > 1:
        raise rgb_error(path, f"{components} components per pixel")
    array = sitk.GetArrayFromImage(image)
    array = np.transpose(array, tuple(range(array.ndim))[::-1])
    dim = image.GetDimension()
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(dim, dim)
    affine = np.eye(4)
    k = min(dim, 3)
    affine[:k, :k] = (direction * np.asarray(image.GetSpacing()))[:k, :k]
    affine[:k, 3] = np.asarray(image.GetOrigin())[:k]
    return array, LPS_TO_RAS @ affine


def itk_reason(exc: Exception) -> str:
    """The 'ITK ERROR: ...' line of a SimpleITK exception without the object address (its first
    line only names SimpleITK's source file), else `short_error` (any other exception).
    """
    lines = [line.strip() for line in str(exc).splitlines() if "ERROR" in line]
    if not lines:
        return short_error(exc)
    return lines[-1].split("): ", 1)[-1][:200]


def _read_monai(reader, path: Path) -> Raw:
    image = reader.read(str(path))
    array, meta = reader.get_data(image)
    return np.asarray(array), np.asarray(meta["affine"]), {}


def _read_nifti(path: Path, **_: Any) -> Raw:
    import nibabel as nib
    from monai.data import NibabelReader

    header = nib.load(str(path)).header  # as stored: MONAI rebuilds a NaN affine from pixdim
    if not np.isfinite(header.get_best_affine()).all():
        codes = f"sform_code {int(header['sform_code'])}, qform_code {int(header['qform_code'])}"
        raise DataError(
            path,
            f"its header affine holds NaN or infinite values ({codes}); fix "
            "the sform/qform (e.g. nibabel `img.set_sform(affine, code=1)`)",
        )
    return _read_monai(NibabelReader(), path)


def _read_nrrd(path: Path, **_: Any) -> Raw:
    from monai.data import NrrdReader

    return _read_monai(NrrdReader(), path)


def _read_dicom(path: Path, *, series: str | None = None, **_: Any) -> Raw:
    from medmim.data.dicom import read_dicom

    return read_dicom(path, series)


def _read_metaimage(path: Path, **_: Any) -> Raw:
    import SimpleITK as sitk

    return (*image_to_ras(path, sitk.ReadImage(str(path))), {})


def _read_numpy(path: Path, *, key: str | None = None, index: int | None = None, **_: Any) -> Raw:
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
    return np.asarray(array), np.eye(4), {}


@functools.lru_cache(maxsize=2)
def _npz_array(path: str, key: str | None, _mtime_ns: int) -> np.ndarray:
    """One array of an `.npz` archive, kept for the next call (a MedMNIST file holds thousands
    of volumes, read one by one).
    """
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
#: format name -> reader(path, key=npz array, index=stack index, series=DICOM series) -> Raw.
READERS = {
    "nifti": _read_nifti,
    "nrrd": _read_nrrd,
    "metaimage": _read_metaimage,
    "dicom": _read_dicom,
    "numpy": _read_numpy,
}
