"""Encoders for the downstream commands: a pretrained export, or the same architecture from scratch.

`--encoder` takes one of

- `runs/x/export` or `runs/x/export/encoder.json`: the exported encoder (weights + sidecar);
- `scratch:runs/x/export`: the architecture of that export, randomly initialised;
- `scratch:<backbone preset>` (e.g. `scratch:swin_smart`): a preset, randomly initialised;
- `scratch` with `reference=` an export: as `scratch:<reference>`.

so that a pretrained and a from-scratch run of any downstream command differ by one flag.

Features (`feature=`), all (B, C) from `forward_features` (medmim/types.py):

- `cls`: the [CLS] token: SMART's semantic-attention [CLS] on a Swin, or a ViT's [CLS];
- `pooled`: the average-pooled token of the last stage (SMIT's global image token);
- `patch_mean`: the mean of the patch tokens on the masking grid;
- `auto`: `cls` when the backbone has one, else `pooled`.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from medmim.errors import ConfigError, DataError, did_you_mean
from medmim.eval.slice_first import slice_first_view
from medmim.registry import BACKBONES

log = logging.getLogger(__name__)

FEATURES = ("auto", "cls", "pooled", "patch_mean")
SCRATCH = "scratch"


def _sidecar(path: str | Path) -> Path:
    path = Path(path)
    json_path = path / "encoder.json" if path.is_dir() else path
    if not json_path.is_file():
        raise DataError(
            path,
            "not an exported encoder: expected a folder with encoder.json + "
            "encoder.safetensors (run `medmim export RUN_DIR` first) or a "
            "'scratch:<preset>' spec",
        )
    return json_path


def read_encoder_meta(path: str | Path) -> dict[str, Any]:
    """The `encoder.json` sidecar of an export folder (or the JSON itself), without weights."""
    json_path = _sidecar(path)
    try:
        meta = json.loads(json_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(json_path, f"not valid JSON ({exc})") from exc
    if "backbone" not in meta:
        raise DataError(json_path, "has no 'backbone' build spec; re-export the run")
    return meta


def _scratch_meta(model: nn.Module, base: dict[str, Any] | None) -> dict[str, Any]:
    meta = (
        copy.deepcopy(base)
        if base
        else {
            "backbone": dict(getattr(model, "config", {})),
            "recipe": None,
            "spacing": None,
            "crop_size": None,
            "patch_size": None,
            "in_channels": int(getattr(model, "config", {}).get("in_channels", 1)),
        }
    )
    meta["method"] = SCRATCH
    meta["pretrained"] = False
    return meta


def _build_scratch(spec: str, target: str, seed: int) -> tuple[nn.Module, dict[str, Any]]:
    """A random init of an export's architecture (`target` a path) or of a backbone preset."""
    base = read_encoder_meta(target) if Path(target).exists() else None
    if base is None and target not in BACKBONES:
        raise ConfigError(
            f"'{spec}': '{target}' is neither an export folder nor a backbone preset."
            f"{did_you_mean(target, BACKBONES.names())} Presets: {', '.join(BACKBONES.names())}"
        )
    with torch.random.fork_rng(devices=[]):  # seeded init, global RNG untouched
        torch.manual_seed(seed)
        model = BACKBONES.build(base["backbone"] if base else target)
    return model, _scratch_meta(model, base)


