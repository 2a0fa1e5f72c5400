"""DICOM through SimpleITK/GDCM: one volume per series, multi-frame objects, rescale to HU.

A folder may hold several series; they are told apart by their SeriesInstanceUID
(`sitk.ImageSeriesReader.GetGDCMSeriesIDs`) and each is read on its own
(`GetGDCMSeriesFileNames`, sorted by slice position). A single file, including a multi-frame
(enhanced CT/MR) object, is read by `sitk.ReadImage`, which takes the geometry from its
functional groups. GDCM applies RescaleSlope/RescaleIntercept, so CT comes back in HU.

Before the pixels are read, a header pass reads only the tags in `HEADER_TAGS` with pydicom
(no identifiers: patient name, ID, birth date, study dates are never read, logged or written);
it checks that the slices of a series sit at distinct positions and gives the `Modality` tag.

Pixel data that GDCM cannot decode is decompressed by pydicom's pixel handlers into a temporary
copy when a handler for its transfer syntax is installed; otherwise the error names the file,
the transfer syntax and the packages to install.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import tempfile
import warnings
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medmim.data.formats import image_to_ras, itk_reason, rgb_error, short_error
from medmim.errors import DataError

log = logging.getLogger(__name__)

#: The only tags medmim reads itself (GDCM reads the geometry and pixel tags it needs).
HEADER_TAGS = (
    "SeriesInstanceUID",
    "Modality",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "NumberOfFrames",
    "SamplesPerPixel",
    "PhotometricInterpretation",
)
#: pip packages that let pydicom decode a compressed transfer syntax, by syntax name prefix.
DECODER_PACKAGES = {
    "JPEG 2000": "pylibjpeg pylibjpeg-openjpeg",
    "High-Throughput JPEG 2000": "pylibjpeg pylibjpeg-openjpeg",
    "JPEG-LS": "pylibjpeg pylibjpeg-libjpeg",
    "JPEG": "pylibjpeg pylibjpeg-libjpeg",
    "RLE": "pylibjpeg pylibjpeg-rle",
}
#: Modalities that are not images to learn from (a segmentation is a label, a dose grid is a plan).
NON_IMAGE_MODALITIES = {"SEG": "a segmentation (a label, not an image)", "RTDOSE": "a dose grid"}
#: Slice positions closer than this (mm) count as the same position.
POSITION_TOLERANCE = 1e-3


def series_tag(uid: str) -> str:
    """A short, stable name for a series: 'series-' + 8 hex digits of the UID's SHA-1."""
    return "series-" + hashlib.sha1(uid.encode()).hexdigest()[:8]


def list_series(folder: str | Path) -> list[str]:
    """The SeriesInstanceUIDs of the DICOM images directly in `folder` (GDCM's scan), sorted."""
    import SimpleITK as sitk

    return sorted(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))


def read_dicom(path: Path, series: str | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """Read one DICOM file or one series of a folder.

    Args:
        path: a DICOM file or a folder of DICOM files.
        series: the SeriesInstanceUID to read from a folder; None when the folder holds one.

    Returns:
        The (X, Y, Z) array, its voxel -> RAS mm affine (4, 4) and meta ({'modality': 'CT'},
        empty when the tag is absent).

    Raises:
        DataError: several series and none chosen, duplicate slice positions, RGB pixels,
            undecodable pixel data (naming the transfer syntax and the decoder to install).
    """
    files = [path] if path.is_file() else _series_files(path, series)
    headers = [_header(f) for f in files]
    where = path if len(files) > 1 or path.is_file() else files[0]
    _check_headers(path, files, headers, series)
    image = _read_image(where, files, headers[0])
    meta = {}
    modality = str(headers[0].get("Modality", "") or "").strip().upper()
    if modality:
        meta["modality"] = modality
    return (*image_to_ras(where, image), meta)


def _series_files(folder: Path, series: str | None) -> list[Path]:
    import SimpleITK as sitk

    uids = list_series(folder)
    if not uids:
        raise DataError(
            folder,
            "holds no DICOM image GDCM can read (not images, e.g. reports "
            "or RT structures, or corrupt files); remove the folder from the source",
        )
    if series is None and len(uids) > 1:
        tags = ", ".join(series_tag(u) for u in uids)
        raise DataError(
            folder,
            f"holds {len(uids)} DICOM series ({tags}); give the folder as a "
            "source (one record per series) or pass the series to read",
        )
    uid = uids[0] if series is None else series
    if uid not in uids:
        raise DataError(
            folder,
            f"has no DICOM series {series_tag(uid)}; it holds "
            f"{', '.join(series_tag(u) for u in uids)}",
        )
    return [Path(f) for f in sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid)]


