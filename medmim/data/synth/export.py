"""Byte-reproducible writers (NIfTI, npz, JSON) and world-aligned resampling of crops."""

from __future__ import annotations

import gzip
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from scipy import ndimage

_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def save_nifti(path: Path, array: np.ndarray, affine: np.ndarray, description: str = "") -> None:
    """Write a NIfTI-1 file; `.nii.gz` is gzipped with mtime 0 so equal arrays give equal bytes.

    Both qform and sform hold `affine` (code 1, scanner); units are mm.
    """
    img = nib.Nifti1Image(np.asarray(array), np.asarray(affine, dtype=np.float64))
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header["descrip"] = description.encode()[:79]
    data = img.to_bytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.name.endswith(".gz"):
        data = gzip.compress(data, compresslevel=1, mtime=0)
    path.write_bytes(data)


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write a compressed `.npz` (readable by `np.load`) with fixed zip timestamps.

    `np.savez_compressed` stamps each member with the current time; this writer does not.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
        for key, array in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue())


def save_json(path: Path, data: Any) -> None:
    """Write `data` as indented JSON to `path`, creating the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def cube_affine(center: np.ndarray, size: int, spacing: float) -> np.ndarray:
    """(4, 4) RAS affine of a `size`^3 cube of `spacing` mm voxels centred on `center` (mm)."""
    affine = np.diag([spacing, spacing, spacing, 1.0])
    affine[:3, 3] = np.asarray(center, dtype=np.float64) - (size - 1) / 2 * spacing
    return affine


def sample_cube(
    volume: np.ndarray,
    affine: np.ndarray,
    center: np.ndarray,
    size: int,
    spacing: float,
    order: int = 1,
    cval: float = 0.0,
) -> np.ndarray:
    """Resample `volume` on a RAS-aligned cube (`size`^3, `spacing` mm) centred at `center`
    (world mm).

    Voxels outside the volume get `cval`. Returns float32 (size, size, size) in RAS order.
    """
    to_vox = np.linalg.inv(affine) @ cube_affine(center, size, spacing)
    out = ndimage.affine_transform(
        volume.astype(np.float32, copy=False),
        to_vox[:3, :3],
        to_vox[:3, 3],
        output_shape=(size, size, size),
        order=order,
        mode="constant",
        cval=cval,
        prefilter=False,
    )
    return out


def to_uint8(hu: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """Map HU in `window` (low, high) linearly to 0..255 (clipped), as MedMNIST stores CT."""
    low, high = window
    scaled = (np.asarray(hu, dtype=np.float32) - low) * (255.0 / (high - low))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def shrink_cube(cube: np.ndarray, size: int) -> np.ndarray:
    """Downsample a cube to `size`^3: 2x2x2 mean pooling while that stays >= size, then
    linear zoom.
    """
    out = cube.astype(np.float32)
    while out.shape[0] % 2 == 0 and out.shape[0] // 2 >= size:
        n = out.shape[0] // 2
        out = out.reshape(n, 2, n, 2, n, 2).mean(axis=(1, 3, 5))
    if out.shape[0] != size:
        out = ndimage.zoom(out, size / out.shape[0], order=1, grid_mode=True, mode="nearest")
    return out[:size, :size, :size]
