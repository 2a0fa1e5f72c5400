"""Progress figures of a run: mid-slices of a method's visuals, and loss curves at the end.

Visuals are `StepOutput.visuals`: volumes (D, H, W) (or (C, D, H, W), first channel shown) of
the first sample, e.g. `view`, `mask`, `recon`, `attn`. Each becomes one row of three
mid-slices, one per tensor axis, titled by that axis: "mid D" is the (H, W) plane halfway
along D, drawn with H across and W up. Which anatomical plane that is depends on the data: the
recipe's RAS views have (D, H, W) = (x, y, z), so the columns are sagittal, coronal, axial;
PUMIT's native crops have their slice axis first, so "mid D" is the acquired (usually axial)
plane. `mask` and `attn` are drawn over `view` when the method returns one.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

#: column titles: the axis the slice is taken halfway along, then the axes drawn (across, up).
PLANES = ("mid D (H across, W up)", "mid H (D across, W up)", "mid W (D across, H up)")
OVERLAYS = {"mask": "autumn", "attn": "inferno", "hints": "winter"}


def _volume(t: torch.Tensor) -> np.ndarray:
    arr = t.detach().float().cpu()
    while arr.ndim > 3:
        arr = arr[0]
    if arr.ndim != 3:
        raise ValueError(f"a visual must be a (D, H, W) volume, got shape {tuple(t.shape)}")
    return arr.numpy()


def mid_slices(volume: np.ndarray) -> list[np.ndarray]:
    """The three mid-slices of a (D, H, W) volume, transposed for `imshow(origin='lower')`."""
    d, h, w = volume.shape
    return [volume[d // 2].T, volume[:, h // 2].T, volume[:, :, w // 2].T]


def save_visuals(visuals: dict[str, torch.Tensor], path: Path, title: str = "") -> Path:
    """One PNG: a row per visual, three planes per row."""
    from matplotlib.figure import Figure

    vols = {k: _volume(v) for k, v in visuals.items()}
    base = vols.get("view")
    height = 2.5 * len(vols) + 0.7
    fig = Figure(figsize=(7.5, height))
    fig.subplots_adjust(
        left=0.06, right=0.99, bottom=0.01, top=1 - 0.7 / height, wspace=0.03, hspace=0.06
    )
    axes = fig.subplots(len(vols), 3, squeeze=False)
    window = (float(base.min()), float(base.max())) if base is not None else (None, None)
    for row, (key, vol) in enumerate(vols.items()):
        over = key in OVERLAYS and base is not None and base.shape == vol.shape
        same_window = (
            key == "recon" and base is not None
        )  # judge the reconstruction on the view's scale
        for col, (img, plane) in enumerate(zip(mid_slices(vol), PLANES)):
            ax = axes[row][col]
            if over:
                assert base is not None
                ax.imshow(mid_slices(base)[col], cmap="gray", origin="lower")
                ax.imshow(
                    np.ma.masked_where(img <= 0, img), cmap=OVERLAYS[key], alpha=0.5, origin="lower"
                )
            else:
                vmin, vmax = window if same_window else (None, None)
                ax.imshow(img, cmap="gray", origin="lower", vmin=vmin, vmax=vmax)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(plane, fontsize=9)
        axes[row][0].set_ylabel(key)
    if title:
        fig.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    return path


def plot_loss_curves(metrics: Path, path: Path) -> Path | None:
    """Loss terms and learning rate against the step, from metrics.jsonl (None if empty)."""
    rows = (
        [json.loads(ln) for ln in metrics.read_text(encoding="utf-8").splitlines() if ln.strip()]
        if metrics.is_file()
        else []
    )
    if not rows:
        return None
    from matplotlib.figure import Figure

    keys = sorted({k for r in rows for k in r if k == "loss" or k.startswith("loss/")})
    fig = Figure(figsize=(11, 4))
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.12, top=0.95, wspace=0.25)
    ax_loss, ax_lr = fig.subplots(1, 2)
    values: list[float] = []
    for key in keys:
        pts = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
        if pts:
            xs, ys = zip(*pts)
            values += ys
            ax_loss.plot(xs, ys, label=key, lw=2 if key == "loss" else 1)
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("loss")
    if values and min(values) > 0:
        from matplotlib.ticker import FormatStrFormatter, NullFormatter

        ax_loss.set_yscale("log")  # plain tick labels: mathtext ones cost ~0.5 s to draw
        ax_loss.yaxis.set_major_formatter(FormatStrFormatter("%.3g"))
        ax_loss.yaxis.set_minor_formatter(NullFormatter())
    ax_loss.legend(fontsize=8)
    lrs = [
        (r["step"], r["lr"])
        for r in rows
        if isinstance(r.get("lr"), (int, float)) and math.isfinite(r["lr"])
    ]
    if lrs:
        ax_lr.plot(*zip(*lrs), color="k")
    ax_lr.set_xlabel("step")
    ax_lr.set_ylabel("learning rate")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    return path
