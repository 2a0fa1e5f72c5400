"""The pretraining loop. It knows a method only through `PretrainMethod`: `forward(batch, step)
-> StepOutput`, `on_optimizer_step(step)` and `.encoder`.

One optimizer step: schedule (lr, wd from the step) -> for each of `accumulate` micro-batches:
autocast forward, backward (DDP syncs on the last) -> all-reduce [loss, non-finite count] ->
non-finite guard -> unscale, drop frozen last-layer grads, clip -> AdamW step -> EMA hook ->
log, figures, checkpoint. A step is a pure function of (weights, optimizer state, step, RNG
states, data position), all of which the checkpoint holds, so a resumed run continues exactly.

A non-finite loss (or, outside fp16, non-finite gradients) on any rank skips the update on
every rank: the step still counts (schedules and data move on) but weights, optimizer state and
the EMA teacher stay as they were.

Example:
    >>> from medmim.config import load_config
    >>> from medmim.train.config import RunConfig
    >>> run_dir = pretrain(load_config("smart_demo", ["name=try1"], schema=RunConfig))
"""

from __future__ import annotations

import math
import signal
import time
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from medmim.train import checkpoint as ck
from medmim.train.distributed import all_reduce_sum, barrier, cleanup, init_distributed
from medmim.train.interrupt import RunInterrupted, StopRequest
from medmim.train.lock import RunLock
from medmim.train.monitor import METRICS_FILE, Monitor
from medmim.train.optim import apply_schedule, cancel_last_layer_grads, clip_gradients
from medmim.train.run_dir import CKPT_DIR, FIGURES_DIR
from medmim.train.sampler import start_epoch, to_device
from medmim.train.session import Session, open_session, resolve_config

if TYPE_CHECKING:
    from medmim.methods.base import PretrainMethod


class NonFiniteLossError(RuntimeError):
    """The loss or the gradients stayed non-finite for `train.max_nonfinite` steps in a row."""


def pretrain(cfg: Any, *, dataset: Any = None, method: PretrainMethod | None = None) -> Path:
    """Train (or resume) the run described by `cfg`; returns its run directory.

    Works the same in one process and under `torchrun` (one process per GPU / CPU slot).

    Args:
        cfg: a `RunConfig` (dataclass, dict or OmegaConf config).
        dataset: the pretraining dataset; default `medmim.data.pretrain.build_pretrain_dataset`.
        method: a built method; default `METHODS.build(cfg.method, backbone=cfg.model, ...)`.

    Raises:
        ConfigError: bad settings, an existing run without resume=true, an unwritable or full
            disk, weights that do not fit: all before the first step.
        NonFiniteLossError: after `train.max_nonfinite` non-finite steps in a row (last.ckpt
            then holds the last finite weights).
    """
    cfg = resolve_config(cfg)
    info = init_distributed(str(cfg.train.device), str(cfg.train.dist_backend))
    lock = RunLock(Path(cfg.output_dir) / cfg.name)  # one process per run directory
    try:
        s = open_session(cfg, info, dataset, method, lock)
        monitor = Monitor(s.run_dir, s.step, s.schedule.total_steps, info.is_main, bool(cfg.train.progress))
        try:
            trained = sum(p.numel() for p in s.method.parameters() if p.requires_grad)
            monitor.info(
                f"{s.run_dir}: {s.schedule.total_steps} steps ({s.steps_per_epoch}/epoch) x "
                f"{cfg.data.batch_size} scans x {cfg.optim.accumulate} accumulated x "
                f"{info.world_size} processes; {trained:,} trained parameters; {info.device}, "
                f"{s.amp_dtype or torch.float32}; {s.lr_note}"
            )
            with StopRequest() as stop:
                _train(s, monitor, stop)
        finally:
            monitor.close()
    finally:
        lock.release()
        cleanup(info)
    return s.run_dir


def _train(s: Session, monitor: Monitor, stop: StopRequest | None = None) -> None:
    total, accumulate = s.schedule.total_steps, int(s.cfg.optim.accumulate)
    s.model.train()
    while s.step < total:
        epoch, pos = divmod(s.step, s.steps_per_epoch)
        batches = start_epoch(s.loader, s.sampler, epoch, pos * accumulate,
                              int(s.cfg.train.seed), s.info.rank)
        end = min((epoch + 1) * s.steps_per_epoch, total)
        while s.step < end:
            t0 = time.perf_counter()
            scalars, visuals = _train_step(s, batches, s.step)
            s.step += 1
            _after_step(s, monitor, scalars, visuals, time.perf_counter() - t0)
            if stop is not None and _stop_requested(s, stop):
                path = s.save()
                monitor.info(f"stopped by {signal.Signals(stop.signum or 15).name} after step "
                             f"{s.step}; saved {path}")
                raise RunInterrupted(stop.signum or signal.SIGTERM, s.step, path)
    barrier(s.info)
    if s.info.is_main:
        from medmim.train.visualize import plot_loss_curves

        plot_loss_curves(s.run_dir / METRICS_FILE, s.run_dir / FIGURES_DIR / "loss_curves.png")
        monitor.info(f"done: {total} steps; weights in {s.run_dir / CKPT_DIR / ck.LAST}")


