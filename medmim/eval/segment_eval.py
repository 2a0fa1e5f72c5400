"""Sliding-window prediction, predictions in the scan's geometry, and per-class metrics.

Inference is MONAI's `sliding_window_inference` with Gaussian blending (overlap 0.5 by
default: SMIT's later code and nnU-Net), stitched on the CPU so large scans fit. The class
probabilities are resampled back to the original scan (`medmim.eval.volumes.to_original_labels`,
bilinear, before the argmax, as MONAI's `Invertd(nearest_interp=False)` convention), so the
saved label map has the input file's shape and affine.

Metrics are computed on that original grid against the original label file, with the file's
voxel spacing (so HD95 and ASD are in mm): MONAI `DiceMetric` (empty reference -> NaN),
`HausdorffDistanceMetric(percentile=95)` and `SurfaceDistanceMetric(symmetric=True)` (average
symmetric surface distance), background excluded. A class missing from the prediction or the
reference has no surface distance (NaN in the tables); summaries average the finite values.
"""

from __future__ import annotations

import csv
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from monai.metrics import DiceMetric, HausdorffDistanceMetric, SurfaceDistanceMetric
from torch import Tensor, nn

from medmim.data.io import load_volume
from medmim.errors import DataError
from medmim.eval.metrics import mean_std
from medmim.eval.runtime import autocast
from medmim.eval.volumes import Case, save_nifti, to_original_labels

METRICS = ("dice", "hd95", "asd")


@torch.no_grad()
def predict_probs(
    model: nn.Module,
    image: np.ndarray,
    roi: Sequence[int],
    device: torch.device,
    overlap: float = 0.5,
    sw_batch_size: int = 2,
) -> Tensor:
    """Softmax probabilities (K, X, Y, Z) on the recipe grid for one (C, X, Y, Z) image."""
    model.eval()
    x = torch.from_numpy(np.ascontiguousarray(image))[None]
    with autocast(device):
        logits = sliding_window_inference(
            x,
            roi_size=list(roi),
            sw_batch_size=sw_batch_size,
            predictor=model,
            overlap=overlap,
            mode="gaussian",
            sw_device=device,
            device="cpu",
        )
    return torch.softmax(logits.float(), dim=1)[0]


def case_metrics(
    pred: np.ndarray, ref: np.ndarray, num_classes: int, spacing: Sequence[float]
) -> dict[str, np.ndarray]:
    """Dice, HD95 (mm), ASD (mm) per foreground class: `{metric: (K - 1,) float}`.

    Args:
        pred: (X, Y, Z) integer label map.
        ref: (X, Y, Z) integer reference label map, same grid.
        num_classes: K including background.
        spacing: voxel spacing in mm per array axis.
    """
    pred_t, ref_t = torch.as_tensor(np.asarray(pred)), torch.as_tensor(np.asarray(ref))
    spacing = [float(s) for s in spacing]
    out = {m: np.full(num_classes - 1, np.nan) for m in METRICS}
    for k in range(1, num_classes):  # one class at a time: two channels, not K, in memory
        p, r = pred_t == k, ref_t == k
        with warnings.catch_warnings():  # "class k is all 0": reported as NaN below
            warnings.filterwarnings("ignore", message=".*may result in nan/inf distance")
            # MONAI 1.5-1.6's own surface-distance code (`get_edge_surface_distance`) passes the
            # deprecated `always_return_as_numpy=False` to `get_mask_edges`, which warns on every
            # call; nothing medmim passes can avoid it, and results are unaffected.
            warnings.filterwarnings("ignore", ".*always_return_as_numpy", FutureWarning)
            values = _monai_metrics(
                torch.stack([~p, p])[None].float(), torch.stack([~r, r])[None].float(), spacing
            )
        for m in METRICS:
            out[m][k - 1] = float(values[m][0, 0])
    return {m: np.where(np.isfinite(v), v, np.nan) for m, v in out.items()}


def _monai_metrics(p: Tensor, r: Tensor, spacing: list[float]) -> dict[str, Tensor]:
    return {
        "dice": DiceMetric(include_background=False, reduction="none", ignore_empty=True)(p, r),
        "hd95": HausdorffDistanceMetric(include_background=False, percentile=95, reduction="none")(
            p, r, spacing=spacing
        ),
        "asd": SurfaceDistanceMetric(include_background=False, symmetric=True, reduction="none")(
            p, r, spacing=spacing
        ),
    }


def reference_labels(case: Case, num_classes: int) -> np.ndarray:
    """The case's label file on its own grid, (X, Y, Z) int64.

    Raises:
        DataError: its shape differs from the image's, or it holds a label >= `num_classes`.
    """
    ref = load_volume(case.record.label)
    if list(ref.shape[1:]) != list(case.meta["original_shape"]):
        raise DataError(
            case.record.label,
            f"shape {tuple(ref.shape[1:])} differs from the image's "
            f"{tuple(case.meta['original_shape'])}",
        )
    ref = ref[0].round().long().numpy()
    if ref.max() >= num_classes or ref.min() < 0:
        raise DataError(
            case.record.label,
            f"label values {ref.min()}..{ref.max()} outside 0.."
            f"{num_classes - 1}; name every class with --labels",
        )
    return ref


def predict_case(
    predict: Callable[[np.ndarray], Tensor],
    case: Case,
    out_dir: Path,
) -> tuple[np.ndarray, np.ndarray]:
    """Predict one case, save `<name>_seg.nii.gz` in the original geometry.

    Returns:
        (label map on the recipe grid, label map on the original grid), both (X, Y, Z) uint8.
    """
    probs = predict(case.image)
    original = to_original_labels(probs, case.meta).numpy().astype(np.uint8)
    save_nifti(
        original, case.meta["original_affine"], out_dir / f"{case.name}_seg.nii.gz", np.uint8
    )
    return probs.argmax(0).numpy().astype(np.uint8), original


def write_tables(rows: list[dict], names: Sequence[str], out_dir: Path) -> dict[str, object]:
    """`per_case.csv` and `per_class.csv`; returns the headline metrics for results.json.

    Headline: `val/<metric>` = mean +- std over cases of each case's class mean, and
    `val/<metric>/<class>` = mean +- std over cases.
    """
    with open(out_dir / "per_case.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, ["case", "class", *METRICS])
        writer.writeheader()
        writer.writerows(rows)
    metrics: dict[str, object] = {}
    with open(out_dir / "per_class.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["class", *[f"{m}_{s}" for m in METRICS for s in ("mean", "std")], "cases"])
        for name in names:
            sel = [r for r in rows if r["class"] == name]
            stats = {m: mean_std([r[m] for r in sel]) for m in METRICS}
            writer.writerow(
                [name, *[f"{stats[m][s]:.4f}" for m in METRICS for s in ("mean", "std")], len(sel)]
            )
            metrics.update({f"val/{m}/{name}": stats[m] for m in METRICS})
    for m in METRICS:
        per_case = {}
        for r in rows:
            per_case.setdefault(r["case"], []).append(r[m])
        means = [np.nanmean(v) if np.isfinite(v).any() else np.nan for v in per_case.values()]
        metrics[f"val/{m}"] = mean_std(means)
    return metrics
