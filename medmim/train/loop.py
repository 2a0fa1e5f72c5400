"""The pretraining loop. It knows a method only through `PretrainMethod`: `forward(batch, step)
-> StepOutput`, `frozen_parameters(step)`, `on_optimizer_step(step)` and `.encoder`.

One optimizer step: schedule (lr, wd from the step) -> for each of `accumulate` micro-batches:
autocast forward, backward (DDP syncs on the last) -> all-reduce [loss, non-finite count] ->
non-finite guard -> unscale, drop the gradients of the method's frozen parameters, clip -> AdamW
step -> EMA hook -> log, figures, checkpoint. A step is a pure function of (weights, optimizer
state, step, RNG states, data position), all of which the checkpoint holds, so a resumed run
continues exactly.

A non-finite loss (or, outside fp16, non-finite gradients) on any rank is counted on the device
and found at the next check step (a logging or checkpoint step), which rolls every rank back to
the last state seen to give a finite loss: weights, optimizer state, EMA teacher and buffers
(`medmim.train.guard`). The steps in between still count (schedules and data move on). Outside
check steps the loop reads nothing back from the device, so the GPU queue never stalls.

Example:
    >>> from medmim.config import load_config
    >>> from medmim.train.config import RunConfig
    >>> run_dir = pretrain(load_config("smart_demo", ["name=try1"], schema=RunConfig))
"""

from __future__ import annotations