@contextlib.contextmanager
def _quiet_pydicom():
    """No value validation while reading: pydicom's warnings quote values (and log them), which
    could put an identifier in a log.
    """
    from pydicom import config

    saved = config.settings.reading_validation_mode, config.settings.writing_validation_mode
    config.settings.reading_validation_mode = config.settings.writing_validation_mode = (
        config.IGNORE
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        config.settings.reading_validation_mode, config.settings.writing_validation_mode = saved


def _header(file: Path) -> Any:
    import pydicom

    try:
        with _quiet_pydicom():
            return pydicom.dcmread(file, stop_before_pixels=True, specific_tags=list(HEADER_TAGS))
    except Exception as exc:
        raise DataError(file, f"corrupt DICOM header: {short_error(exc)}") from exc


def _check_headers(path: Path, files: Sequence[Path], headers: Sequence[Any], series) -> None:
    """RGB pixels, multi-frame files inside a series, and slices sharing a position."""
    first = headers[0]
    modality = str(first.get("Modality", "") or "").upper()
    if modality in NON_IMAGE_MODALITIES:
        raise DataError(
            files[0],
            f"is {NON_IMAGE_MODALITIES[modality]} (Modality {modality}); "
            "remove it from the image source",
        )
    if int(first.get("SamplesPerPixel", 1) or 1) > 1:
        raise rgb_error(
            files[0],
            f"SamplesPerPixel {first.SamplesPerPixel}, "
            f"{first.get('PhotometricInterpretation', 'colour')}",
        )
    if len(files) == 1:
        return
    name = f"{path} ({series_tag(series)})" if series else path
    if any(int(h.get("NumberOfFrames", 1) or 1) > 1 for h in headers):
        raise DataError(
            name,
            f"series of {len(files)} files, some multi-frame; move each "
            "multi-frame file to its own folder or give it as its own source",
        )
    positions = []
    for file, header in zip(files, headers):
        if "ImagePositionPatient" not in header:
            raise DataError(
                file,
                "has no ImagePositionPatient: its place in the series is "
                "unknown; fix the export or remove the file",
            )
        position = np.asarray(header.ImagePositionPatient, dtype=np.float64)
        positions.append(tuple(np.round(position / POSITION_TOLERANCE) * POSITION_TOLERANCE))
    repeated = [(p, n) for p, n in Counter(positions).items() if n > 1]
    if repeated:
        pos, n = repeated[0]
        names = [f.name for f, p in zip(files, positions) if p == pos][:4]
        raise DataError(
            name,
            f"{n} files share the slice position ({', '.join(f'{v:g}' for v in pos)}) "
            f"mm ({', '.join(names)}); a series holds one slice per position: remove "
            "the duplicates (a copied file or a second reconstruction)"
            + (f"; {len(repeated)} positions are repeated" if len(repeated) > 1 else ""),
        )
    _warn_uneven_gaps(name, headers, positions)


def _warn_uneven_gaps(name: Any, headers: Sequence[Any], positions: list[tuple]) -> None:
    """Warn (geometry is taken from the first two slices) when slice gaps differ: lost slices."""
    iop = headers[0].get("ImageOrientationPatient")
    if iop is None or len(positions) < 3:
        return
    iop = np.asarray(iop, dtype=np.float64)
    normal = np.cross(iop[:3], iop[3:])
    gaps = np.diff(np.sort(np.asarray(positions) @ normal))
    if gaps.size and gaps.max() - gaps.min() > max(0.01 * abs(gaps.mean()), POSITION_TOLERANCE):
        log.warning(
            "%s: slice gaps vary from %.3g to %.3g mm (missing slices?); spacing is "
            "taken from the first two",
            name,
            gaps.min(),
            gaps.max(),
        )


def _read_image(where: Path, files: Sequence[Path], header: Any) -> Any:
    """The pixels through GDCM; through pydicom's decoders where GDCM cannot decode them."""
    try:
        return _sitk_read(files)
    except RuntimeError as gdcm_error:
        syntax = getattr(getattr(header, "file_meta", None), "TransferSyntaxUID", None)
        if syntax is None or not syntax.is_compressed:
            raise
        with tempfile.TemporaryDirectory(prefix="medmim-dicom-") as tmp:
            try:
                copies = _decompressed(files, Path(tmp))
            except Exception as exc:
                raise _undecodable(where, syntax, gdcm_error, exc) from exc
            return _sitk_read(copies)


def _sitk_read(files: Sequence[Path]) -> Any:
    import SimpleITK as sitk

    if len(files) == 1:
        return sitk.ReadImage(str(files[0]), imageIO="GDCMImageIO")
    reader = sitk.ImageSeriesReader()
    reader.SetImageIO("GDCMImageIO")
    reader.SetFileNames([str(f) for f in files])
    return reader.Execute()


def _decompressed(files: Sequence[Path], folder: Path) -> list[Path]:
    """Uncompressed copies of `files` (pydicom's pixel handlers), in the same order."""
    import pydicom

    copies = []
    with _quiet_pydicom():
        for i, file in enumerate(files):
            ds = pydicom.dcmread(file)
            if ds.file_meta.TransferSyntaxUID.is_compressed:
                ds.decompress()
            copies.append(folder / f"{i:06d}.dcm")
            ds.save_as(copies[-1])
    return copies


def _undecodable(where: Path, syntax: Any, gdcm_error: Exception, exc: Exception) -> DataError:
    name = str(getattr(syntax, "name", syntax))
    packages = next((p for k, p in DECODER_PACKAGES.items() if name.startswith(k)), None)
    fix = (
        f"`pip install {packages}` (or `pip install python-gdcm`)"
        if packages
        else ("`pip install python-gdcm`")
    )
    return DataError(
        where,
        f"pixel data in transfer syntax '{name}' ({syntax}) cannot be "
        f"decoded: install a decoder for pydicom, {fix}, or decompress the files "
        f"(`gdcmconv --raw IN OUT`). SimpleITK/GDCM: {itk_reason(gdcm_error)}; "
        f"pydicom: {short_error(exc)}",
    )
