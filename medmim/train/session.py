"""Everything a training session holds, how it is built before the first step, and how it is
saved to and restored from a checkpoint (medmim/train/checkpoint.py has the file format).

Order of `open_session` (all of it before the first step, so bad settings fail fast):
run-dir guards (`_check_run`) -> data (`_build_data`: dataset, step counts, loader with the
data's batch sampler, if its mode has one) -> seed -> method (`_build_method`, + init_from) ->
disk-space guard -> optimizer, scaler, schedule (`_build_optimizer`) -> restore (resume=true)
or reseed per rank -> compile -> DDP -> config.yaml.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, is_dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn

from medmim import __version__
from medmim.config import to_dict, validate
from medmim.errors import ConfigError
from medmim.registry import METHODS
from medmim.train import checkpoint as ck
from medmim.train.config import RunConfig
from medmim.train.distributed import DistInfo, broadcast_object, gather_objects, wrap_ddp
from medmim.train.lock import RunLock
from medmim.train.optim import LR_REFERENCE_BATCH, Schedule, build_optimizer, resolve_lr
from medmim.train.run_dir import (
    CKPT_DIR,
    CONFIG_FILE,
    check_disk_space,
    check_resume_config,
    check_run_dir,
    check_run_name,
    estimate_checkpoint_bytes,
)
from medmim.train.sampler import build_loader, steps_per_epoch
from medmim.types import TrainContext

if TYPE_CHECKING:
    from medmim.methods.base import PretrainMethod

log = logging.getLogger("medmim.train")
#: train.precision -> autocast dtype (None = fp32); "auto" is bf16 on CUDA, fp32 elsewhere.
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Session:
    """One training session: the run's parts and its position.

    Attributes:
        model: the method, wrapped in DDP when distributed (call this one).
        method: the bare method (state_dict, hooks, parameters).
        step: optimizer steps done.
        nonfinite_total, nonfinite_row: non-finite steps in total; roll-backs in a row now.
        guard: the `NonFiniteGuard` (device counters and the last verified state).
        last_check: the step count at the last check step; rolled_back_to: the step whose
            pre-update state the last roll-back restored (-1: none).
        lr_note: the resolved peak learning rate and where it came from, for train.log.
    """

    cfg: Any
    info: DistInfo
    run_dir: Path
    dataset: Any
    method: PretrainMethod
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    schedule: Schedule
    loader: Any
    sampler: Any
    steps_per_epoch: int
    amp_dtype: torch.dtype | None
    step: int = 0
    nonfinite_total: int = 0
    nonfinite_row: int = 0
    lr_note: str = ""
    guard: Any = None
    last_check: int = 0
    rolled_back_to: int = -1

    def sampler_state(self) -> dict[str, int]:
        """The data position of `step` and the layout it depends on."""
        epoch, pos = divmod(self.step, self.steps_per_epoch)
        accumulate = int(self.cfg.optim.accumulate)
        return {
            "epoch": epoch,
            "index": pos * accumulate,
            "seed": int(self.cfg.train.seed),
            "world_size": self.info.world_size,
            "batch_size": int(self.cfg.data.batch_size),
            "accumulate": accumulate,
            "steps_per_epoch": self.steps_per_epoch,
        }

    def save(self) -> Path:
        """Write last.ckpt (and step-XXXXXX.ckpt when due). Collective: call on every rank."""
        rngs = gather_objects(ck.capture_rng(), self.info)
        path = self.run_dir / CKPT_DIR / ck.LAST
        if not self.info.is_main:
            return path
        m = self.method
        state = {
            "method": m.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "epoch": self.step // self.steps_per_epoch,
            "rng": rngs,
            "sampler": self.sampler_state(),
            "data": self.dataset.state_dict() if hasattr(self.dataset, "state_dict") else {},
            "counters": {
                "nonfinite_total": self.nonfinite_total,
                "nonfinite_row": self.nonfinite_row,
            },
            "config": to_dict(self.cfg),
            "encoder": m.encoder.state_dict(),
            "encoder_config": m.encoder_config(),
            "method_name": m.method_name,
            "medmim_version": __version__,
        }
        ck.check_weights_only_safe(state)
        ck.atomic_save(state, path)
        keep = int(self.cfg.train.keep_every)
        if keep and self.step % keep == 0:
            ck.keep_copy(path.parent, self.step)
        return path

    def restore(self) -> None:
        """Continue from last.ckpt (or the newest readable kept copy when it is unreadable):
        weights, optimizer, scaler, counters, RNG, data state.
        """
        ckpt, _ = ck.load_resume_checkpoint(self.run_dir / CKPT_DIR)
        ck.restore_state(ckpt, self.method, self.optimizer, self.scaler)
        self.step = int(ckpt["step"])
        counters = ckpt.get("counters", {})
        self.nonfinite_total = int(counters.get("nonfinite_total", 0))
        self.nonfinite_row = int(counters.get("nonfinite_row", 0))
        if self.nonfinite_row >= int(self.cfg.train.max_nonfinite):
            log.info(
                "the run was stopped by the non-finite guard; resuming with a fresh allowance "
                "of %d roll-backs",
                int(self.cfg.train.max_nonfinite),
            )
            self.nonfinite_row = 0
        saved, now = ckpt.get("sampler", {}), self.sampler_state()
        if any(saved.get(k) != now[k] for k in now if k not in ("epoch", "index")):
            log.warning(
                "resuming with another data layout (%s -> %s): the data order differs "
                "from the interrupted run's",
                saved,
                now,
            )
        rngs = ckpt.get("rng", [])
        if len(rngs) == self.info.world_size:
            ck.restore_rng(rngs[self.info.rank])
        else:
            log.warning(
                "the checkpoint holds RNG states of %d processes, this run has %d: reseeding",
                len(rngs),
                self.info.world_size,
            )
            ck.seed_everything(int(self.cfg.train.seed) + self.info.rank + self.step)
        if ckpt.get("data") and hasattr(self.dataset, "load_state_dict"):
            self.dataset.load_state_dict(ckpt["data"])
        log.info("resumed %s at step %d", self.run_dir, self.step)


def resolve_config(cfg: Any) -> DictConfig:
    """A validated `RunConfig` from a dataclass, dict or OmegaConf config; checks choices."""
    if is_dataclass(cfg) and not isinstance(cfg, type):
        cfg = OmegaConf.structured(cfg)
    cfg = validate(OmegaConf.create(to_dict(cfg)), RunConfig)
    check_run_name(cfg.name)
    choices = {"train.precision": ("auto", *PRECISIONS), "optim.clip_mode": ("per_param", "global")}
    for key, allowed in choices.items():
        if OmegaConf.select(cfg, key) not in allowed:
            raise ConfigError(
                f"{key}: '{OmegaConf.select(cfg, key)}' is not one of {', '.join(allowed)}"
            )
    minimum = {
        "optim.accumulate": 1,
        "data.batch_size": 1,
        "train.epochs": 1,
        "train.log_every": 1,
        "train.ckpt_every": 1,
        "train.max_nonfinite": 1,
        "train.vis_every": 0,
        "train.keep_every": 0,
        "optim.warmup_steps": 0,
    }
    for key, low in minimum.items():
        value = OmegaConf.select(cfg, key)
        if value is not None and int(value) < low:
            raise ConfigError(
                f"{key}: {OmegaConf.select(cfg, key)} is too small; use an integer >= {low}"
            )
    return cfg


def _on_main(info: DistInfo, fn: Callable[[], Any]) -> None:
    """Run a check on rank 0 only; every rank raises its error (no rank hangs at a barrier)."""
    error = None
    if info.is_main:
        try:
            fn()
        except ConfigError as exc:
            error = str(exc)
    error = broadcast_object(error, info)
    if error is not None:
        raise ConfigError(error)


def open_session(
    cfg: DictConfig,
    info: DistInfo,
    dataset: Any = None,
    method: Any = None,
    lock: RunLock | None = None,
) -> Session:
    """Check, build (or restore) everything of a run before its first step; `lock` (the run
    directory's, taken here by rank 0 before anything is checked or written) is the caller's
    to release.
    """
    run_dir = Path(cfg.output_dir) / cfg.name
    lr_note = _check_run(cfg, info, run_dir, lock)
    data = _build_data(cfg, info, run_dir, dataset)
    ck.seed_everything(int(cfg.train.seed))  # the same initial weights on every rank
    method = _build_method(cfg, info, data, method)
    _on_main(
        info,
        lambda: check_disk_space(
            run_dir, estimate_checkpoint_bytes(method), data.total_steps, int(cfg.train.keep_every)
        ),
    )
    opt = _build_optimizer(cfg, info, method, data)
    session = Session(
        cfg=cfg,
        info=info,
        run_dir=run_dir,
        dataset=data.dataset,
        method=method,
        model=method,
        optimizer=opt.optimizer,
        scaler=opt.scaler,
        schedule=opt.schedule,
        loader=data.loader,
        sampler=data.sampler,
        steps_per_epoch=data.steps_per_epoch,
        amp_dtype=opt.amp_dtype,
        lr_note=lr_note,
    )
    if cfg.resume:
        session.restore()
    else:
        ck.seed_everything(int(cfg.train.seed) + info.rank)  # masks and noise differ between ranks
    if cfg.train.compile:
        method.compile()  # in place: state_dict keys stay the same
    session.model = wrap_ddp(method, info, bool(cfg.train.find_unused_parameters))
    if info.is_main:
        OmegaConf.save(cfg, run_dir / CONFIG_FILE, resolve=True)
        ck.remove_stale_temps(run_dir / CKPT_DIR)
    return session


@dataclass(frozen=True)
class _Data:
    """The data side of a session: dataset, loader and sampler, and the step counts they give."""

    dataset: Any
    loader: Any
    sampler: Any
    steps_per_epoch: int
    total_steps: int


@dataclass(frozen=True)
class _Optim:
    """The optimizer side of a session."""

    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    schedule: Schedule
    amp_dtype: torch.dtype | None


def _check_run(cfg: DictConfig, info: DistInfo, run_dir: Path, lock: RunLock | None) -> str:
    """Take the lock, resolve the learning rate, check the run directory (and the saved settings
    on resume), set deterministic algorithms; returns the learning-rate line for train.log.
    """
    if lock is not None:
        _on_main(info, lock.acquire)
    lr_note = _resolve_lr(cfg, info)
    _on_main(info, lambda: check_run_dir(run_dir, bool(cfg.resume)))
    if cfg.resume:
        _on_main(info, lambda: check_resume_config(run_dir, to_dict(cfg)))
    if cfg.train.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    return lr_note


def _build_data(cfg: DictConfig, info: DistInfo, run_dir: Path, dataset: Any) -> _Data:
    """The dataset (built from `cfg.data` unless given), the step counts, and the loader with
    the data mode's batch sampler, if it has one.
    """
    from medmim.data import pretrain as pretrain_data  # the data package, on demand

    if dataset is None:
        dataset = pretrain_data.build_pretrain_dataset(cfg.data, run_dir, int(cfg.train.seed))
    batch, accumulate, seed = (
        int(cfg.data.batch_size),
        int(cfg.optim.accumulate),
        int(cfg.train.seed),
    )
    spe = steps_per_epoch(len(dataset), batch, info.world_size, accumulate)
    batch_sampler = pretrain_data.build_pretrain_batch_sampler(
        cfg.data, dataset, spe * accumulate, info.rank, info.world_size, seed
    )
    loader, sampler = build_loader(
        dataset,
        batch,
        int(cfg.data.num_workers),
        info.rank,
        info.world_size,
        seed,
        pin_memory=info.device.type == "cuda",
        batch_sampler=batch_sampler,
    )
    total = spe * int(cfg.train.epochs)
    total = min(total, int(cfg.train.max_steps)) if cfg.train.max_steps else total
    return _Data(
        dataset=dataset, loader=loader, sampler=sampler, steps_per_epoch=spe, total_steps=total
    )


def _build_optimizer(
    cfg: DictConfig, info: DistInfo, method: PretrainMethod, data: _Data
) -> _Optim:
    """AdamW over the method's parameters, the gradient scaler (on for fp16 only), the lr / wd
    schedule and the autocast dtype ("auto": bf16 on CUDA, fp32 elsewhere).
    """
    amp = PRECISIONS.get(
        str(cfg.train.precision), torch.bfloat16 if info.device.type == "cuda" else None
    )
    return _Optim(
        optimizer=build_optimizer(method, cfg.optim),
        scaler=torch.amp.GradScaler(info.device.type, enabled=amp is torch.float16),
        schedule=Schedule.from_config(cfg.optim, data.steps_per_epoch, data.total_steps),
        amp_dtype=amp,
    )


def _resolve_lr(cfg: DictConfig, info: DistInfo) -> str:
    """Write the peak learning rate into `cfg.optim.lr` (saved in config.yaml); return a line
    for train.log that says where it came from.
    """
    batch = int(cfg.data.batch_size) * int(cfg.optim.accumulate) * info.world_size
    how = (
        "optim.lr, as given"
        if cfg.optim.lr is not None
        else f"optim.base_lr {float(cfg.optim.base_lr):g} x {batch} / {LR_REFERENCE_BATCH}"
        if cfg.optim.lr_scaling == "linear"
        else "optim.base_lr, lr_scaling=none"
    )
    lr = resolve_lr(cfg.optim, batch)
    with open_dict(cfg):
        cfg.optim.lr = lr
    return f"peak learning rate {lr:.4g} at a global batch of {batch} ({how})"


def _build_method(cfg: DictConfig, info: DistInfo, data: _Data, method: Any) -> PretrainMethod:
    """The method (built from `cfg.method` and `cfg.model` unless given) on the device, with
    activation checkpointing and `init_from` applied.
    """
    if method is None:
        spe, dataset = data.steps_per_epoch, data.dataset
        channels = getattr(dataset, "in_channels", None) or int(dataset[0]["views"][0].shape[0])
        context = TrainContext(
            steps_per_epoch=spe,
            total_steps=data.total_steps,
            in_channels=channels,
            crop_size=tuple(int(s) for s in cfg.data.crop_size),
            freeze_last_layer_steps=round(float(cfg.optim.freeze_last_layer_epochs) * spe),
        )
        method = METHODS.build(to_dict(cfg.method), backbone=to_dict(cfg.model), context=context)
    method = method.to(info.device)
    if cfg.train.activation_checkpointing:
        target = next(
            (m for m in (method, method.encoder) if hasattr(m, "set_grad_checkpointing")), None
        )
        if target is None:
            log.warning(
                "train.activation_checkpointing: %s and its encoder have no "
                "set_grad_checkpointing(); ignored",
                type(method).__name__,
            )
        else:
            target.set_grad_checkpointing(True)
    if cfg.init_from and not cfg.resume:
        ck.init_encoder_from(method, cfg.init_from)
    return method
