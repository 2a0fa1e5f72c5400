"""A PNG of a preprocessed scan and its training views: mid-slices in three planes.

`preview_views` caches one record, draws two views and saves the PNG (`medmim data preview`,
the demo's data stage); `save_views_png` draws any (name, volume) rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from medmim.data.config import RecipeConfig
    from medmim.data.sources import Record

#: (title, axis to slice) for arrays in RAS order (x, y, z).
PLANES = (("axial", 2), ("coronal", 1), ("sagittal", 0))


def save_views_png(
    rows: Sequence[tuple[str, np.ndarray]],
    out: str | Path,
    title: str = "",
    vrange: tuple[float, float] | None = None,
) -> Path:
    """Save one row of axial / coronal / sagittal mid-slices per (name, volume (C, X, Y, Z)).

    Args:
        rows: e.g. [("scan", volume), ("view 1", v1), ("view 2", v2)].
        out: PNG path (its folder is created).
        title: figure title (no patient identifiers: give a file name at most).
        vrange: grey-level range; default the 0.5-99.5 percentiles of the first volume.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = np.asarray(rows[0][1], dtype=np.float32)
    lo, hi = vrange or tuple(np.percentile(first, [0.5, 99.5]))
    fig, axes = plt.subplots(len(rows), 3, figsize=(9, 3 * len(rows)), squeeze=False)
    for r, (name, vol) in enumerate(rows):
        vol = np.asarray(vol, dtype=np.float32)[0]
        for c, (plane, axis) in enumerate(PLANES):
            sl = np.take(vol, vol.shape[axis] // 2, axis=axis)
            axes[r, c].imshow(sl.T, origin="lower", cmap="gray", vmin=lo, vmax=hi)
            axes[r, c].set_title(f"{name}: {plane} {tuple(vol.shape)}", fontsize=8)
            axes[r, c].axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def preview_views(
    record: Record,
    recipe: RecipeConfig,
    out: str | Path,
    crop: Sequence[int],
    cache_dir: str | Path,
    seed: int = 0,
) -> Path:
    """Cache `record` under `recipe`, draw two training views and save the three-plane PNG.

    Args:
        record: one scan of a source (`medmim.data.sources.resolve_source`).
        recipe: the preprocessing recipe.
        out: PNG path.
        crop: view size in voxels (3 ints).
        cache_dir: the persistent cache folder.
        seed: seed of the two views.

    Returns:
        The PNG's path.
    """
    from medmim.data.cache import VolumeCache
    from medmim.data.config import AugmentConfig
    from medmim.data.views import ViewSampler

    entry = VolumeCache(cache_dir, recipe).ensure(record)
    volume = entry.array()
    views = ViewSampler(list(crop), AugmentConfig())(
        volume, np.random.default_rng(seed), entry.meta["background"]
    )
    rows = [("scan", volume)] + [(f"view {i + 1}", v.numpy()) for i, v in enumerate(views)]
    return save_views_png(
        rows,
        out,
        title=Path(record.name).name,
        vrange=(0.0, 1.0) if recipe.intensity == "ct" else None,
    )
