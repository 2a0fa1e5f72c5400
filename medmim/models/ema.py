"""The EMA teacher of the self-distillation methods (DINO, iBOT, SMIT, SMART).

theta_t <- lambda theta_t + (1 - lambda) theta_s after every optimizer step, with lambda on a
cosine schedule 0.996 -> 1 per iteration (SMIT section 2, SMART section 3.4;
`medmim.schedules.ema_momentum`).

Unlike the public SMIT code (independent random teacher init, lambda stuck at ~0.996 by an
indexing bug, teacher in train mode with drop-path 0.3), the teacher here is a deep copy of the
student (equal at step 0), never receives gradients, stays in eval mode and has drop-path off.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn

#: attributes that hold a stochastic-depth probability (MONAI / timm DropPath use `drop_prob`).
DROP_PATH_ATTRS = ("drop_prob", "drop_path_prob", "drop_path_rate")


def disable_drop_path(module: nn.Module) -> int:
    """Set every stochastic-depth probability inside `module` to 0; return how many were set.

    Mechanism: for every submodule, each float attribute named in DROP_PATH_ATTRS (MONAI's and
    timm's `DropPath.drop_prob`, hand-written blocks' `drop_path_prob`/`drop_path_rate`) and a
    float attribute `drop_path` (blocks that call a functional drop-path) is set to 0.0. DropPath
    modules are no-ops in eval mode anyway; this makes the teacher deterministic even if someone
    calls `.train()` on its inner module.
    """
    count = 0
    for sub in module.modules():
        for name in (*DROP_PATH_ATTRS, "drop_path"):
            value = getattr(sub, name, None)
            if isinstance(value, float) and not isinstance(value, bool):
                setattr(sub, name, 0.0)
                count += 1
    return count


class EMATeacher(nn.Module):
    """A frozen, eval-mode copy of the student, moved toward it by `update`.

    Attribute access falls through to the wrapped copy, so `teacher.forward_features(x, mask)`
    or `teacher["head"]` work like on the student. Its state_dict keys are `module.<student key>`.

    Args:
        student: the module to copy (backbone, or a ModuleDict of backbone + heads). Pass the
            bare module, not a DistributedDataParallel wrapper.

    Example:
        >>> student = nn.Linear(4, 4)
        >>> teacher = EMATeacher(student)
        >>> from medmim.schedules import ema_momentum
        >>> teacher.update(student, ema_momentum(step=0, total_steps=1000))
    """

    def __init__(self, student: nn.Module) -> None:
        super().__init__()
        self.module = copy.deepcopy(student)
        self.module.requires_grad_(False)
        disable_drop_path(self.module)
        self.train(False)

    def train(self, mode: bool = True) -> EMATeacher:
        """Ignore `mode`: the teacher always stays in eval mode."""
        return super().train(False)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Call the wrapped module."""
        return self.module(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            inner = self.__dict__.get("_modules", {}).get("module")
            if inner is None:
                raise
            return getattr(inner, name)

    def __getitem__(self, key: Any) -> Any:
        return self.module[key]  # type: ignore[index]

    @torch.no_grad()
    def update(self, student: nn.Module, momentum: float) -> None:
        """theta_t <- momentum theta_t + (1 - momentum) theta_s; copy the student's buffers.

        Parameters and buffers are matched by name (names present in both; a name missing from
        either side is skipped, e.g. a student-only predictor).
        """
        s_params = dict(student.named_parameters())
        pairs = [(p, s_params[n]) for n, p in self.module.named_parameters() if n in s_params]
        if pairs:
            t_list = [t for t, _ in pairs]
            s_list = [s.detach().to(t.dtype) for t, s in pairs]
            torch._foreach_mul_(t_list, momentum)
            torch._foreach_add_(t_list, s_list, alpha=1.0 - momentum)
        s_buffers = dict(student.named_buffers())
        for name, buf in self.module.named_buffers():
            if name in s_buffers and isinstance(buf, Tensor):
                buf.copy_(s_buffers[name])
