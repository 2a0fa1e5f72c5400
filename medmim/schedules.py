"""Schedules as pure functions of the step (STYLE.md rule 4); used by the loop and by methods."""

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


def warmup_constant(step: int, warmup: int, start: float, end: float, delay: int = 0) -> float:
    """`start` for `delay` steps, then linear to `end` over `warmup` steps, then `end`.

    The teacher-temperature schedule of DINO/iBOT (0.04 -> 0.07 over 30 epochs).
    """
    if step < delay:
        return float(start)
    return linear(step - delay, warmup, start, end)
