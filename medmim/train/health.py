"""Distillation health: is each self-distillation family learning, stuck at uniform, or collapsed?

A DINO/iBOT-style distillation is a cross-entropy between the teacher's centred, sharpened
targets and the student's prediction over K prototypes. Its methods log, per token family `f`
("patch", "cls", "pooled", ...), every key optional (older runs lack some):

- `teacher/entropy/<f>`: the teacher targets' entropy / ln K (1 = uniform, 0 = one-hot);
- `distill/ce/<f>`: the unweighted distillation CE of that family;
- `teacher/cos_batch/<f>`: mean cosine of the teacher's outputs across different scans of a
  batch (near 1: every scan gets the same output);
- `teacher/cos_views/<f>`: mean cosine across the two views of one scan (global families);
- `distill/ln_k`: ln K, the CE of uniform targets and a uniform student.

A family is **uniform** when its entropy is above `UNIFORM` (its CE sits at ln K and teaches
nothing), **collapsed** when its entropy is below `ONE_HOT`, or when the teacher gives every scan
the same output (`cos_batch` above `SAME_OUTPUT`) while its targets are not uniform, and
**learning** otherwise (entropy falling, two views of a scan closer than two scans).

`HealthCheck` follows a run row by row (the trainer's monitor feeds it each logged row and
writes its messages to train.log as warnings); `summarize` reads a finished run's rows for
`medmim report` and the demo's report.
"""

from __future__ import annotations

import json
import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: entropy / ln K above this: near-uniform targets.
UNIFORM = 0.95
#: entropy / ln K below this: one-hot targets.
ONE_HOT = 0.05
#: teacher cosine across the scans of a batch above this: the same output for every scan.
SAME_OUTPUT = 0.99
#: distillation CE above this multiple of ln K: the student does not match even near-uniform
#: targets.
CE_MARGIN = 1.02
#: logged rows averaged for the CE-above-ln-K check.
CE_ROWS = 10
#: a state must last this fraction of the run's steps before it is reported.
RUN_FRACTION = 0.2

ENTROPY, CE, COS_BATCH, COS_VIEWS, LN_K = (
    "teacher/entropy/",
    "distill/ce/",
    "teacher/cos_batch/",
    "teacher/cos_views/",
    "distill/ln_k",
)
PREFIXES = (ENTROPY, CE, COS_BATCH, COS_VIEWS)

UNIFORM_ADVICE = (
    "Check the learning-rate scaling (optim.lr_scaling=linear, optim.base_lr: a "
    "too-high lr at a small batch collapses the teacher to the same output for every scan), "
    "views that share a base crop (data.views=shared), a sharper or constant teacher temperature "
    "(method.teacher_temp, method.warmup_teacher_temp), the EMA momentum (method.momentum_start), "
    "or method.centering=sinkhorn."
)
COLLAPSE_ADVICE = (
    "Raise the teacher temperature (method.teacher_temp, method.warmup_teacher_temp), use "
    "method.centering=sinkhorn, or spread the outputs with method.koleo_weight."
)
CE_ADVICE = (
    "Check the learning rate (optim.base_lr, optim.lr_scaling=linear) and the EMA momentum "
    "(method.momentum_start): the student cannot follow a teacher that moves this fast."
)


def families(keys: Iterable[str]) -> list[str]:
    """The token families named by distillation keys, in order of first appearance."""
    found = [k[len(p) :] for k in keys for p in PREFIXES if k.startswith(p)]
    return list(dict.fromkeys(found))


def is_collapsed(entropy: float | None, cos_batch: float | None) -> bool:
    """One-hot targets, or the same (not uniform) output for every scan of a batch."""
    if entropy is None:
        return False
    return entropy < ONE_HOT or (
        cos_batch is not None and cos_batch > SAME_OUTPUT and entropy <= UNIFORM
    )


