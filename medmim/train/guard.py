"""The non-finite guard: non-finite steps are counted on the device and undone at check steps.

A step whose loss (or, outside fp16, whose gradient norm) is NaN or infinite must not leave its
mark on the weights. Deciding that before every update would read a value back from the GPU at
every step, a host synchronisation that stalls the launch queue. The guard therefore:

1. counts non-finite steps on the device (`record`, no synchronisation) while updates are
   applied as usual;
2. at a *check step* (a logging step, a checkpoint step, the last step, a stop request) reads
   the counts once, before that step's update (`check`):
   - all steps since the last check finite: the state now (weights, buffers, EMA teacher,
     optimizer moments) gave a finite loss, so it becomes the *snapshot*, and the update is
     applied;
   - any non-finite step: the snapshot is restored and the update skipped. The steps since the
     snapshot are lost (data and schedules still move on), and they count as rolled back.

The snapshot is only ever the state *before* an update whose loss was finite, i.e. weights
that were seen to give a finite loss. A learning rate so large that one update blows the
weights up (finite, 1e5) is therefore undone as well, not kept as "the last finite weights":
`train.max_nonfinite` steps in a row rolled back stop the run with the snapshot saved, so that
a resume with a lower learning rate starts from usable weights.

With `train.log_every=1` every step is a check step: exact per-step skipping, at the price of
one synchronisation per step. The snapshot costs one copy of the method state and the
optimizer moments in device memory.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class NonFiniteGuard:
    """Device-side counters and the last verified state of one training session.

    Args:
        method: the bare method (its state_dict holds the student, teacher and buffers).
        optimizer: the optimizer whose state is saved with the weights.
        device: where the counters live.
    """

    def __init__(
        self, method: nn.Module, optimizer: torch.optim.Optimizer, device: torch.device
    ) -> None:
        self.method, self.optimizer = method, optimizer
        self.pending = torch.zeros((), device=device)  # non-finite steps since the last check
        self.snapshot: dict[str, Any] | None = None
        self.snapshot_step = -1  # the step whose pre-update state the snapshot holds
        self.last_clean = True  # whether the last check found only finite steps

    def record(self, bad: torch.Tensor) -> None:
        """Add one step's non-finite flag (a 0-d tensor, 1 = non-finite); no synchronisation."""
        self.pending.add_(bad)

    def take(self, step: int) -> None:
        """Make the current state (before step `step`'s update) the snapshot."""
        tensors = self._state_tensors()
        if self.snapshot is not None and _same_layout(self.snapshot["tensors"], tensors):
            torch._foreach_copy_(self.snapshot["tensors"], tensors)
        else:
            self.snapshot = {"tensors": [t.detach().clone() for t in tensors]}
        self.snapshot["optimizer"] = self._optimizer_state()
        self.snapshot_step = step

    @torch.no_grad()
    def restore(self) -> int:
        """Put the snapshot back; returns its step (-1 and no change when there is none)."""
        if self.snapshot is None:
            return -1
        torch._foreach_copy_(self._state_tensors(), self.snapshot["tensors"])
        saved = self.snapshot["optimizer"]
        for param in list(self.optimizer.state):
            if param not in saved:
                del self.optimizer.state[param]
        for param, state in saved.items():
            current = self.optimizer.state[param]
            for key, value in state.items():
                if torch.is_tensor(current.get(key)) and current[key].shape == value.shape:
                    current[key].copy_(value)
                else:
                    current[key] = value.clone() if torch.is_tensor(value) else value
        return self.snapshot_step

    def _state_tensors(self) -> list[torch.Tensor]:
        return [t for t in self.method.state_dict(keep_vars=True).values() if torch.is_tensor(t)]

    def _optimizer_state(self) -> dict[Any, dict[str, Any]]:
        old = (self.snapshot or {}).get("optimizer", {})
        out: dict[Any, dict[str, Any]] = {}
        for param, state in self.optimizer.state.items():
            kept = old.get(param, {})
            out[param] = {}
            for key, value in state.items():
                if torch.is_tensor(value):
                    buf = kept.get(key)
                    if (
                        torch.is_tensor(buf)
                        and buf.shape == value.shape
                        and buf.dtype == value.dtype
                    ):
                        out[param][key] = buf.copy_(value)
                    else:
                        out[param][key] = value.detach().clone()
                else:
                    out[param][key] = value
        return out


def _same_layout(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(x.shape == y.shape and x.dtype == y.dtype for x, y in zip(a, b))
