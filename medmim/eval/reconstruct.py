"""`medmim reconstruct`: masked input, prediction and target of a run's MIP / AMIP head.

The masked-image-prediction head is part of the pretraining method, not of the exported
encoder, so this reads the run's checkpoint (`checkpoints/last.ckpt`: "config" and "method"),
rebuilds the method as the training loop does (`METHODS.build(cfg["method"],
backbone=cfg["model"], context=TrainContext(...))`), loads its state strictly and runs its
`forward(batch, step)` without gradients on views of the run's data (or `--data`). The method
reports `StepOutput.visuals` for the first sample of view 1: `view` (the target), `mask` (1 =
masked voxel) and `recon` (the head's prediction), each (D, H, W); methods without a
reconstruction head give no `recon` and are refused with a clear error.

Scores per sample (SMIT reports the MSE of reconstruction, sec. 3): MSE and L1 over the masked
voxels (what the loss of SMIT eq. 1 / SMART eq. 6 sees) and MSE over all voxels.

Outputs in `--out`: `figures/reconstruction.png` (one row per sample: masked input,
prediction, target; middle axial slice), `samples.csv`, `volumes/sample_<k>_{masked,recon,
target}.nii.gz` (voxel size = the recipe's spacing), results.json.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from medmim.data.config import as_data_config
from medmim.data.pretrain import build_pretrain_dataset, cache_root
from medmim.errors import ConfigError, DataError
from medmim.eval import overlays
from medmim.eval.export import find_checkpoint, read_checkpoint
from medmim.eval.metrics import mean_std
from medmim.eval.report import write_results
from medmim.eval.runtime import pick_device
from medmim.eval.volumes import save_nifti
from medmim.methods.base import PretrainMethod
from medmim.registry import METHODS
from medmim.types import TrainContext

REQUIRED_VISUALS = ("view", "mask", "recon")


@dataclass
class ReconstructConfig:
    """Options of `medmim reconstruct` (the CLI flags, same names)."""

    run: str
    out: str
    data: str | None = None
    num: int = 4
    seed: int = 0
    device: str = "auto"


def load_method(
    ckpt: dict[str, Any], device: torch.device
) -> tuple[PretrainMethod, dict[str, Any]]:
    """The pretraining method of a checkpoint, weights loaded strictly, in eval mode."""
    cfg = ckpt.get("config") or {}
    if "method" not in ckpt or not cfg.get("method") or not cfg.get("model"):
        raise DataError(
            "checkpoint",
            "has no 'method' weights or no config.method / config.model;"
            " reconstruct needs a pretraining checkpoint (last.ckpt)",
        )
    data = cfg.get("data") or {}
    context = TrainContext(
        in_channels=int(ckpt.get("encoder_config", {}).get("in_channels", 1)),
        crop_size=tuple(int(s) for s in data.get("crop_size", (96, 96, 96))),
    )
    method = METHODS.build(dict(cfg["method"]), backbone=dict(cfg["model"]), context=context)
    method.load_state_dict(ckpt["method"], strict=True)
    return method.to(device).eval(), cfg


def sample_visuals(
    method: PretrainMethod, item: dict[str, Any], step: int, device: torch.device
) -> dict[str, np.ndarray]:
    """Run the method on one dataset item; (D, H, W) arrays `view`, `mask`, `recon`."""
    batch = {
        "views": [v[None].to(device) for v in item["views"]],
        "index": torch.tensor([int(item["index"])], device=device),
    }
    with torch.no_grad():
        out = method(batch, step)
    visuals = out.visuals or {}
    missing = [k for k in REQUIRED_VISUALS if k not in visuals]
    if missing:
        raise ConfigError(
            f"method '{type(method).__name__}' reports no {missing} visuals: it has "
            "no masked-image-prediction head to show (use a run whose method reconstructs "
            "the masked voxels)"
        )
    return {k: _array(visuals[k]) for k in REQUIRED_VISUALS}


def _array(t: Tensor) -> np.ndarray:
    arr = t.detach().float().cpu()
    while arr.ndim > 3:
        arr = arr[0]
    return arr.numpy()


def scores(vis: dict[str, np.ndarray]) -> dict[str, float]:
    """MSE / L1 over masked voxels and MSE over all voxels of one sample."""
    masked = vis["mask"] > 0.5
    err = vis["recon"] - vis["view"]
    n = int(masked.sum())
    return {
        "mse_masked": float((err[masked] ** 2).mean()) if n else float("nan"),
        "l1_masked": float(np.abs(err[masked]).mean()) if n else float("nan"),
        "mse_all": float((err**2).mean()),
        "masked_fraction": float(masked.mean()),
    }


def run_reconstruct(cfg: ReconstructConfig) -> dict[str, Any]:
    """Figures, volumes, table and results.json for `cfg.num` samples of the run's data."""
    out, device = Path(cfg.out), pick_device(cfg.device)
    path = find_checkpoint(cfg.run)
    ckpt = read_checkpoint(path)
    method, run_cfg = load_method(ckpt, device)
    data = as_data_config(run_cfg.get("data") or {})
    run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    data.cache_dir = str(cache_root(data.cache_dir, run_dir))
    if cfg.data:
        data.source = cfg.data
    dataset = build_pretrain_dataset(data, None, cfg.seed)
    spacing = list(data.recipe.spacing or [1.0, 1.0, 1.0])
    affine = np.diag([*spacing, 1.0])
    torch.manual_seed(cfg.seed)
    rows, figure = [], []
    for k in range(min(cfg.num, len(dataset))):
        vis = sample_visuals(method, dataset[k], int(ckpt.get("step", 0)), device)
        vols = {
            "masked": vis["view"] * (vis["mask"] < 0.5),
            "recon": vis["recon"],
            "target": vis["view"],
        }
        for name, vol in vols.items():
            save_nifti(vol, affine, out / "volumes" / f"sample_{k}_{name}.nii.gz")
        figure.append(vols)
        rows.append({"sample": k, **scores(vis)})
    with open(out / "samples.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    overlays.reconstruction_grid(figure, out / "figures" / "reconstruction.png")
    metrics = {
        f"recon/{m}": mean_std([r[m] for r in rows]) for m in ("mse_masked", "l1_masked", "mse_all")
    }
    method_name = (run_cfg.get("method") or {}).get("name", "")
    who = {
        "spec": str(cfg.run),
        "method": method_name,
        "backbone": str((run_cfg.get("model") or {}).get("name", "")),
        "pretrained": True,
    }
    write_results(
        out,
        "reconstruct",
        who,
        metrics,
        [{"title": "Per sample", "path": "samples.csv"}],
        [{"title": "Masked input, prediction, target", "path": "figures/reconstruction.png"}],
        data.source,
        {
            "run": cfg.run,
            "checkpoint": str(path),
            "step": ckpt.get("step"),
            "num": len(rows),
            "seed": cfg.seed,
        },
    )
    return metrics
