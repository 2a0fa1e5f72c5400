"""What a run shows while it trains (rank 0 only): a tqdm bar with loss and speed, a line in
train.log, a row in metrics.jsonl and TensorBoard scalars every `log_every` steps.

metrics.jsonl has one JSON object per logged step: `step` (optimizer steps done), `epoch`,
`loss`, the method's own logs (`loss/amip`, ...), `lr`, `wd`, `grad_norm`, `nonfinite/total`,
`time/step_s` and `speed/samples_per_s`.

Distillation methods also log `teacher/entropy/<family>` (the teacher's target entropy / ln K).
Past a fifth of the run, if a family is still at >= 0.99 (uniform targets: its distillation
loss at ln K carries no signal), train.log gets one warning that names them and what to change.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

log = logging.getLogger("medmim.train")

METRICS_FILE = "metrics.jsonl"
#: `teacher/entropy/*` (entropy / ln K) at or above this past a fifth of a run triggers the
#: near-uniform-targets warning.
UNIFORM_TARGETS = 0.99
LOG_FILE = "train.log"


class Monitor:
    """Progress bar, train.log, metrics.jsonl and TensorBoard of one run.

    Args:
        run_dir: the run directory.
        start_step: the first step of this session (0, or the resumed step).
        total_steps: steps of the whole run.
        enabled: False on ranks other than 0 (then every method is a no-op).
        progress: show the tqdm bar.
    """

    def __init__(
        self, run_dir: Path, start_step: int, total_steps: int, enabled: bool = True,
        progress: bool = True,
    ) -> None:
        self.enabled = enabled
        self.run_dir = run_dir
        self.total_steps = total_steps
        self._warned_uniform = False
        self._bar: Any = None
        self._writer: Any = None
        self._handler: logging.Handler | None = None
        self._old_level = logging.NOTSET
        if not enabled:
            return
        self._truncate_metrics(start_step)
        self._attach_log_file()
        from torch.utils.tensorboard import SummaryWriter
        from tqdm.auto import tqdm

        self._writer = SummaryWriter(str(run_dir), purge_step=start_step or None)
        self._bar = tqdm(
            total=total_steps, initial=start_step, unit="step", dynamic_ncols=True,
            disable=not progress, desc=run_dir.name,
        )

    def _truncate_metrics(self, start_step: int) -> None:
        """On resume, drop rows that a killed session wrote after its last checkpoint."""
        path = self.run_dir / METRICS_FILE
        if not path.is_file():
            return
        keep = [ln for ln in path.read_text(encoding="utf-8").splitlines() if 0 <= _row_step(ln) <= start_step]
        path.write_text("".join(f"{ln}\n" for ln in keep), encoding="utf-8")

    def _attach_log_file(self) -> None:
        logger = logging.getLogger("medmim")
        self._handler = logging.FileHandler(self.run_dir / LOG_FILE)
        self._handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
        )
        self._handler.setLevel(logging.INFO)
        logger.addHandler(self._handler)
        self._old_level = logger.level
        if logger.getEffectiveLevel() > logging.INFO:
            logger.setLevel(logging.INFO)

    def progress(self, step: int, loss: float, samples_per_s: float) -> None:
        """Advance the bar to `step` steps done."""
        if self._bar is None:
            return
        self._bar.update(step - self._bar.n)
        self._bar.set_postfix(loss=f"{loss:.4f}", samples_s=f"{samples_per_s:.1f}", refresh=False)

    def log_step(self, step: int, scalars: dict[str, float]) -> None:
        """Write one row (metrics.jsonl, TensorBoard, train.log) for `step` steps done."""
        if not self.enabled:
            return
        row = {"step": step, **{k: _clean(v) for k, v in scalars.items()}}
        with open(self.run_dir / METRICS_FILE, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        for key, value in scalars.items():
            if key != "epoch" and math.isfinite(value):
                self._writer.add_scalar(key if "/" in key else f"train/{key}", value, step)
        text = " ".join(f"{k} {_fmt(v)}" for k, v in scalars.items())
        self._write(f"step {step} {text}")
        self._check_targets(step, scalars)

    def _check_targets(self, step: int, scalars: dict[str, float]) -> None:
        """Warn once when, past a fifth of the run, a distillation's teacher targets are still
        near uniform (`teacher/entropy/<family>` >= UNIFORM_TARGETS of ln K)."""
        if self._warned_uniform or step < max(1, self.total_steps // 5):
            return
        uniform = {k.rsplit("/", 1)[-1]: v for k, v in scalars.items()
                   if k.startswith("teacher/entropy/") and math.isfinite(v) and v >= UNIFORM_TARGETS}
        if not uniform:
            return
        self._warned_uniform = True
        values = ", ".join(f"{k} {v:.3f}" for k, v in uniform.items())
        log.warning(
            "step %d: the teacher's targets are still near uniform (entropy / ln K: %s), so "
            "these distillation losses sit at ln K and give the student no signal yet. "
            "DINO-style runs start this way and need many steps (thousands at the papers' "
            "scale) to leave it. If it persists, train longer, or sharpen the teacher (lower "
            "method.teacher_temp and method.warmup_teacher_temp) or use a smaller "
            "method.out_dim.", step, values)

    def info(self, message: str) -> None:
        """A line in train.log (and the console) that does not break the bar."""
        if self.enabled:
            self._write(message)

    def _write(self, message: str) -> None:
        if self._bar is not None and not self._bar.disable:
            self._bar.clear()
        log.info(message)
        if self._bar is not None and not self._bar.disable:
            self._bar.refresh()

    def close(self) -> None:
        """Flush and detach everything (idempotent)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._handler is not None:
            logger = logging.getLogger("medmim")
            logger.removeHandler(self._handler)
            self._handler.close()
            self._handler = None
            logger.setLevel(self._old_level)


def _row_step(line: str) -> int:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return -1


def _clean(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _fmt(value: float) -> str:
    if math.isfinite(value) and value == int(value) and abs(value) < 1e9:
        return str(int(value))
    return f"{value:.4g}"
