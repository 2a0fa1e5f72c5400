"""Checkpoints that survive a kill, resume exactly, and load with `weights_only=True`.

A checkpoint (`runs/<name>/checkpoints/last.ckpt`) is one `torch.save` dict:

- "method": the method's state_dict (student, teacher, heads, centers: everything to resume).
- "optimizer", "scaler": their state_dicts.
- "step": optimizer steps done; "epoch": the epoch of the next step.
- "rng": one entry per process: python, numpy, torch CPU and CUDA generator states.
- "sampler": {"epoch", "index" (batches of this epoch already used), "seed", "world_size",
  "batch_size", "accumulate", "steps_per_epoch"}; "data": the dataset's `state_dict()` if any.
- "counters": non-finite step counters; "config": the resolved run config (plain dict).
- "encoder", "encoder_config", "method_name": what `medmim export` reads; "medmim_version".

Only tensors, dicts, lists, tuples, numbers, strings, bools and None are stored (the numpy and
python RNG states are converted to tensors), so `torch.load(..., weights_only=True)` reads it.
Writes go to a temporary file in the same folder, are fsynced, then `os.replace`d over the old
file: a kill at any moment leaves either the old or the new checkpoint, never a broken one.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import random
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medmim.errors import ConfigError

log = logging.getLogger("medmim.train")

LAST = "last.ckpt"
_SAFE_LEAVES = (torch.Tensor, int, float, bool, str, bytes, type(None), torch.dtype, torch.device)


def check_weights_only_safe(obj: Any, where: str = "checkpoint") -> None:
    """Raise TypeError naming the first value that `weights_only=True` could not load."""
    if isinstance(obj, _SAFE_LEAVES):
        return
    if isinstance(obj, Mapping):
        for key, value in obj.items():
            check_weights_only_safe(value, f"{where}[{key!r}]")
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            check_weights_only_safe(value, f"{where}[{i}]")
    else:
        raise TypeError(
            f"{where} is a {type(obj).__module__}.{type(obj).__name__}, which torch.load("
            "weights_only=True) cannot read; store tensors, numbers, strings, lists or dicts"
        )


class DiskFullError(ConfigError):
    """A checkpoint could not be written because its disk is full; the previous file at the
    same path is intact.
    """


def atomic_save(obj: Any, path: str | Path) -> None:
    """`torch.save` to a temporary file in the same folder, fsync, then rename over `path`.

    Raises:
        DiskFullError: "no space left on <folder>" (PyTorch's own message for a short write
            is an `inline_container.cc` position error); the temporary file is removed and the
            previous `path` left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if is_disk_full(exc):
            free = shutil.disk_usage(path.parent).free
            kept = f"; the previous {path.name} is intact" if path.is_file() else ""
            raise DiskFullError(
                f"no space left on {path.parent} ({free / 2**20:.1f} MiB free) while writing "
                f"{path.name}{kept}. Free some space (or set output_dir= to another disk), "
                "then continue the run with medmim pretrain --resume"
            ) from exc
        raise
    _fsync_dir(path.parent)


def is_disk_full(exc: BaseException) -> bool:
    """Whether `exc` (or an exception it was raised from or during) is ENOSPC / EDQUOT."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return False


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open folders
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_stale_temps(folder: Path) -> None:
    """Delete temporary files that a killed writer left behind: `.<name>.tmp-<pid>` files whose
    process no longer runs (a live writer's file, this process's included, is left alone).
    """
    for tmp in folder.glob(".*.tmp-*"):
        pid = tmp.name.rsplit("-", 1)[-1]
        if pid.isdigit() and _alive(int(pid)):
            continue
        tmp.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    """Whether process `pid` exists (signal 0 probes without sending anything)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists but is not ours, or we cannot tell: keep its file
    return True


def keep_copy(folder: Path, step: int) -> Path:
    """Keep the current last.ckpt as `step-XXXXXX.ckpt` (a hard link when possible)."""
    src, dst = folder / LAST, folder / f"step-{step:06d}.ckpt"
    dst.unlink(missing_ok=True)
    try:
        os.link(src, dst)
    except OSError:  # no hard links on this filesystem: copy, atomically
        tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    return dst


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint with `weights_only=True` onto the CPU; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no checkpoint there")
    if path.stat().st_size == 0:
        raise ConfigError(
            f"{path}: not a readable medmim checkpoint (an empty file: its write was "
            "cut off, e.g. by a full disk)"
        )
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - unpickling raises many types
        raise ConfigError(f"{path}: not a readable medmim checkpoint ({_why(exc)})") from exc
    if not isinstance(ckpt, dict):
        raise ConfigError(f"{path}: not a medmim checkpoint (a {type(ckpt).__name__}, not a dict)")
    return ckpt


#: what `Session.restore` reads from a checkpoint.
RESUME_KEYS = ("method", "optimizer", "step")


def _resumable(path: Path) -> dict[str, Any]:
    """`load_checkpoint(path)`, refused unless it holds every key a resume reads."""
    ckpt = load_checkpoint(path)
    missing = [k for k in RESUME_KEYS if k not in ckpt]
    if missing:
        raise ConfigError(
            f"{path}: not a resumable medmim checkpoint (no {', '.join(map(repr, missing))}; "
            f"it holds {sorted(ckpt)[:8]})"
        )
    return ckpt


