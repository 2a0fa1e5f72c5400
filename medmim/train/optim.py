"""AdamW with parameter groups, per-step schedules and gradient clipping.

The learning rate follows a linear warm-up then a cosine decay, the weight decay a cosine from
0.04 to 0.4 (DINO/iBOT/SMART), both pure functions of the optimizer step (medmim/schedules.py)
written into the parameter groups before every step.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from medmim.errors import ConfigError
from medmim.schedules import cosine, warmup_cosine


@dataclass(frozen=True)
class Schedule:
    """Step -> learning rate / weight decay of one run (`medmim.schedules` functions).

    Attributes:
        total_steps: optimizer steps of the run.
        warmup_steps: linear warm-up steps of the learning rate.
        lr, min_lr: peak and final learning rate.
        wd, wd_end: weight decay at the first and the last step.
    """

    total_steps: int
    warmup_steps: int
    lr: float
    min_lr: float
    wd: float
    wd_end: float

    @classmethod
    def from_config(cls, optim: Any, steps_per_epoch: int, total_steps: int) -> Schedule:
        """Build from an `OptimConfig` (epochs converted to steps; `warmup_steps`, when set,
        overrides `warmup_epochs`). `optim.lr` should be resolved first (`resolve_lr`); when
        it is null, `base_lr` scaled to a batch of 1 is used.
        """
        warmup_steps = getattr(optim, "warmup_steps", None)
        if warmup_steps is None:
            warmup_steps = round(float(optim.warmup_epochs) * steps_per_epoch)
        return cls(
            total_steps=total_steps,
            warmup_steps=int(warmup_steps),
            lr=resolve_lr(optim, 1) if optim.lr is None else float(optim.lr),
            min_lr=float(optim.min_lr),
            wd=float(optim.weight_decay),
            wd_end=float(optim.weight_decay_end),
        )

    def lr_at(self, step: int) -> float:
        """Learning rate at `step`: linear 0 -> lr over warm-up, then cosine -> min_lr."""
        return warmup_cosine(step, self.total_steps, self.lr, self.min_lr, self.warmup_steps)

    def wd_at(self, step: int) -> float:
        """Weight decay at `step`: cosine wd -> wd_end over the run."""
        return cosine(step, self.total_steps, self.wd, self.wd_end)


#: `optim.lr_scaling` values.
LR_SCALINGS = ("linear", "none")
#: the reference batch of the linear scaling rule.
LR_REFERENCE_BATCH = 256


def resolve_lr(optim: Any, global_batch: int) -> float:
    """The run's peak learning rate from an `OptimConfig` and the global batch.

    `optim.lr`, when set, is used as it is; otherwise `base_lr * global_batch / 256` with
    `lr_scaling="linear"` (DINO/iBOT: 5e-4 x 8 / 256 = 1.5625e-5 at a batch of 8) or `base_lr`
    with `lr_scaling="none"`.

    Args:
        optim: the `optim` section.
        global_batch: samples per optimizer step over all processes (`data.batch_size *
            optim.accumulate * world_size`).

    Raises:
        ConfigError: an unknown `lr_scaling`, a negative rate or a batch below 1.
    """
    if getattr(optim, "lr", None) is not None:
        lr = float(optim.lr)
    else:
        scaling = str(optim.lr_scaling)
        if scaling not in LR_SCALINGS:
            raise ConfigError(
                f"optim.lr_scaling='{scaling}' is unknown; use 'linear' (base_lr x batch / 256) "
                "or 'none' (base_lr is the learning rate itself)"
            )
        if global_batch < 1:
            raise ConfigError(f"the global batch must be >= 1, got {global_batch}")
        lr = float(optim.base_lr) * (
            global_batch / LR_REFERENCE_BATCH if scaling == "linear" else 1.0
        )
    if not lr >= 0:
        raise ConfigError(f"the learning rate must be >= 0, got {lr} (optim.base_lr / optim.lr)")
    return lr


def param_groups(module: nn.Module, no_decay_keys: Iterable[str] = ()) -> list[dict[str, object]]:
    """Split the trainable parameters into a decayed and a non-decayed group.

    No weight decay for: parameters with `ndim <= 1` (norm scales, biases), names ending in
    `.bias`, names containing one of `no_decay_keys` (cls/mask tokens, position embeddings) and
    names listed by `module.no_weight_decay()` if the module defines it (timm convention).
    Frozen parameters (`requires_grad=False`, e.g. an EMA teacher) are left out.

    Returns:
        Two groups with an extra key `apply_wd` that `apply_schedule` reads, and `names`.
    """
    keys = tuple(no_decay_keys)
    extra = set(module.no_weight_decay()) if hasattr(module, "no_weight_decay") else set()
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    names: dict[bool, list[str]] = {True: [], False: []}
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        skip = (
            p.ndim <= 1 or name.endswith(".bias") or name in extra or any(k in name for k in keys)
        )
        (no_decay if skip else decay).append(p)
        names[not skip].append(name)
    return [
        {"params": decay, "apply_wd": True, "names": names[True]},
        {"params": no_decay, "apply_wd": False, "weight_decay": 0.0, "names": names[False]},
    ]


def build_optimizer(module: nn.Module, optim: Any) -> torch.optim.AdamW:
    """AdamW over `param_groups(module)` from an `OptimConfig`; lr and wd are set per step
    (`apply_schedule`), so the optimizer starts at lr 0.

    On CUDA the fused kernel (one launch for all parameters, the step counter on the device);
    elsewhere PyTorch's default (foreach where supported), which keeps CPU runs bit-identical
    across versions of this code.
    """
    groups = [g for g in param_groups(module, optim.no_decay_keys) if g["params"]]
    if not groups:
        raise ConfigError("the method has no trainable parameters (all requires_grad=False)")
    betas = tuple(float(b) for b in optim.betas)
    if len(betas) != 2:
        raise ConfigError(f"optim.betas must be two numbers, got {list(betas)}")
    on_cuda = all(p.is_cuda for g in groups for p in g["params"])
    return torch.optim.AdamW(
        groups,
        lr=0.0,
        betas=betas,  # type: ignore[arg-type]
        fused=True if on_cuda else None,
    )


def apply_schedule(optimizer: torch.optim.Optimizer, lr: float, wd: float) -> None:
    """Write this step's learning rate (all groups) and weight decay (decayed group only)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * float(group.get("lr_scale", 1.0))
        group["weight_decay"] = wd if group.get("apply_wd", True) else 0.0


def clip_gradients(params: Iterable[nn.Parameter], max_norm: float, mode: str) -> torch.Tensor:
    """Clip gradients and return the global gradient norm before clipping (for logging).

    Args:
        params: the parameters.
        max_norm: threshold; 0 or less only measures the norm.
        mode: "global" (`clip_grad_norm_`) or "per_param" (each gradient's own norm is clipped
            to `max_norm`, as DINO/iBOT/SMART's `clip_gradients`).

    Returns:
        0-d tensor, the L2 norm of all gradients together (inf/nan when one is non-finite).
    """
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    norms = torch._foreach_norm(grads)
    total = torch.linalg.vector_norm(torch.stack([n.float() for n in norms]))
    if max_norm <= 0:
        return total
    if mode == "global":
        torch._foreach_mul_(grads, torch.clamp(max_norm / (total + 1e-6), max=1.0).to(grads[0]))
    elif mode == "per_param":
        scales = [torch.clamp(max_norm / (n + 1e-6), max=1.0) for n in norms]
        torch._foreach_mul_(grads, scales)
    else:
        raise ConfigError(f"optim.clip_mode: '{mode}' is not 'per_param' or 'global'")
    return total