def _stop_requested(s: Session, stop: StopRequest) -> bool:
    """Whether any process got SIGINT/SIGTERM (under DDP agreed on at logging steps only, so
    that other steps stay free of an extra collective)."""
    if not s.info.distributed:
        return stop.signum is not None
    if s.step % int(s.cfg.train.log_every):
        return False
    flag = torch.tensor([float(stop.signum is not None)], device=s.info.device)
    if all_reduce_sum(flag, s.info).item() > 0:
        stop.signum = stop.signum or signal.SIGTERM
        return True
    return False


def _train_step(s: Session, batches: Any, step: int) -> tuple[dict[str, Any], Any]:
    """One optimizer step over `accumulate` micro-batches; returns (scalars, visuals)."""
    lr, wd, info = s.schedule.lr_at(step), s.schedule.wd_at(step), s.info
    apply_schedule(s.optimizer, lr, wd)
    accumulate = int(s.cfg.optim.accumulate)
    stats = torch.zeros(2, device=info.device)  # [sum of losses, non-finite micro-batches]
    logs: dict[str, Any] = {}
    for micro in range(accumulate):
        batch = to_device(next(batches), info.device)
        last = micro == accumulate - 1
        with s.model.no_sync() if info.distributed and not last else nullcontext():
            with torch.autocast(info.device.type, dtype=s.amp_dtype, enabled=s.amp_dtype is not None):
                out = s.model(batch, step)
            loss = out.loss.float()
            stats += torch.stack([loss.detach(), (~torch.isfinite(loss.detach())).float()])
            s.scaler.scale(loss / accumulate).backward()
        for key, value in out.logs.items():
            value = value.detach().float() if torch.is_tensor(value) else float(value)
            logs[key] = logs.get(key, 0.0) + value / accumulate
    loss_sum, bad_count = all_reduce_sum(stats, info).tolist()
    grad_norm = math.nan
    if bad_count == 0:
        s.scaler.unscale_(s.optimizer)
        if s.schedule.last_layer_frozen(step):
            cancel_last_layer_grads(s.method)
        grad_norm = float(clip_gradients(s.method.parameters(), float(s.cfg.optim.clip_grad),
                                         str(s.cfg.optim.clip_mode)))
    finite = math.isfinite(grad_norm)  # under fp16 an overflow is the scaler's business
    skip = bad_count > 0 or (not finite and not s.scaler.is_enabled())
    if not skip:
        s.scaler.step(s.optimizer)  # skips the update itself on an fp16 overflow
        s.scaler.update()
        if finite:
            s.method.on_optimizer_step(step)
    s.optimizer.zero_grad(set_to_none=True)
    s.nonfinite_row = s.nonfinite_row + 1 if skip else 0
    s.nonfinite_total += int(skip)
    scalars = {"epoch": step / s.steps_per_epoch, "loss": loss_sum / (accumulate * info.world_size),
               **logs, "lr": lr, "wd": wd, "grad_norm": grad_norm, "nonfinite/total": s.nonfinite_total}
    if s.scaler.is_enabled():
        scalars["amp/scale"] = s.scaler.get_scale()
    return scalars, out.visuals


def _after_step(s: Session, monitor: Monitor, scalars: dict[str, Any], visuals: Any, seconds: float) -> None:
    """Progress, logs, figures and checkpoints after step `s.step` (steps done)."""
    t, done = s.cfg.train, s.step
    samples = int(s.cfg.data.batch_size) * int(s.cfg.optim.accumulate) * s.info.world_size
    monitor.progress(done, scalars["loss"], samples / max(seconds, 1e-9))
    if s.nonfinite_row:
        monitor.info(f"step {done - 1}: non-finite loss or gradients (loss {scalars['loss']}, "
                     f"grad norm {scalars['grad_norm']}); step skipped ({s.nonfinite_row} "
                     f"in a row, {s.nonfinite_total} in total)")
    if done % t.log_every == 0 or done == s.schedule.total_steps or done == 1:
        scalars = {k: float(v) for k, v in scalars.items()}
        monitor.log_step(done, {**scalars, "time/step_s": seconds,
                                "speed/samples_per_s": samples / max(seconds, 1e-9)})
    if s.info.is_main and visuals and t.vis_every and (done - 1) % t.vis_every == 0:
        from medmim.train.visualize import save_visuals

        save_visuals(visuals, s.run_dir / FIGURES_DIR / f"step-{done:06d}.png", f"step {done}")
    stop = s.nonfinite_row >= int(t.max_nonfinite)
    keep = t.keep_every and done % t.keep_every == 0
    if done % t.ckpt_every == 0 or keep or done == s.schedule.total_steps or stop:
        path = s.save()
    if stop:
        raise NonFiniteLossError(
            f"the loss or its gradients were non-finite for {s.nonfinite_row} steps in a row "
            f"(up to step {done - 1}); training stopped. {path} holds the last finite weights. "
            "Lower optim.base_lr (or optim.lr), lengthen the warm-up (optim.warmup_epochs or optim.warmup_steps), "
            "set optim.clip_grad, or use "
            "train.precision=fp32, then continue with resume=true"
        )
