"""The run directory `runs/<name>/` and the guards that run BEFORE any training step.

- A new run never overwrites an existing one (a folder with config.yaml or checkpoints).
- `resume=true` needs `checkpoints/last.ckpt`; the model, the method and what the data is
  (recipe, crops, views, batch) must be unchanged (`check_resume_config`).
- The folder must be writable and its disk must hold the checkpoints the run will write.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from medmim.errors import ConfigError

log = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
CKPT_DIR = "checkpoints"
FIGURES_DIR = "figures"
#: room for logs, TensorBoard events and figures, on top of the checkpoints.
LOG_RESERVE_BYTES = 64 * 2**20
#: keys that may change silently when resuming (they do not change what is computed).
RESUMABLE_CHANGES = (
    "resume",
    "train.log_every",
    "train.vis_every",
    "train.ckpt_every",
    "train.keep_every",
    "train.progress",
    "train.device",
    "train.max_nonfinite",
    "data.num_workers",
    "data.cache_dir",
    "output_dir",
)
#: keys that may change with a warning: how long and how fast the run goes on (the advice of
#: the non-finite guard is to resume with a lower learning rate), and where the same scans now
#: lie. Every other change (model, method, and what the data is: recipe, crops, views, batch)
#: is refused: the resumed run would silently become another run.
WARNED_CHANGES = (
    "train.max_steps",
    "train.epochs",
    "optim.",
    "data.source",
    "data.on_error",
    "train.precision",
    "train.compile",
    "train.activation_checkpointing",
    "train.deterministic",
    "train.find_unused_parameters",
    "init_from",
)


def check_run_name(name: str) -> None:
    """A run name is one folder name under `output_dir`, so a run never writes outside it.

    Raises:
        ConfigError: an empty name, a path (separators, an absolute path), "." or "..".
    """
    text = str(name)
    if (
        not text.strip()
        or text.strip() in (".", "..")
        or "/" in text
        or "\\" in text
        or text != text.strip()
    ):
        raise ConfigError(
            f"name={text!r} is not a run name: give one folder name (letters, digits, '-', '_', "
            "'.'), e.g. name=smart_ct; choose where runs go with output_dir=..."
        )


def holds_run(run_dir: Path) -> bool:
    """True when `run_dir` already belongs to a run (config.yaml or any checkpoint)."""
    ckpts = run_dir / CKPT_DIR
    return (run_dir / CONFIG_FILE).is_file() or (ckpts.is_dir() and any(ckpts.glob("*.ckpt")))


def check_run_dir(run_dir: Path, resume: bool) -> None:
    """Create `run_dir` if needed; refuse to overwrite a run; check it is writable.

    Raises:
        ConfigError: with the fix (resume=true, another name=, a writable output_dir=).
    """
    last = run_dir / CKPT_DIR / "last.ckpt"
    if resume and not last.is_file():
        raise ConfigError(
            f"resume=true but {last} does not exist (wrong name=/output_dir=, or the run stopped "
            "before its first checkpoint); drop resume=true and choose another name= or delete "
            "the folder to start over"
        )
    if not resume and holds_run(run_dir):
        fix = (
            f"continue it with medmim pretrain --resume {run_dir} (or resume=true), choose"
            if last.is_file()
            else "choose"
        )
        raise ConfigError(
            f"{run_dir} already holds a run; {fix} another name=..., or delete the folder to "
            "start over"
        )
    try:
        (run_dir / CKPT_DIR).mkdir(parents=True, exist_ok=True)
        (run_dir / FIGURES_DIR).mkdir(exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=run_dir / CKPT_DIR, prefix=".probe-") as probe:
            probe.write(b"medmim")
            probe.flush()
    except OSError as exc:
        raise ConfigError(
            f"cannot write to run directory {run_dir} ({exc.strerror or exc}); set "
            "output_dir= to a writable folder"
        ) from exc


def estimate_checkpoint_bytes(method: nn.Module) -> int:
    """Rough size of one checkpoint: the method's state plus two AdamW moments per trainable
    parameter, plus 5% for the rest. Non-tensor state_dict entries (counters, flags that some
    modules keep through `get_extra_state`) are not counted.
    """
    state = sum(
        t.numel() * t.element_size() for t in method.state_dict().values() if torch.is_tensor(t)
    )
    moments = sum(2 * p.numel() * 4 for p in method.parameters() if p.requires_grad)
    return int(1.05 * (state + moments)) + 2**20


def check_disk_space(run_dir: Path, ckpt_bytes: int, total_steps: int, keep_every: int) -> int:
    """Fail now if the disk cannot hold last.ckpt twice (old + new while replacing), every
    kept step-XXXXXX.ckpt, and the logs. Returns the bytes needed.
    """
    keeps = total_steps // keep_every if keep_every > 0 else 0
    need = (2 + keeps) * ckpt_bytes + LOG_RESERVE_BYTES
    free = shutil.disk_usage(run_dir).free
    if free < need:
        raise ConfigError(
            f"{run_dir}: {free / 2**30:.2f} GiB free but this run needs about "
            f"{need / 2**30:.2f} GiB ({2 + keeps} checkpoints of {ckpt_bytes / 2**20:.0f} MiB and "
            "logs); free some space, raise or zero train.keep_every, or set output_dir= to "
            "another disk"
        )
    return need


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def _saved_config(run_dir: Path) -> dict[str, Any]:
    """The run's config.yaml, or, when it cannot be parsed (truncated by a crash or a full
    disk), the config stored in its last.ckpt (with a warning); {} when neither can be read.
    """
    path = run_dir / CONFIG_FILE
    try:
        saved = yaml.safe_load(path.read_text(encoding="utf-8"))
        if isinstance(saved, dict):
            return saved
        problem = f"holds a {type(saved).__name__}, not a mapping"
    except (yaml.YAMLError, UnicodeDecodeError, OSError) as exc:
        problem = f"cannot be parsed ({str(exc).splitlines()[0]})"
    try:
        ckpt = torch.load(run_dir / CKPT_DIR / "last.ckpt", map_location="cpu", weights_only=True)
        config = ckpt.get("config") if isinstance(ckpt, dict) else None
    except Exception:  # noqa: BLE001 - an unreadable checkpoint is reported when it is loaded
        config = None
    log.warning(
        "%s %s; comparing with the config stored in the checkpoint%s; config.yaml will "
        "be rewritten",
        path,
        problem,
        "" if isinstance(config, dict) else " (none found)",
    )
    return config if isinstance(config, dict) else {}


def check_resume_config(run_dir: Path, current: dict[str, Any]) -> list[str]:
    """Compare the config of a run being resumed with the one it was started with.

    A key that the saved config lacks (a setting added to medmim after the run started) counts
    as unchanged when the current value is its default.

    Returns:
        The changed keys that were allowed (`WARNED_CHANGES`, each logged as a warning).

    Raises:
        ConfigError: listing every other change (model, method, data), with the fix.
    """
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        return []
    saved = _flatten(_saved_config(run_dir))
    now = _flatten(current)
    defaults = _schema_defaults()
    changed = sorted(
        k
        for k in set(saved) | set(now)
        if saved.get(k) != now.get(k)
        and not (k not in saved and now.get(k) == defaults.get(k, object()))
    )
    changed = [k for k in changed if not k.startswith(RESUMABLE_CHANGES)]
    fatal = [k for k in changed if not k.startswith(WARNED_CHANGES)]
    if fatal:
        diffs = "; ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in fatal)
        raise ConfigError(
            f"resuming {run_dir} with other settings than it was started with ({diffs}). "
            "These change the model or the data, so the resumed run would silently become "
            f"another one. Resume with the saved settings: medmim pretrain --resume {run_dir} "
            "(key=value overrides may change the steps, the learning rate, logging and "
            "checkpoints), or start a new run with init_from= to reuse the weights"
        )
    for key in changed:
        log.warning("resuming with %s changed: %r -> %r", key, saved.get(key), now.get(key))
    return changed


def saved_run_config(run_dir: Path) -> dict[str, Any]:
    """The config a run was started with, to resume it (`medmim pretrain --resume RUN_DIR`).

    Raises:
        ConfigError: `run_dir` holds no run (no config.yaml and no readable last.ckpt).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"--resume {run_dir}: no such run directory (give runs/<name>)")
    if not (run_dir / CONFIG_FILE).is_file() and not (run_dir / CKPT_DIR / "last.ckpt").is_file():
        raise ConfigError(
            f"--resume {run_dir}: holds no run (no {CONFIG_FILE}, no {CKPT_DIR}/last.ckpt)"
        )
    saved = _saved_config(run_dir)
    if not saved:
        raise ConfigError(
            f"--resume {run_dir}: neither {CONFIG_FILE} nor last.ckpt holds a "
            "readable config; start it again with --config and resume=true"
        )
    return saved


def _schema_defaults() -> dict[str, Any]:
    from omegaconf import OmegaConf

    from medmim.train.config import RunConfig

    return _flatten(OmegaConf.to_container(OmegaConf.structured(RunConfig)))
