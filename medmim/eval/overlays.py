"""PNG figures of segment / attention / localize / reconstruct (matplotlib, Agg, no display).

Volumes are on the recipe grid (axes in RAS order: x, y, z), so an axial slice is `v[:, :, k]`,
coronal `v[:, j, :]`, sagittal `v[i, :, :]`; slices are shown transposed with the origin at the
lower left so that anterior / superior point up, as radiology viewers show them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402

from medmim.eval.plots import save_figure  # noqa: E402

PLANES = ("sagittal", "coronal", "axial")
DPI = 110


def plane(volume: np.ndarray, axis: int, index: int) -> np.ndarray:
    """The slice `index` across `axis` of an (X, Y, Z) volume, ready for
    `imshow(origin="lower")`.
    """
    return np.take(volume, int(index), axis=axis).T


def _show(ax: plt.Axes, image: np.ndarray, title: str = "") -> None:
    ax.imshow(image, cmap="gray", origin="lower", interpolation="nearest")
    ax.set_title(title, fontsize=8)
    ax.axis("off")


def _labels_cmap(num_classes: int) -> ListedColormap:
    colors = plt.get_cmap("tab10" if num_classes <= 10 else "tab20").colors
    return ListedColormap([colors[i % len(colors)] for i in range(max(num_classes - 1, 1))])


def segmentation_overlays(
    items: Sequence[tuple[str, np.ndarray, np.ndarray, np.ndarray]],
    num_classes: int,
    path: str | Path,
) -> Path:
    """One row per case: image, reference, prediction, on the axial slice with most foreground.

    Args:
        items: (name, image (X, Y, Z), reference (X, Y, Z), prediction (X, Y, Z)).
        num_classes: K including background (for the colours).
        path: the PNG to write.

    Returns:
        `path`.
    """
    fig, axes = plt.subplots(len(items), 3, figsize=(7.5, 2.6 * len(items)), squeeze=False)
    cmap = _labels_cmap(num_classes)
    for row, (name, image, ref, pred) in zip(axes, items):
        k = int(np.argmax((ref > 0).sum(axis=(0, 1)))) if ref.any() else image.shape[2] // 2
        for ax, lab, title in zip(row, (None, ref, pred), (name, "reference", "prediction")):
            _show(ax, plane(image, 2, k), f"{title} (z={k})" if lab is None else title)
            if lab is not None:
                sl = plane(lab, 2, k).astype(float)
                ax.imshow(
                    np.ma.masked_where(sl == 0, sl - 1),
                    cmap=cmap,
                    origin="lower",
                    alpha=0.5,
                    vmin=0,
                    vmax=max(num_classes - 2, 1),
                    interpolation="nearest",
                )
    return save_figure(fig, path, DPI)


def three_planes(
    image: np.ndarray,
    heat: np.ndarray,
    path: str | Path,
    title: str = "",
    center: Sequence[int] | None = None,
    contour: np.ndarray | None = None,
    plane_names: Sequence[str] = PLANES,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
) -> Path:
    """Sagittal, coronal and axial planes through `center` (default: the maximum of `heat`).

    Args:
        image: (X, Y, Z) underlay.
        heat: (X, Y, Z) map drawn over it (attention), scaled to its own min..max.
        path: the PNG to write.
        title: the figure's title.
        center: (x, y, z) voxel the three planes pass through.
        contour: optional (X, Y, Z) binary mask outlined in red (a reference tumor mask).
        plane_names: titles of the planes across axes 0, 1, 2 (sagittal, coronal, axial on the
            RAS recipe grid; pass axis names for a volume in its file's own orientation).
        spacing: voxel size per axis, for the pixel aspect ratio.

    Returns:
        `path`.
    """
    if center is None:
        center = np.unravel_index(int(np.argmax(heat)), heat.shape)
    fig, axes = plt.subplots(1, 3, figsize=(9, 3.2))
    lo, hi = float(heat.min()), float(heat.max())
    for axis, (ax, name) in enumerate(zip(axes, plane_names)):
        rows_axis, cols_axis = [a for a in range(3) if a != axis][::-1]
        _show(ax, plane(image, axis, center[axis]), f"{name} {center[axis]}")
        ax.set_aspect(float(spacing[rows_axis]) / float(spacing[cols_axis]))
        ax.imshow(
            plane(heat, axis, center[axis]),
            cmap="jet",
            alpha=0.4,
            origin="lower",
            vmin=lo,
            vmax=hi if hi > lo else lo + 1,
        )
        if contour is not None and plane(contour, axis, center[axis]).any():
            ax.contour(
                plane(contour, axis, center[axis]).astype(float),
                levels=[0.5],
                colors="r",
                linewidths=0.8,
            )
    fig.suptitle(title, fontsize=9)
    return save_figure(fig, path, DPI)


def reconstruction_grid(
    rows: Sequence[dict[str, np.ndarray]],
    path: str | Path,
    columns: Sequence[str] = ("masked", "recon", "target"),
) -> Path:
    """One row per sample, one column per volume: the middle axial slice of each.

    Args:
        rows: dicts of (X, Y, Z) volumes keyed by the `columns` names.
        path: the PNG to write.
        columns: the keys shown, left to right; each row's grey range comes from the last one.

    Returns:
        `path`.
    """
    fig, axes = plt.subplots(
        len(rows), len(columns), figsize=(2.6 * len(columns), 2.6 * len(rows)), squeeze=False
    )
    for r, (ax_row, vols) in enumerate(zip(axes, rows)):
        ref = vols[columns[-1]]
        lo, hi = float(np.percentile(ref, 1)), float(np.percentile(ref, 99))
        for ax, name in zip(ax_row, columns):
            vol = vols[name]
            k = vol.shape[2] // 2
            ax.imshow(
                plane(vol, 2, k), cmap="gray", origin="lower", vmin=lo, vmax=max(hi, lo + 1e-6)
            )
            ax.set_title(f"{name} #{r}", fontsize=8)
            ax.axis("off")
    return save_figure(fig, path, DPI)


def loss_curve(
    steps: Sequence[int], losses: Sequence[float], path: str | Path, title: str = "fine-tuning loss"
) -> Path:
    """Training loss against the step."""
    fig, ax = plt.subplots(figsize=(4.5, 3))
    ax.plot(list(steps), list(losses), lw=1)
    ax.set(xlabel="step", ylabel="loss", title=title)
    ax.grid(alpha=0.3)
    return save_figure(fig, path, DPI)
