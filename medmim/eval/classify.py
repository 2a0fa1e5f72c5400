"""`medmim classify`: linear probing or fine-tuning of an encoder, with folds and data fractions.

Protocol (SMART sec. 4.2-4.4, 5.2-5.6; splits in `medmim.eval.splits`): a held-out test set, a
stratified k-fold over the rest, and for each fold stratified, nested training subsets (the
limited-data study). Each (fraction, fold) run trains on its subset, selects on the fold's
validation part and is scored on both the validation part and the test set. When the CSV names
each sample's patient (`--group-key`, auto-detected: e.g. the phantom of a nodule), the hold-out
and the folds keep every patient on one side.

Outputs in OUT: `results.json` (schema in `medmim.eval.report`) and the tables and figures of
`medmim.eval.classify_outputs`.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from medmim.errors import ConfigError, DataError
from medmim.eval.classify_outputs import Run, write_outputs
from medmim.eval.encoders import (
    describe,
    embed,
    extract_features,
    input_size,
    load_encoder_or_scratch,
)
from medmim.eval.labelled import LabelledOptions, LabelledSet, VolumeDataset
from medmim.eval.labelled_sources import load_for_encoder
from medmim.eval.probe import ClassifierNet, FinetuneConfig, finetune, linear_probe, predict
from medmim.eval.report import write_results
from medmim.eval.runtime import pick_device
from medmim.eval.splits import Split, make_splits

log = logging.getLogger(__name__)
MODES = ("linear", "finetune")


@dataclass
class ClassifyConfig(LabelledOptions):
    """Options of `medmim classify` (CLI flags of the same names; the shared ones are
    `LabelledOptions`').
    """

    mode: str = "linear"
    folds: int = 5
    fractions: Sequence[float] = (1.0,)
    test_size: float = 0.2
    C: float = 1.0
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)


def _loader(
    data: LabelledSet,
    index: np.ndarray,
    size: Sequence[int],
    in_ch: int,
    cfg: ClassifyConfig,
    train: bool = False,
) -> DataLoader:
    ds = VolumeDataset(data, index, size, in_ch, flip=train)
    gen = torch.Generator().manual_seed(cfg.seed)
    return DataLoader(
        ds,
        batch_size=cfg.finetune.batch_size,
        shuffle=train,
        generator=gen,
        num_workers=cfg.finetune.num_workers,
    )


def _linear_runs(
    model: nn.Module,
    data: LabelledSet,
    splits: list[Split],
    size: Sequence[int],
    in_ch: int,
    cfg: ClassifyConfig,
) -> list[Run]:
    """Embed every volume once with the frozen encoder, then one logistic regression per split."""
    every = np.arange(len(data))
    loader = _loader(data, every, size, in_ch, cfg)
    feats = extract_features(model, loader, cfg.feature, cfg.device, cfg.progress, len(loader))
    runs = []
    for s in splits:
        val, test = linear_probe(
            feats[s.train],
            data.labels[s.train],
            [feats[s.val], feats[s.test]],
            data.num_classes,
            cfg.C,
            cfg.seed,
        )
        runs.append(Run(s, val, test))
    return runs


def _finetune_runs(
    model: nn.Module,
    data: LabelledSet,
    splits: list[Split],
    size: Sequence[int],
    in_ch: int,
    cfg: ClassifyConfig,
) -> list[Run]:
    """A fresh copy of the encoder + linear head per split, fine-tuned end to end."""
    device = torch.device(cfg.device)
    with torch.no_grad():
        sample = VolumeDataset(data, [0], size, in_ch)[0][0][None].to(device)
        width = embed(model, sample, cfg.feature).shape[1]
    runs = []
    for s in splits:
        torch.manual_seed(cfg.seed + s.fold)
        net = ClassifierNet(copy.deepcopy(model), cfg.feature, width, data.num_classes)
        val_loader = _loader(data, s.val, size, in_ch, cfg)
        info = finetune(
            net,
            _loader(data, s.train, size, in_ch, cfg, train=True),
            val_loader,
            data.labels[s.val],
            cfg.finetune,
            device,
            cfg.progress,
        )
        test = predict(net, _loader(data, s.test, size, in_ch, cfg), device, cfg.finetune.amp)
        val = predict(net, val_loader, device, cfg.finetune.amp)
        runs.append(Run(s, val, test, info))
        log.info(
            "fraction %.2f fold %d: best epoch %d, val AUC %.3f",
            s.fraction,
            s.fold,
            info["best_epoch"],
            info["best_val_auc"],
        )
    return runs


def run_classify(
    encoder: str, data_path: str | Path, out_dir: str | Path, cfg: ClassifyConfig | None = None
) -> dict[str, Any]:
    """Run the whole protocol and write OUT; returns the headline metrics."""
    cfg = cfg or ClassifyConfig()
    cfg = replace(cfg, device=str(pick_device(cfg.device)))
    if cfg.mode not in MODES:
        raise ConfigError(f"--mode {cfg.mode}: choose one of {', '.join(MODES)}")
    model, meta = load_encoder_or_scratch(encoder, seed=cfg.seed, device=cfg.device)
    data = load_for_encoder(data_path, meta, cfg)
    if len(data.class_names) < 2:
        raise DataError(
            data_path,
            f"every volume has the label {data.class_names[0]!r}: "
            "classification needs at least two classes (check --label-key)",
        )
    size = input_size(cfg.size, meta, data.shape)
    in_ch = int(meta.get("in_channels") or 1)
    splits = make_splits(
        data.labels, data.split, cfg.folds, cfg.fractions, cfg.test_size, cfg.seed, data.groups
    )
    n_groups = None if data.groups is None else len(np.unique(data.groups))
    if data.groups is not None:
        log.info("folds grouped by column %s (%d groups)", data.group_key, n_groups)
    log.info(
        "%d volumes, %d classes, input %s, %d runs (%s)",
        len(data),
        data.num_classes,
        size,
        len(splits),
        cfg.mode,
    )
    runs = (_linear_runs if cfg.mode == "linear" else _finetune_runs)(
        model, data, splits, size, in_ch, cfg
    )
    out = Path(out_dir)
    metrics, tables, figures = write_outputs(out, runs, data)
    config = {
        **asdict(cfg),
        "input_size": list(size),
        "classes": data.class_names,
        "group_key": data.group_key,  # the column used (cfg's 'auto' resolved), None = ungrouped
        "groups": n_groups,
    }
    write_results(
        out,
        "classify",
        describe(encoder, meta),
        metrics,
        tables,
        figures,
        data=str(data_path),
        config=config,
    )
    return metrics