import signal
import time
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from medmim.train import checkpoint as ck
from medmim.train.distributed import all_reduce_sum, barrier, cleanup, init_distributed
from medmim.train.guard import NonFiniteGuard
from medmim.train.interrupt import RunInterrupted, StopRequest
from medmim.train.lock import RunLock
from medmim.train.monitor import METRICS_FILE, Monitor
from medmim.train.optim import apply_schedule, clip_gradients
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
        NonFiniteLossError: after `train.max_nonfinite` roll-backs in a row (last.ckpt then
            holds the last weights seen to give a finite loss).
    """
    cfg = resolve_config(cfg)
    info = init_distributed(str(cfg.train.device), str(cfg.train.dist_backend))
    lock = RunLock(Path(cfg.output_dir) / cfg.name)  # one process per run directory
    try:
        s = open_session(cfg, info, dataset, method, lock)
        monitor = Monitor(
            s.run_dir, s.step, s.schedule.total_steps, info.is_main, bool(cfg.train.progress)
        )
        try:
            trained = sum(p.numel() for p in s.method.parameters() if p.requires_grad)
            monitor.info(
                f"{s.run_dir}: {s.schedule.total_steps} steps ({s.steps_per_epoch}/epoch) x "
                f"{cfg.data.batch_size} scans x {cfg.optim.accumulate} accumulated x "
                f"{info.world_size} processes; {trained:,} trained parameters; {info.device}, "
                f"{s.amp_dtype or torch.float32}; {s.lr_note}"
            )
            s.guard = NonFiniteGuard(s.method, s.optimizer, info.device)
            s.guard.take(s.step)  # a verified state to roll back to before the first check
            s.last_check = s.step
            with StopRequest() as stop:
                _train(s, monitor, stop)
        finally:
            monitor.close()
    finally:
        lock.release()
        cleanup(info)
    return s.run_dir


def _train(s: Session, monitor: Monitor, stop: StopRequest | None = None) -> None:
    total = s.schedule.total_steps
    s.model.train()
    while s.step < total:
        epoch, pos = divmod(s.step, s.steps_per_epoch)
        batches = start_epoch(
            s.loader,
            s.sampler,
            epoch,
            pos * int(s.cfg.optim.accumulate),
            int(s.cfg.train.seed),
            s.info.rank,
        )
        end = min((epoch + 1) * s.steps_per_epoch, total)
        window_start = time.perf_counter()
        while s.step < end:
            check = _is_check(s, s.step + 1)
            scalars, visuals = _train_step(s, batches, s.step, check)
            s.step += 1
            monitor.progress(s.step)
            if check:
                _after_check(s, monitor, scalars, time.perf_counter() - window_start)
                window_start = time.perf_counter()
            _save_visuals(s, visuals)
            if stop is not None and _stop_requested(s, stop):
                if not check:
                    _settle(s, monitor)
                path = s.save()
                monitor.info(
                    f"stopped by {signal.Signals(stop.signum or 15).name} after step "
                    f"{s.step}; saved {path}"
                )
                raise RunInterrupted(stop.signum or signal.SIGTERM, s.step, path)
    barrier(s.info)
    if s.info.is_main:
        from medmim.train.visualize import plot_loss_curves

        plot_loss_curves(s.run_dir / METRICS_FILE, s.run_dir / FIGURES_DIR / "loss_curves.png")
        monitor.info(f"done: {total} steps; weights in {s.run_dir / CKPT_DIR / ck.LAST}")


def _is_check(s: Session, done: int) -> bool:
    """Whether the step that makes `done` steps reads its counters back (a host
    synchronisation): logging, checkpoint and last steps, the same on every rank.
    """
    t = s.cfg.train
    return (
        done == 1
        or done % int(t.log_every) == 0
        or done % int(t.ckpt_every) == 0
        or done == s.schedule.total_steps
        or bool(t.keep_every and done % int(t.keep_every) == 0)
    )


def _settle(s: Session, monitor: Monitor) -> None:
    """Before a save after a step that was not a check step (a stop request in one process):
    read the guard's count of the steps since the last check, and roll back if any was
    non-finite, so that a checkpoint never holds weights no check has seen.
    """
    n_bad = int(all_reduce_sum(s.guard.pending.clone(), s.info).item())
    s.guard.pending.zero_()
    if n_bad:
        _check(s, s.step, n_bad)
        monitor.info(
            f"non-finite loss or gradients in the last {s.step - s.last_check} steps: rolled "
            f"back to the state before step {s.rolled_back_to}"
        )


def _stop_requested(s: Session, stop: StopRequest) -> bool:
    """Whether any process got SIGINT/SIGTERM (under DDP agreed on at logging steps only, so
    that other steps stay free of an extra collective).
    """
    if not s.info.distributed:
        return stop.signum is not None
    if s.step % int(s.cfg.train.log_every):
        return False
    flag = torch.tensor([float(stop.signum is not None)], device=s.info.device)
    if all_reduce_sum(flag, s.info).item() > 0:
        stop.signum = stop.signum or signal.SIGTERM
        return True
    return False


def _train_step(s: Session, batches: Any, step: int, check: bool) -> tuple[dict[str, Any], Any]:
    """One optimizer step over `accumulate` micro-batches; returns (scalars, visuals).

    Outside check steps nothing is read back from the device (no `.item()`, no branch on a
    tensor): the non-finite flag goes to the guard's device counter. At a check step the
    counters are all-reduced and read once, before the update (`medmim.train.guard`).
    """
    lr, wd, info = s.schedule.lr_at(step), s.schedule.wd_at(step), s.info
    apply_schedule(s.optimizer, lr, wd)
    accumulate = int(s.cfg.optim.accumulate)
    loss_sum = torch.zeros((), device=info.device)
    logs: dict[str, Any] = {}
    for micro in range(accumulate):
        batch = to_device(next(batches), info.device)
        last = micro == accumulate - 1
        with s.model.no_sync() if info.distributed and not last else nullcontext():
            with torch.autocast(
                info.device.type, dtype=s.amp_dtype, enabled=s.amp_dtype is not None
            ):
                out = s.model(batch, step)
            loss = out.loss.float()
            loss_sum += loss.detach()
            s.scaler.scale(loss / accumulate).backward()
        for key, value in out.logs.items():
            value = value.detach().float() if torch.is_tensor(value) else float(value)
            logs[key] = logs.get(key, 0.0) + value / accumulate
    s.scaler.unscale_(s.optimizer)
    for p in s.method.frozen_parameters(step):
        p.grad = None  # AdamW skips it: no update, no weight decay
    grad_norm = clip_gradients(
        s.method.parameters(), float(s.cfg.optim.clip_grad), str(s.cfg.optim.clip_mode)
    ).to(info.device)
    bad = ~torch.isfinite(loss_sum)
    if not s.scaler.is_enabled():  # under fp16 an overflow is the scaler's business
        bad = bad | ~torch.isfinite(grad_norm)
    update = True
    if check:
        counts = all_reduce_sum(torch.stack([s.guard.pending + bad.float(), loss_sum]), info)
        s.guard.pending.zero_()
        n_bad, loss_total = counts.tolist()
        update = _check(s, step, int(n_bad))
        logs = {k: float(v) for k, v in logs.items()}
        scalars = {
            "epoch": step / s.steps_per_epoch,
            "loss": loss_total / (accumulate * info.world_size),
            **logs,
            "lr": lr,
            "wd": wd,
            "grad_norm": float(grad_norm),
            "nonfinite/total": s.nonfinite_total,
        }
    else:
        s.guard.record(bad.float())
        scalars = {}
    if update:
        s.scaler.step(s.optimizer)  # skips the update itself on an fp16 overflow
        s.method.on_optimizer_step(step)
    s.scaler.update()  # also after a roll-back: the gradients were unscaled, reset the scaler
    s.optimizer.zero_grad(set_to_none=True)
    if check and s.scaler.is_enabled():
        scalars["amp/scale"] = s.scaler.get_scale()
    return scalars, out.visuals


def _check(s: Session, step: int, n_bad: int) -> bool:
    """The guard's decision at check step `step` given the non-finite steps since the last
    check (this one included): True = apply this step's update.
    """
    if n_bad == 0:
        if s.guard.last_clean:
            s.nonfinite_row = 0  # two clean checks in a row: the run makes progress
        s.guard.last_clean = True
        s.guard.take(step)
        return True
    s.nonfinite_total += n_bad
    s.nonfinite_row += 1
    s.guard.last_clean = False
    s.rolled_back_to = s.guard.restore()
    return False


def _after_check(s: Session, monitor: Monitor, scalars: dict[str, Any], seconds: float) -> None:
    """Logs and checkpoints after check step `s.step` (steps done); the non-finite stop."""
    t, done = s.cfg.train, s.step
    steps = done - s.last_check
    s.last_check = done
    samples = int(s.cfg.data.batch_size) * int(s.cfg.optim.accumulate) * s.info.world_size * steps
    monitor.postfix(scalars["loss"], samples / max(seconds, 1e-9))
    if not s.guard.last_clean:
        back = (
            f"rolled back to the state before step {s.rolled_back_to}"
            if s.rolled_back_to >= 0
            else "update skipped"
        )
        monitor.info(
            f"step {done - 1}: non-finite loss or gradients since step {done - steps} "
            f"(loss {scalars['loss']}, grad norm {scalars['grad_norm']}); {back} "
            f"({s.nonfinite_row} roll-back(s) in a row, {s.nonfinite_total} non-finite "
            "steps in total)"
        )
    if done % t.log_every == 0 or done == s.schedule.total_steps or done == 1:
        monitor.log_step(
            done,
            {
                **{k: float(v) for k, v in scalars.items()},
                "time/step_s": seconds / max(steps, 1),
                "speed/samples_per_s": samples / max(seconds, 1e-9),
            },
        )
    stop = s.nonfinite_row >= int(t.max_nonfinite)
    keep = t.keep_every and done % t.keep_every == 0
    if done % t.ckpt_every == 0 or keep or done == s.schedule.total_steps or stop:
        path = s.save()
    if stop:
        at = (
            f"the state before step {s.rolled_back_to}"
            if s.rolled_back_to >= 0
            else "the initial weights"
        )
        raise NonFiniteLossError(
            f"the loss or its gradients turned non-finite {s.nonfinite_row} times in a row "
            f"(last at step {done - 1}) and each time the run was rolled back; training "
            f"stopped. {path} holds {at}, the last weights seen to give a finite loss. "
            "Lower optim.base_lr (or optim.lr), lengthen the warm-up (optim.warmup_epochs or "
            "optim.warmup_steps), set optim.clip_grad, or use train.precision=fp32, then "
            f"continue with: medmim pretrain --resume {s.run_dir} optim.base_lr=... (or "
            "optim.lr=...)"
        )


def _save_visuals(s: Session, visuals: Any) -> None:
    t = s.cfg.train
    if s.info.is_main and visuals and t.vis_every and (s.step - 1) % t.vis_every == 0:
        from medmim.train.visualize import save_visuals

        save_visuals(visuals, s.run_dir / FIGURES_DIR / f"step-{s.step:06d}.png", f"step {s.step}")
