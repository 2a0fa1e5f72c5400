"""Schedules as pure functions of the step (STYLE.md rule 4), the only place they are written.

Used by the loop's optimizer schedule (`medmim.train.optim.Schedule`: learning rate, weight
decay), the EMA teacher's momentum (`ema_momentum`, read by the self-distillation methods) and
the teacher temperature of `medmim.losses.distill.DistillationLoss` (`epoch_warmup`).
"""

from __future__ import annotations

import math


def cosine(step: int, total: int, start: float, end: float) -> float:
    """Cosine from `start` (step 0) to `end` (step `total`), constant `end` afterwards."""
    if total <= 0 or step >= total:
        return float(end)
    t = max(step, 0) / total
    return float(end + 0.5 * (start - end) * (1.0 + math.cos(math.pi * t)))


def linear(step: int, total: int, start: float, end: float) -> float:
    """Linear from `start` (step 0) to `end` (step `total`), constant `end` afterwards."""
    if total <= 0 or step >= total:
        return float(end)
    return float(start + (end - start) * max(step, 0) / total)


def warmup_cosine(
    step: int, total: int, peak: float, final: float, warmup: int, warmup_start: float = 0.0
) -> float:
    """Linear warm-up from `warmup_start` to `peak` over `warmup` steps, then cosine to `final`.

    The learning-rate schedule of DINO/iBOT/SMART (per iteration, not per epoch).
    """
    if step < warmup:
        return linear(step, warmup, warmup_start, peak)
    return cosine(step - warmup, total - warmup, peak, final)


def epoch_warmup(
    step: int, warmup_steps: int, steps_per_epoch: int, start: float, end: float, delay: int = 0
) -> float:
    """`start` -> `end` in equal steps, one value per epoch, then `end`: the teacher-temperature
    warm-up of DINO/iBOT/SMIT (`np.linspace(0.04, 0.07, 30)[epoch]` for the first 30 epochs).

    The E = ceil(warmup_steps / steps_per_epoch) epochs of the warm-up take the values of
    `np.linspace(start, end, E)`, constant within an epoch, so the last warm-up epoch already
    has `end`; from step `warmup_steps` on the value is `end`. With `steps_per_epoch=1` it is
    the same per step. The first `delay` steps (before the warm-up) stay at `start`.

    Example:
        >>> [round(epoch_warmup(s, 30, 10, 0.04, 0.07), 3) for s in (0, 9, 10, 20, 30)]
        [0.04, 0.04, 0.055, 0.07, 0.07]
    """
    step -= delay
    if step < 0:
        return float(start)
    if step >= warmup_steps:
        return float(end)
    epochs = -(-warmup_steps // steps_per_epoch)
    if epochs <= 1:
        return float(start)
    return float(start + (end - start) * (step // steps_per_epoch) / (epochs - 1))


def ema_momentum(step: int, total_steps: int, start: float = 0.996, end: float = 1.0) -> float:
    """EMA momentum lambda at optimizer step `step` (0-based): cosine `start` -> `end`.

    Reaches exactly `end` at the last step (`total_steps - 1`) and stays there; monotone
    (SMIT section 2, SMART section 3.4: 0.996 -> 1 per iteration).
    """
    if total_steps <= 1:
        return float(end)
    return cosine(step, total_steps - 1, start, end)