def load_encoder_or_scratch(
    spec: str | Path,
    *,
    reference: str | Path | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> tuple[nn.Module, dict[str, Any]]:
    """Build the encoder that `spec` names (see the module docstring), in eval mode.

    Args:
        spec: an export folder / encoder.json, `scratch:<export or preset>`, or `scratch`.
        reference: the export whose architecture a bare `scratch` takes.
        seed: seed of the random initialisation of a scratch encoder.
        device: where to put the model.

    Returns:
        `(model, meta)`: meta is the encoder.json dict ("backbone", "method", "recipe",
        "crop_size", "in_channels", ...) plus "pretrained" (bool); for scratch, method="scratch".
        An export with `"slice_first": true` (PUMIT) comes wrapped to take (X, Y, Z) volumes,
        its crop_size reordered to match (`medmim.eval.slice_first`).

    Raises:
        ConfigError: an unknown preset or a bare `scratch` without a reference.
        DataError: an export folder that is missing or incomplete.
    """
    spec = str(spec)
    if spec == SCRATCH:
        if reference is None:
            raise ConfigError(
                "--encoder scratch needs an architecture: use "
                "scratch:<export dir> or scratch:<preset> (e.g. scratch:swin_demo)"
            )
        spec = f"{SCRATCH}:{reference}"
    if spec.startswith(f"{SCRATCH}:"):
        model, meta = _build_scratch(spec, spec[len(SCRATCH) + 1 :], seed)
    else:
        from medmim.eval.export import load_encoder

        _sidecar(spec)
        model, meta = load_encoder(spec)
        meta = {**meta, "pretrained": True}
    model, meta = slice_first_view(model, meta)
    log.info("encoder %s: %s (%s)", spec, meta["backbone"].get("name"), meta.get("method"))
    return model.to(device).eval(), meta


def input_size(
    override: Sequence[int] | None,
    meta: dict[str, Any],
    data_shape: Sequence[int],
    multiple: int = 32,
) -> tuple[int, int, int]:
    """The (D, H, W) every volume is resized to before the encoder.

    `override` (--size) if given, else the export's `crop_size` (what the encoder was pretrained
    on; PUMIT likewise resizes MedMNIST to its pretraining size), else the data's own shape
    rounded up to a multiple of `multiple` (32 suits Swin with patch 2 and ViT with patch 16).
    """
    size = override or meta.get("crop_size")
    if size is None:
        size = [int(-(-int(s) // multiple) * multiple) for s in data_shape]
    size = [int(s) for s in (size if len(size) == 3 else list(size) * 3)]
    if len(size) != 3 or min(size) <= 0:
        raise ConfigError(f"--size {size}: give one size or three (D H W), all positive")
    return size[0], size[1], size[2]


def describe(spec: str | Path, meta: dict[str, Any]) -> dict[str, Any]:
    """The `encoder` entry of a results.json: spec, method, backbone name, pretrained."""
    return {
        "spec": str(spec),
        "method": str(meta.get("method", "")),
        "backbone": str(meta.get("backbone", {}).get("name", "")),
        "pretrained": bool(meta.get("pretrained", False)),
    }


def feature_name(features: dict[str, Any], feature: str) -> str:
    """The feature that `feature` means for this backbone: 'auto' -> 'cls' or 'pooled'."""
    if feature not in FEATURES:
        raise ConfigError(f"unknown feature '{feature}'; choose one of {', '.join(FEATURES)}")
    if feature == "auto":
        return "cls" if features.get("cls") is not None else "pooled"
    return feature


def select_feature(features: dict[str, Any], feature: str) -> Tensor:
    """One (B, C) embedding from a `forward_features` dict (see the module docstring)."""
    feature = feature_name(features, feature)
    if feature == "patch_mean":
        return features["patch"].mean(dim=1)
    value = features.get(feature)
    if value is None:
        have = [k for k in ("cls", "pooled") if features.get(k) is not None]
        raise ConfigError(
            f"this backbone has no '{feature}' output (it has {have + ['patch_mean']});"
            f" choose --feature {have[0] if have else 'patch_mean'}"
        )
    return value


def embed(model: nn.Module, x: Tensor, feature: str = "auto") -> Tensor:
    """(B, C, D, H, W) volumes -> (B, C') embeddings, differentiable (for fine-tuning)."""
    return select_feature(model.forward_features(x), feature)


@torch.no_grad()
def extract_features(
    model: nn.Module,
    batches: Iterable[Tensor | tuple[Tensor, Any]],
    feature: str = "auto",
    device: str | torch.device = "cpu",
    progress: bool = True,
    total: int | None = None,
) -> np.ndarray:
    """Embeddings of every volume, (N, C') float32, in the order of `batches`.

    Args:
        model: a backbone (put in eval mode here).
        batches: an iterable (e.g. a DataLoader) of (B, C, D, H, W) tensors or (tensor, ...) tuples.
        feature: see the module docstring.
        device: where the forward runs.
        progress: show a tqdm bar.
        total: number of batches, for the bar.
    """
    model.eval()
    out = []
    for batch in tqdm(
        batches, desc=f"features ({feature})", disable=not progress, total=total, leave=False
    ):
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        out.append(embed(model, x.to(device), feature).float().cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)
