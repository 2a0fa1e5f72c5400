"""`medmim segment`: fine-tune a segmenter on a pretrained (or scratch) encoder and evaluate it.

SMIT's fine-tuning recipe (SMIT sec. 3; smart-smit-attmask reference §2): a SwinUNETR-style
decoder on the Swin encoder (MONAI `SwinUNETR` with our weights in `.swinViT`), or a UNETR
decoder on a ViT (`medmim.models.decoders`); DiceCE loss (`to_onehot_y`, softmax, squared
denominators, smooth_nr 0, smooth_dr 1e-6); AdamW (lr 1e-4, weight decay 1e-5) with linear
warm-up and cosine decay per step; crops by positive/negative sampling. Validation cases are
predicted with a Gaussian-blended sliding window and scored in the original scan geometry
(`medmim.eval.segment_eval`).

Outputs in `--out`:

    predictions/<case>_seg.nii.gz    validation and test predictions, original shape + affine
    per_case.csv  per_class.csv      Dice, HD95 (mm), ASD (mm)
    train_log.jsonl                  step, loss, lr
    segmenter.safetensors + .json    the fine-tuned network and how to rebuild it
    figures/overlays.png  figures/loss.png
    results.json                     (schema in medmim.eval.report)
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from monai.losses import DiceCELoss
from safetensors.torch import save_file
from torch import nn
from tqdm.auto import tqdm

from medmim.errors import ConfigError
from medmim.eval import overlays, segment_data, segment_eval
from medmim.eval.encoders import describe, load_encoder_or_scratch
from medmim.eval.report import write_results
from medmim.eval.runtime import (
    autocast,
    check_data_recipe,
    default_roi,
    pick_device,
    resolve_recipe,
)
from medmim.models.decoders import default_decoder
from medmim.registry import DECODERS
from medmim.schedules import warmup_cosine

log = logging.getLogger(__name__)


@dataclass
class SegmentConfig:
    """Options of `medmim segment` (the CLI flags, same names)."""

    encoder: str
    data: str
    out: str
    labels: list[str] | None = None
    decoder: str = "auto"
    feature_size: int = 16
    roi: list[int] | None = None
    max_steps: int = 200
    batch_size: int = 1
    num_samples: int = 2
    lr: float = 1e-4
    weight_decay: float = 1e-5
    warmup_fraction: float = 0.1
    train_fraction: float = 1.0
    val_fraction: float = 0.2
    overlap: float = 0.5
    sw_batch_size: int = 2
    recipe: str | None = None
    force_recipe: bool = False
    seed: int = 0
    device: str = "auto"
    max_figures: int = 4
    progress: bool = True


def resolve_roi(cfg: SegmentConfig, meta: dict[str, Any], decoder: str) -> list[int]:
    """The training / sliding-window ROI, checked against what the decoder can take."""
    roi = default_roi(cfg.roi, meta)
    if decoder == "swin_unetr" and any(r % 32 or r < 64 for r in roi):
        raise ConfigError(
            f"--roi {','.join(map(str, roi))}: swin_unetr needs sides that are "
            "multiples of 32 and at least 64 (e.g. 64,64,64 or 96,96,96)"
        )
    return roi


def build_model(
    encoder: nn.Module, name: str, num_classes: int, roi: list[int], feature_size: int = 16
) -> tuple[nn.Module, dict[str, Any]]:
    """The segmenter (decoder `name` on `encoder`) and its decoder build spec.

    `feature_size` is UNETR's base width (16 in the paper); SwinUNETR's equals the encoder's
    embed width, as the stage-1 skip has that many channels (SMIT reference §2).
    """
    spec: dict[str, Any] = {"name": name, "out_channels": num_classes}
    if name == "unetr":
        spec.update(img_size=roi, feature_size=feature_size)
    return DECODERS.build(spec, encoder=encoder), spec


def train(
    model: nn.Module, loader: Any, cfg: SegmentConfig, device: torch.device, out: Path
) -> list[dict[str, float]]:
    """Fine-tune for `cfg.max_steps` steps; logs every step to `train_log.jsonl`."""
    loss_fn = DiceCELoss(
        to_onehot_y=True, softmax=True, squared_pred=True, smooth_nr=0.0, smooth_dr=1e-6
    )
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    warmup = int(cfg.warmup_fraction * cfg.max_steps)
    batches = itertools.chain.from_iterable(itertools.repeat(loader))
    history: list[dict[str, float]] = []
    model.train()
    with open(out / "train_log.jsonl", "w", encoding="utf-8") as log_file:
        for step in tqdm(
            range(cfg.max_steps), desc="fine-tune", leave=False, disable=not cfg.progress
        ):
            lr = warmup_cosine(step, cfg.max_steps, cfg.lr, cfg.lr * 1e-2, warmup)
            for group in opt.param_groups:
                group["lr"] = lr
            batch = next(batches)
            x, y = batch["image"].to(device), batch["label"].to(device)
            with autocast(device):
                logits = model(x)
            loss = loss_fn(logits.float(), y)
            if not math.isfinite(loss.item()):
                log.warning("step %d: non-finite loss, batch skipped", step)
                continue
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            history.append({"step": step, "loss": float(loss.item()), "lr": lr})
            log_file.write(json.dumps(history[-1]) + "\n")
    return history


def evaluate(
    model: nn.Module,
    records: list,
    recipe: dict[str, Any],
    names: list[str],
    cfg: SegmentConfig,
    roi: list[int],
    device: torch.device,
    out: Path,
    labelled: bool = True,
) -> tuple[list[dict], list]:
    """Predict every record (saved NIfTI); with labels, per-case metrics rows and figure items.

    Cases are loaded one at a time, so a large test set never sits in memory.
    """

    def predict(image):
        return segment_eval.predict_probs(model, image, roi, device, cfg.overlap, cfg.sw_batch_size)

    rows, figure = [], []
    for record in tqdm(records, desc="predict", leave=False, disable=not cfg.progress):
        case = segment_data.load_cases([record], recipe, with_labels=labelled)[0]
        grid_pred, pred = segment_eval.predict_case(predict, case, out / "predictions")
        if not labelled:
            continue
        ref = segment_eval.reference_labels(case, len(names) + 1)
        scores = segment_eval.case_metrics(pred, ref, len(names) + 1, case.original_spacing)
        rows += [
            {"case": case.name, "class": n, **{m: float(scores[m][k]) for m in scores}}
            for k, n in enumerate(names)
        ]
        if len(figure) < cfg.max_figures:
            figure.append((case.name, case.image[0], case.masks["label"], grid_pred))
    return rows, figure


def run_segment(cfg: SegmentConfig) -> dict[str, Any]:
    """Fine-tune, predict, score and write every output (see the module docstring)."""
    out = Path(cfg.out)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    device = pick_device(cfg.device)
    encoder, meta = load_encoder_or_scratch(cfg.encoder, seed=cfg.seed)
    recipe = resolve_recipe(meta, cfg.recipe)
    splits = segment_data.make_splits(cfg.data, cfg.train_fraction, cfg.val_fraction, cfg.seed)
    check_data_recipe(splits.train, recipe, cfg.force_recipe, cfg.recipe, str(cfg.data))
    train_cases = segment_data.load_cases(splits.train, recipe)
    names = segment_data.label_names(cfg.data, cfg.labels, train_cases)
    decoder = default_decoder(encoder) if cfg.decoder == "auto" else cfg.decoder
    roi = resolve_roi(cfg, meta, decoder)
    model, spec = build_model(encoder, decoder, len(names) + 1, roi, cfg.feature_size)
    model.to(device)
    loader = segment_data.crop_loader(train_cases, roi, cfg.num_samples, cfg.batch_size, cfg.seed)
    history = train(model, loader, cfg, device, out)
    rows, figure = evaluate(model, splits.val, recipe, names, cfg, roi, device, out)
    evaluate(model, splits.test, recipe, names, cfg, roi, device, out, labelled=False)
    metrics = segment_eval.write_tables(rows, names, out)
    metrics["train/loss_last"] = history[-1]["loss"] if history else float("nan")
    save_file(
        {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
        str(out / "segmenter.safetensors"),
    )
    info = {"decoder": spec, "encoder": meta, "labels": names, "roi": roi, "recipe": recipe}
    (out / "segmenter.json").write_text(
        json.dumps(info, indent=2, default=str) + "\n", encoding="utf-8"
    )
    figures = []
    if figure:
        overlays.segmentation_overlays(figure, len(names) + 1, out / "figures/overlays.png")
        figures.append({"title": "Validation overlays", "path": "figures/overlays.png"})
    if history:
        overlays.loss_curve(
            [h["step"] for h in history], [h["loss"] for h in history], out / "figures/loss.png"
        )
        figures.append({"title": "Fine-tuning loss", "path": "figures/loss.png"})
    tables = [
        {"title": "Per class (validation)", "path": "per_class.csv"},
        {"title": "Per case (validation)", "path": "per_case.csv"},
    ]
    config = {
        **dataclasses.asdict(cfg),
        "roi": roi,
        "decoder": spec["name"],
        "labels": names,
        "train_cases": len(train_cases),
        "val_cases": len(splits.val),
        "test_cases": len(splits.test),
    }
    write_results(
        out,
        "segment",
        describe(cfg.encoder, meta),
        metrics,
        tables,
        figures,
        data=cfg.data,
        config=config,
    )
    return metrics