def verdict(entropy: float | None, cos_batch: float | None) -> str:
    """The health verdict: "uniform", "collapsed" or "learning" ("unknown" without an entropy)."""
    if entropy is None:
        return "unknown"
    if entropy > UNIFORM:
        return "uniform"
    return "collapsed" if is_collapsed(entropy, cos_batch) else "learning"


def _value(row: Mapping[str, Any], key: str) -> float | None:
    value = row.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


class HealthCheck:
    """Follows one run's logged rows and says, once per family and kind, what went wrong.

    A family is reported as uniform or collapsed when consecutive logged rows in that state
    cover at least `RUN_FRACTION` of the run's steps (for uniform, counted only after the first
    `RUN_FRACTION`: every DINO-style run starts uniform, and a learning run leaves it there); its
    CE is reported when its mean over the last `CE_ROWS` rows logged past that fraction is above
    `CE_MARGIN` * ln K.

    Args:
        total_steps: steps of the whole run.
        start_step: the step the session starts from (0, or the resumed step).

    Example:
        >>> check = HealthCheck(total_steps=100)
        >>> check.update(20, {"teacher/entropy/patch": 0.999})
        []
        >>> len(check.update(40, {"teacher/entropy/patch": 0.999}))
        1
    """

    def __init__(self, total_steps: int, start_step: int = 0) -> None:
        self.total_steps = total_steps
        self.span = max(1.0, RUN_FRACTION * total_steps)
        self._previous = start_step
        self._since: dict[tuple[str, str], int] = {}
        self._warned: set[tuple[str, str]] = set()
        self._ce: dict[str, deque[tuple[float, float]]] = {}

    def update(self, step: int, scalars: Mapping[str, Any]) -> list[str]:
        """Take the row logged after `step` steps; return the warnings it completes."""
        messages: list[str] = []
        for family in families(scalars):
            entropy = _value(scalars, ENTROPY + family)
            cos_batch = _value(scalars, COS_BATCH + family)
            if entropy is not None:
                states = {
                    "uniform": entropy > UNIFORM,
                    "collapsed": is_collapsed(entropy, cos_batch),
                }
                for kind, active in states.items():
                    messages += self._follow(step, family, kind, active, entropy, cos_batch)
            messages += self._check_ce(step, family, scalars)
        self._previous = step
        return messages

    def _follow(
        self,
        step: int,
        family: str,
        kind: str,
        active: bool,
        entropy: float,
        cos_batch: float | None,
    ) -> list[str]:
        key = (family, kind)
        if not active:
            self._since.pop(key, None)
            return []
        # near-uniform targets are how every DINO-style run starts: a uniform stretch counts
        # from the end of the first fifth of the run (the earliest warning comes at two fifths)
        grace = int(self.span) if kind == "uniform" else 0
        start = self._since.setdefault(key, max(self._previous, grace))
        if step - start < self.span or key in self._warned:
            return []
        self._warned.add(key)
        return [_state_message(step, family, kind, step - start, entropy, cos_batch)]

    def _check_ce(self, step: int, family: str, scalars: Mapping[str, Any]) -> list[str]:
        ce, ln_k = _value(scalars, CE + family), _value(scalars, LN_K)
        key = (family, "ce")
        if ce is None or ln_k is None or step < self.span or key in self._warned:
            return []
        window = self._ce.setdefault(family, deque(maxlen=CE_ROWS))
        window.append((ce, ln_k))
        if len(window) < CE_ROWS and step < self.total_steps:
            return []
        mean_ce = sum(c for c, _ in window) / len(window)
        mean_ln_k = sum(k for _, k in window) / len(window)
        if mean_ce <= CE_MARGIN * mean_ln_k:
            return []
        self._warned.add(key)
        return [
            f"step {step}: distillation health: the '{family}' distillation CE ({mean_ce:.3f}, "
            f"mean of the last {len(window)} logged steps) is above ln K ({mean_ln_k:.3f}): the "
            f"student does not even match near-uniform targets. {CE_ADVICE}"
        ]


