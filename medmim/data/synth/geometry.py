"""Scanner geometry of a phantom: patient pose, voxel spacing, grid orientation and affine."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product

import numpy as np

from medmim.data.synth.shapes import rotation


@dataclass(frozen=True)
class SizeSpec:
    """Voxel spacing ranges of a phantom size.

    Attributes:
        inplane: (low, high) in-plane spacing, mm, drawn uniformly.
        slices: slice spacings (mm) to draw from.
        max_voxels: spacing draws giving a larger grid are redrawn (bounds time and disk).
        kernel: (low, high) edge sharpness, in in-plane voxels (soft to sharp reconstruction).
    """

    inplane: tuple[float, float]
    slices: tuple[float, ...]
    max_voxels: int
    kernel: tuple[float, float] = (0.8, 1.4)


SIZES: dict[str, SizeSpec] = {
    "default": SizeSpec((1.2, 2.0), (1.5, 2.0, 2.5, 3.0, 4.0, 5.0), 4_000_000),
    "small": SizeSpec((2.8, 3.6), (3.0, 4.0, 5.0, 6.0), 600_000),
}

#: Storage conventions: sign of the (i, j, k) axes relative to RAS. 'LPS' is what most
#: DICOM -> NIfTI converters write (i runs to the patient's left, j to posterior).
ORIENTATIONS: dict[str, tuple[int, int, int]] = {
    "RAS": (1, 1, 1),
    "LPS": (-1, -1, 1),
    "LPI": (-1, -1, -1),
}


@dataclass
class Geometry:
    """Where the phantom's voxels are.

    Attributes:
        shape: (I, J, K) voxels; K is the slice axis. spacing: (3,) mm.
        affine: (4, 4) voxel -> world (RAS mm), as written to NIfTI.
        pose: (4, 4) anatomy mm -> world mm (patient position and rotation on the table).
        orientation: storage convention ('RAS', 'LPS', 'LPI'). tilt_deg: grid rotation angle.
        edge: partial-volume edge width (mm). nsub: sub-slices per slice.
    """

    shape: tuple[int, int, int]
    spacing: np.ndarray
    affine: np.ndarray
    pose: np.ndarray
    orientation: str
    tilt_deg: float
    edge: float
    nsub: int

    @property
    def vox_to_anat(self) -> np.ndarray:
        """(4, 4) voxel -> anatomy mm: `affine` followed by the inverse `pose`."""
        return np.linalg.inv(self.pose) @ self.affine


def sample_geometry(
    rng: np.random.Generator, lo: np.ndarray, hi: np.ndarray, spec: SizeSpec
) -> Geometry:
    """Place a patient whose anatomy spans the box [lo, hi] (mm) in a scanner grid.

    The pose rotates the patient by a few degrees (yaw sd 3, pitch/roll sd 1.5) and moves it on
    the table; 30 % of grids are rotated 2-8 deg (tilted or oblique reconstructions). Margins of
    3-20 mm of air surround the body in-plane; the scan covers the box in z plus 0-10 mm.
    """
    pose = np.eye(4)
    pose[:3, :3] = rotation(rng.normal(0, 1.5), rng.normal(0, 1.5), rng.normal(0, 3.0))
    pose[:3, 3] = [rng.uniform(-20, 20), rng.uniform(-40, 10), rng.uniform(-700, -100)]
    tilt = 0.0
    grid_rot = np.eye(3)
    if rng.random() < 0.3:
        tilt = float(rng.uniform(2, 8) * rng.choice([-1, 1]))
        grid_rot = rotation(tilt, 0, 0) if rng.random() < 0.5 else rotation(0, 0, tilt)
    corners = np.array([list(c) + [1.0] for c in product(*zip(lo, hi))])
    in_grid = (grid_rot.T @ (pose @ corners.T)[:3]).T
    margin = np.array([rng.uniform(3, 20), rng.uniform(3, 20), rng.uniform(0, 10)])
    g_lo, g_hi = in_grid.min(0) - margin, in_grid.max(0) + margin
    spacing, shape = _sample_spacing(rng, g_hi - g_lo, spec)
    orientation = str(rng.choice(list(ORIENTATIONS), p=[0.4, 0.5, 0.1]))
    sign = np.array(ORIENTATIONS[orientation], dtype=float)
    start = np.where(sign > 0, g_lo, g_lo + (np.array(shape) - 1) * spacing)
    affine = np.eye(4)
    affine[:3, :3] = grid_rot @ np.diag(spacing * sign)
    affine[:3, 3] = grid_rot @ start
    affine = np.round(affine, 6)
    nsub = 3 if spacing[2] / spacing[0] >= 1.6 else 1
    edge = float(spacing[0] * rng.uniform(*spec.kernel))
    return Geometry(shape, spacing, affine, pose, orientation, tilt, edge, nsub)


def _sample_spacing(
    rng: np.random.Generator, extent: np.ndarray, spec: SizeSpec
) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Draw (in-plane, in-plane, slice) spacing until the grid has at most `max_voxels`."""
    for _ in range(100):
        inplane = round(float(rng.uniform(*spec.inplane)), 3)
        spacing = np.array([inplane, inplane, float(rng.choice(spec.slices))])
        shape = tuple(int(v) for v in np.ceil(extent / spacing) + 1)
        if np.prod(shape) <= spec.max_voxels:
            return spacing, shape  # type: ignore[return-value]
    spacing = np.array([spec.inplane[1], spec.inplane[1], max(spec.slices)])
    return spacing, tuple(int(v) for v in np.ceil(extent / spacing) + 1)  # type: ignore[return-value]