def _why(exc: Exception) -> str:
    """One line on why torch.load failed (never torch's advice to load with weights_only=False)."""
    text = str(exc).strip()
    if text.startswith("Weights only load failed") or "WeightsUnpickler" in text:
        return (
            "truncated, not a torch file, or holding objects that a safe weights_only load refuses"
        )
    return (text.splitlines() or [type(exc).__name__])[0] or type(exc).__name__


def load_resume_checkpoint(folder: Path) -> tuple[dict[str, Any], Path]:
    """The checkpoint to resume from: `folder/last.ckpt`, or, when it cannot be read, the
    newest readable `step-XXXXXX.ckpt` beside it (with a warning that names both).

    Raises:
        ConfigError: neither last.ckpt nor any kept copy can be read.
    """
    try:
        return _resumable(folder / LAST), folder / LAST
    except ConfigError as exc:
        first = exc
    kept = sorted(folder.glob("step-*.ckpt"), reverse=True)
    for path in kept:
        try:
            ckpt = _resumable(path)
        except ConfigError:
            continue
        log.warning(
            "%s; resuming from the newest readable kept copy, %s (step %s): the steps "
            "after it run again",
            first,
            path.name,
            ckpt.get("step"),
        )
        return ckpt, path
    hint = (
        f" and none of the {len(kept)} kept step-*.ckpt copies is readable"
        if kept
        else " and there is no kept step-*.ckpt copy (train.keep_every)"
    )
    raise ConfigError(f"{first}{hint}; start a new run (another name=) or restore the file")


# ---------------------------------------------------------------- random number generators
def capture_rng() -> dict[str, Any]:
    """This process's python, numpy, torch and CUDA RNG states as weights_only-safe values."""
    version, state, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)  # type: ignore[misc]
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else []
    return {
        "python": {
            "version": version,
            "state": torch.tensor(state, dtype=torch.int64),
            "gauss": gauss,
        },
        "numpy": {
            "name": str(name),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
        "cuda": list(cuda),
    }


def restore_rng(state: Mapping[str, Any]) -> None:
    """Inverse of `capture_rng`."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state(
        (
            npy["name"],
            npy["keys"].numpy().astype(np.uint32),
            npy["pos"],
            npy["has_gauss"],
            npy["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------- model state
def restore_state(
    ckpt: Mapping[str, Any], method: nn.Module, optimizer: torch.optim.Optimizer, scaler: Any
) -> None:
    """Load method, optimizer and scaler state (strict), with errors that name the mismatch."""
    try:
        method.load_state_dict(ckpt["method"])
    except RuntimeError as exc:
        raise ConfigError(
            f"the checkpoint's method weights do not fit this run's method: {str(exc)[:600]}. "
            "Resume with the same model and method settings as the run that wrote it"
        ) from exc
    saved = [g.get("names") for g in ckpt["optimizer"]["param_groups"]]
    current = [g.get("names") for g in optimizer.param_groups]
    if saved != current:
        raise ConfigError(
            "the checkpoint's optimizer parameter groups differ from this run's (other trainable "
            "parameters or no_decay_keys); resume with the settings of the run that wrote it"
        )
    optimizer.load_state_dict(ckpt["optimizer"])
    if ckpt.get("scaler"):
        scaler.load_state_dict(ckpt["scaler"])


def load_pretrained_encoder(path: str | Path) -> tuple[dict[str, torch.Tensor], Any]:
    """Encoder weights and build spec from a checkpoint, a run dir or an exported encoder dir.

    Returns:
        (state_dict, backbone build spec or None when unknown).
    """
    path = Path(path)
    if path.is_dir():
        for candidate in (
            "encoder.safetensors",
            "export/encoder.safetensors",
            f"checkpoints/{LAST}",
        ):
            if (path / candidate).is_file():
                return load_pretrained_encoder(path / candidate)
        raise ConfigError(
            f"init_from={path}: the folder holds neither encoder.safetensors, "
            f"export/encoder.safetensors nor checkpoints/{LAST}"
        )
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        sidecar = path.with_suffix(".json")
        spec = (
            json.loads(sidecar.read_text(encoding="utf-8")).get("backbone")
            if sidecar.is_file()
            else None
        )
        return load_file(str(path)), spec
    ckpt = load_checkpoint(path)
    if "encoder" not in ckpt:
        raise ConfigError(
            f"init_from={path}: the checkpoint has no 'encoder' entry (keys: {sorted(ckpt)})"
        )
    return ckpt["encoder"], ckpt.get("encoder_config")


def init_encoder_from(method: nn.Module, path: str | Path) -> None:
    """Load pretrained weights strictly into `method.encoder` (the student backbone).

    Afterwards `method.on_encoder_loaded()` is called if the method defines it, so an EMA
    teacher can copy the new student weights.
    """
    state, spec = load_pretrained_encoder(path)
    encoder: nn.Module = method.encoder  # type: ignore[assignment]
    ours = getattr(encoder, "config", None)
    hint = (
        f" The weights were saved from backbone {spec}; this run builds {ours}: "
        "set model.* to match."
        if spec is not None
        else ""
    )
    own = encoder.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} {tuple(v.shape)} (here {tuple(own[k].shape)})"
        for k, v in state.items()
        if k in own and tuple(own[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or shapes:
        raise ConfigError(
            f"init_from={path}: the weights do not fit this run's encoder: "
            f"{len(missing)} missing {missing[:5]}, {len(unexpected)} unexpected "
            f"{unexpected[:5]}, {len(shapes)} of another shape {shapes[:3]}.{hint}"
        )
    encoder.load_state_dict(state, strict=True)
    hook = getattr(method, "on_encoder_loaded", None)
    if callable(hook):
        hook()


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