def _state_message(
    step: int, family: str, kind: str, steps: int, entropy: float, cos_batch: float | None
) -> str:
    same = f"cos_batch {cos_batch:.3f}" if cos_batch is not None else ""
    if kind == "uniform":
        note = (
            f" The teacher also gives every scan of a batch the same output ({same})."
            if cos_batch is not None and cos_batch > SAME_OUTPUT
            else ""
        )
        return (
            f"step {step}: distillation health: the teacher's '{family}' targets have been near "
            f"uniform for {steps} steps (entropy / ln K {entropy:.3f} > {UNIFORM}), so its "
            f"distillation CE sits at ln K and gives the student no signal.{note} {UNIFORM_ADVICE}"
        )
    reason = f"entropy / ln K {entropy:.3f}" + (f", {same}" if same else "")
    return (
        f"step {step}: distillation health: the teacher's '{family}' targets have collapsed for "
        f"{steps} steps ({reason}): every scan gets the same sharp target, so the student learns "
        f"nothing that tells scans apart. {COLLAPSE_ADVICE}"
    )


@dataclass(frozen=True)
class FamilyHealth:
    """One distillation family over a run (None where the run did not log the key).

    Attributes:
        family: the token family ("patch", "cls", "pooled", ...).
        entropy_start, entropy_end: teacher entropy / ln K, first logged and last-10% mean.
        ce_first, ce_end: the family's distillation CE, first logged and last-10% mean.
        ln_k: ln K (last-10% mean of `distill/ln_k`, else the caller's fallback).
        cos_batch, cos_views: last-10% means of the teacher cosines.
        verdict: "learning", "uniform", "collapsed" or "unknown" (no entropy logged).
    """

    family: str
    entropy_start: float | None
    entropy_end: float | None
    ce_first: float | None
    ce_end: float | None
    ln_k: float | None
    cos_batch: float | None
    cos_views: float | None
    verdict: str

    @property
    def ce_above_ln_k(self) -> bool:
        """The CE ends above CE_MARGIN * ln K."""
        return (
            self.ce_end is not None
            and self.ln_k is not None
            and self.ce_end > CE_MARGIN * self.ln_k
        )


def _first(rows: Sequence[Mapping[str, Any]], key: str) -> float | None:
    return next((v for r in rows if (v := _value(r, key)) is not None), None)


def _mean(rows: Sequence[Mapping[str, Any]], key: str) -> float | None:
    values = [v for r in rows if (v := _value(r, key)) is not None]
    return sum(values) / len(values) if values else None


def summarize(
    rows: Sequence[Mapping[str, Any]], ln_k: float | None = None
) -> dict[str, FamilyHealth]:
    """Per family: start and end (mean over the last 10% of logged rows) of each key, and a verdict.

    Args:
        rows: metrics.jsonl rows in step order.
        ln_k: ln K to use when the rows lack `distill/ln_k` (e.g. ln of the config's out_dim).

    Returns:
        {family: FamilyHealth}, empty when no row holds a distillation key.
    """
    rows = [r for r in rows if families(r)]
    tail = rows[-max(1, len(rows) // 10) :]
    out: dict[str, FamilyHealth] = {}
    for f in families(k for r in rows for k in r):
        end, cos_batch, logged_ln_k = (
            _mean(tail, ENTROPY + f),
            _mean(tail, COS_BATCH + f),
            _mean(tail, LN_K),
        )
        out[f] = FamilyHealth(
            f,
            _first(rows, ENTROPY + f),
            end,
            _first(rows, CE + f),
            _mean(tail, CE + f),
            ln_k if logged_ln_k is None else logged_ln_k,
            cos_batch,
            _mean(tail, COS_VIEWS + f),
            verdict(end, cos_batch),
        )
    return out


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a metrics.jsonl (a half-written last line of a running job is skipped)."""
    rows = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows
