"""What a run shows while it trains (rank 0 only): a tqdm bar with loss and speed, a line in
train.log, a row in metrics.jsonl and TensorBoard scalars every `log_every` steps.

metrics.jsonl has one JSON object per logged step: `step` (optimizer steps done), `epoch`,
`loss`, the method's own logs (`loss/amip`, ...), `lr`, `wd`, `grad_norm`, `nonfinite/total`,
`time/step_s` and `speed/samples_per_s`.

Self-distillation methods also log, per token family `f` ("patch", "cls", "pooled", ...):
`teacher/entropy/<f>` (the teacher's target entropy / ln K, 1 = uniform), `distill/ce/<f>` (the
unweighted distillation CE), `teacher/cos_batch/<f>` (teacher cosine across the scans of a batch,
near 1 = the same output for every scan), `teacher/cos_views/<f>` (across the two views of a
scan, global families) and `distill/ln_k`. The distillation health check
(`medmim.train.health.HealthCheck`) reads every logged row and writes ONE warning per family and
kind to train.log when, for a fifth of the run:

- a family stays uniform (entropy > 0.95; counted after the first fifth of the run, since every
  run starts uniform): "the teacher's '<f>' targets have been near uniform
  ...", naming optim.lr_scaling / optim.base_lr, data.views=shared, method.teacher_temp /
  method.warmup_teacher_temp, method.momentum_start and method.centering=sinkhorn;
- a family collapses (entropy < 0.05, or cos_batch > 0.99 with non-uniform targets): "the
  teacher's '<f>' targets have collapsed ...", naming the teacher temperature,
  method.centering=sinkhorn and method.koleo_weight;

and once per family when its CE, averaged over the last logged rows, ends above 1.02 ln K: "the
'<f>' distillation CE (...) is above ln K". A learning run (entropy falling, cos_views above
cos_batch) gets none of them.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from medmim.train.health import HealthCheck

log = logging.getLogger("medmim.train")

METRICS_FILE = "metrics.jsonl"
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
        self,
        run_dir: Path,
        start_step: int,
        total_steps: int,
        enabled: bool = True,
        progress: bool = True,
    ) -> None:
        self.enabled = enabled
        self.run_dir = run_dir
        self.total_steps = total_steps
        self.health = HealthCheck(total_steps, start_step)
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
            total=total_steps,
            initial=start_step,
            unit="step",
            dynamic_ncols=True,
            disable=not progress,
            desc=run_dir.name,
        )

    def _truncate_metrics(self, start_step: int) -> None:
        """On resume, drop rows that a killed session wrote after its last checkpoint."""
        path = self.run_dir / METRICS_FILE
        if not path.is_file():
            return
        keep = [
            ln
            for ln in path.read_text(encoding="utf-8").splitlines()
            if 0 <= _row_step(ln) <= start_step
        ]
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

    def progress(self, step: int) -> None:
        """Advance the bar to `step` steps done."""
        if self._bar is not None:
            self._bar.update(step - self._bar.n)

    def postfix(self, loss: float, samples_per_s: float) -> None:
        """Show the loss and speed read at the last check step."""
        if self._bar is not None:
            self._bar.set_postfix(
                loss=f"{loss:.4f}", samples_s=f"{samples_per_s:.1f}", refresh=False
            )

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
        for message in self.health.update(step, scalars):
            self._write(message, logging.WARNING)

    def info(self, message: str) -> None:
        """A line in train.log (and the console) that does not break the bar."""
        if self.enabled:
            self._write(message)

    def _write(self, message: str, level: int = logging.INFO) -> None:
        if self._bar is not None and not self._bar.disable:
            self._bar.clear()
        log.log(level, message)
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
