"""Export a run's encoder as `encoder.safetensors` + `encoder.json`, and load it back.

The export reads only "encoder", "encoder_config", "config" (data.recipe, data.crop_size,
data.mode, method.name), "medmim_version" and "step" from a checkpoint, so it works for every
method. A `data.mode=native` run (PUMIT) trained on crops with the slice axis first: its
encoder.json says `"slice_first": true`, its crop_size is (D, H, W) in that order and its
spacing is null; the downstream loader adapts it (`medmim.eval.slice_first`).

A `pumit_tokenizer` run's "encoder" is its PUMIT tokenizer (a `TOKENIZERS` spec, not a
backbone): it is exported the same way, as a shareable artefact that stage 2 loads
(`medmim pretrain --config pumit_mim method.tokenizer=DIR`; the run directory works too), but
`load_encoder` refuses it: downstream tasks take the exported `pumit_mim` ViT.

Using Swin weights in MONAI's SwinUNETR: the Swin encoder keeps MONAI's `SwinTransformer` as
`swinViT`, so the exported keys are `swinViT.*` exactly as in `SwinUNETR.state_dict()`, plus a few
medmim-only keys (`mask_token`, `sa.*`, `norm.*`). Either call

    >>> net = SwinUNETR(out_channels=14, **meta["monai_swinunetr"])      # doctest: +SKIP
    >>> load_into_swinunetr(net, "runs/smart/export")                   # doctest: +SKIP

or, with safetensors alone:

    >>> w = safetensors.torch.load_file("runs/smart/export/encoder.safetensors")   # doctest: +SKIP
    >>> net.swinViT.load_state_dict(                                              # doctest: +SKIP
    ...     {k[8:]: v for k, v in w.items() if k.startswith("swinViT.")}
    ... )
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from medmim import __version__
from medmim.errors import ConfigError, DataError
from medmim.registry import BACKBONES

ENCODER_WEIGHTS = "encoder.safetensors"
ENCODER_META = "encoder.json"
SWIN_PREFIX = "swinViT."
_REQUIRED = ("encoder", "encoder_config")


def find_checkpoint(source: str | Path) -> Path:
    """A `.ckpt` path as given, or `RUN/checkpoints/last.ckpt` for a run directory."""
    path = Path(source)
    if path.is_dir():
        for candidate in (path / "checkpoints" / "last.ckpt", path / "last.ckpt"):
            if candidate.is_file():
                return candidate
        raise DataError(
            path,
            "no checkpoints/last.ckpt here; pass a run directory (runs/<name>) or a .ckpt file",
        )
    if not path.is_file():
        raise DataError(path, "does not exist; pass a run directory (runs/<name>) or a .ckpt file")
    return path


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a medmim checkpoint with `torch.load(weights_only=True)` and check its keys."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling refused, truncated file, not a torch file
        raise DataError(
            path, f"cannot be read as a torch checkpoint with weights_only=True ({exc})"
        ) from exc
    missing = [k for k in _REQUIRED if not isinstance(ckpt, Mapping) or k not in ckpt]
    if missing:
        raise DataError(
            path,
            f"is not a medmim checkpoint: missing {missing} (expected "
            "runs/<name>/checkpoints/last.ckpt)",
        )
    return dict(ckpt)


def load_state_checked(
    model: nn.Module, state: Mapping[str, Tensor], source: str | Path, hint: str = ""
) -> None:
    """`model.load_state_dict(state, strict=True)`, but a mismatch raises DataError listing the
    keys.

    Args:
        model: the module to fill.
        state: the weights.
        source: the file the weights came from (named in the error).
        hint: a sentence on how to fix a mismatch.
    """
    own = model.state_dict()
    missing = sorted(own.keys() - state.keys())
    unexpected = sorted(state.keys() - own.keys())
    shapes = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in sorted(own.keys() & state.keys())
        if tuple(own[k].shape) != tuple(state[k].shape)
    ]
    if missing or unexpected or shapes:
        parts = [
            f"{name} ({len(keys)}): {', '.join(keys[:12])}{' ...' if len(keys) > 12 else ''}"
            for name, keys in (
                ("missing keys", missing),
                ("unexpected keys", unexpected),
                ("shape mismatches", shapes),
            )
            if keys
        ]
        raise DataError(
            source,
            "weights do not fit the model; " + "; ".join(parts) + (f". {hint}" if hint else ""),
        )
    model.load_state_dict(state, strict=True)


def is_tokenizer(spec: Any) -> bool:
    """True when a build spec names a PUMIT tokenizer (`medmim.models.tokenizer.TOKENIZERS`)."""
    from medmim.models.tokenizer import TOKENIZERS

    name = spec.get("name") if isinstance(spec, Mapping) else None
    return name in TOKENIZERS and name not in BACKBONES


def _build(spec: Any) -> nn.Module:
    """A backbone, or a PUMIT tokenizer, from its build spec (ConfigError if neither)."""
    if is_tokenizer(spec):
        from medmim.models.tokenizer import TOKENIZERS

        return TOKENIZERS.build(dict(spec))
    return BACKBONES.build(spec)


def encoder_meta(model: nn.Module, ckpt: Mapping[str, Any]) -> dict[str, Any]:
    """The `encoder.json` contents for `model` trained by the run in `ckpt`."""
    config = ckpt.get("config") or {}
    data = config.get("data") or {}
    recipe = dict(data.get("recipe") or {})
    patch = int(getattr(model, "patch_size", 0)) or None
    meta = {
        "medmim_version": ckpt.get("medmim_version") or __version__,
        "backbone": dict(model.config),
        "method": (config.get("method") or {}).get("name"),
        "patch_size": [patch] * 3 if patch else None,
        "spacing": recipe.get("spacing"),
        "recipe": recipe,
        "in_channels": model.config.get("in_channels", 1),
        "crop_size": data.get("crop_size"),
        "slice_first": data.get("mode") == "native",
        "step": ckpt.get("step"),
    }
    meta["has_cls_attention"] = bool(getattr(model, "has_cls_attention", False))
    if hasattr(model, "swinunetr_kwargs"):
        meta["monai_swinunetr"] = model.swinunetr_kwargs()
    return meta


def _tokenizer_user() -> str:
    """The registered methods that take a `tokenizer` option (PUMIT's stage 2), for messages."""
    from medmim.registry import METHODS, accepted_options

    users = [n for n in METHODS.names() if "tokenizer" in (accepted_options(METHODS.get(n)) or [])]
    return " | ".join(users) or "<stage-2 preset>"


def has_cls_attention(meta: Mapping[str, Any]) -> bool:
    """Whether the exported encoder returns `cls` and `attn` (encoder.json's `has_cls_attention`;
    an export written before that key is rebuilt from its `backbone` spec to ask it).
    """
    if "has_cls_attention" in meta:
        return bool(meta["has_cls_attention"])
    return bool(getattr(_build(meta["backbone"]), "has_cls_attention", False))


def export(source: str | Path, out_dir: str | Path | None = None) -> Path:
    """Write the encoder of a run (or a checkpoint) as safetensors + JSON.

    Args:
        source: a run directory (uses checkpoints/last.ckpt) or a `.ckpt` file.
        out_dir: where to write; default `RUN/export`.

    Returns:
        The output directory, holding `encoder.safetensors` and `encoder.json`.
    """
    ckpt_path = find_checkpoint(source)
    ckpt = read_checkpoint(ckpt_path)
    try:
        model = _build(ckpt["encoder_config"])
    except ConfigError as exc:
        raise DataError(
            ckpt_path, f"field 'encoder_config' does not build a backbone: {exc}"
        ) from exc
    load_state_checked(
        model,
        ckpt["encoder"],
        ckpt_path,
        "The checkpoint's 'encoder' and 'encoder_config' disagree.",
    )
    if out_dir is None:
        run = (
            ckpt_path.parent.parent if ckpt_path.parent.name == "checkpoints" else ckpt_path.parent
        )
        out_dir = run / "export"
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    _atomic(
        out / ENCODER_WEIGHTS, lambda tmp: save_file(tensors, str(tmp), metadata={"format": "pt"})
    )
    text = json.dumps(encoder_meta(model, ckpt), indent=2, default=str) + "\n"
    _atomic(out / ENCODER_META, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return out


def read_export(path: str | Path) -> tuple[dict[str, Any], Path]:
    """The parsed `encoder.json` of an export (a directory or the JSON file) and its
    weights path.
    """
    path = Path(path)
    meta_path = path / ENCODER_META if path.is_dir() else path
    if not meta_path.is_file():
        raise DataError(
            meta_path, "not found; export a run first: medmim export runs/<name> --out DIR"
        )
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(meta_path, f"is not valid JSON ({exc})") from exc
    if not isinstance(meta, dict) or not isinstance(meta.get("backbone"), dict):
        raise DataError(
            meta_path, "has no 'backbone' build spec ({'name': ..., ...}); re-export the run"
        )
    weights = meta_path.with_name(ENCODER_WEIGHTS)
    if not weights.is_file():
        raise DataError(weights, f"missing next to {meta_path.name}; re-export the run")
    return meta, weights


def load_encoder(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """Build an exported encoder from its JSON alone and load its weights strictly.

    Args:
        path: the export directory or its `encoder.json`.
        device: where to put the model.

    Returns:
        The encoder in eval mode and the JSON metadata.
    """
    meta, weights = read_export(path)
    if is_tokenizer(meta["backbone"]):
        raise DataError(
            weights.with_name(ENCODER_META),
            f"holds a PUMIT tokenizer ('{meta['backbone']['name']}'), not an encoder for "
            f"downstream tasks: train stage 2 on it (medmim pretrain --config {_tokenizer_user()} "
            f"method.tokenizer={weights.parent}) and export that run",
        )
    try:
        model = BACKBONES.build(meta["backbone"])
    except ConfigError as exc:
        raise DataError(weights.with_name(ENCODER_META), f"field 'backbone': {exc}") from exc
    load_state_checked(
        model,
        load_file(str(weights)),
        weights,
        "The weights were written for another architecture than 'backbone' in encoder.json.",
    )
    return model.to(device).eval(), meta


def load_into_swinunetr(model: nn.Module, path: str | Path) -> nn.Module:
    """Load an exported Swin encoder into MONAI's `SwinUNETR` (its `swinViT`) with strict checking.

    Args:
        model: a `monai.networks.nets.SwinUNETR` built with `meta["monai_swinunetr"]` (any
            `out_channels`), or a bare MONAI `SwinTransformer`.
        path: the export directory or its `encoder.json`.

    Returns:
        `model`, with its Swin encoder weights replaced.
    """
    meta, weights = read_export(path)
    state = load_file(str(weights))
    swin = {k[len(SWIN_PREFIX) :]: v for k, v in state.items() if k.startswith(SWIN_PREFIX)}
    if not swin:
        raise DataError(
            weights,
            f"holds no '{SWIN_PREFIX}*' weights (backbone '{meta['backbone'].get('name')}'); only "
            "Swin encoders load into SwinUNETR",
        )
    target = getattr(model, "swinViT", model)
    kwargs = meta.get("monai_swinunetr", {})
    load_state_checked(
        target, swin, weights, f"Build the network as SwinUNETR(out_channels=..., **{kwargs})."
    )
    return model


def _atomic(path: Path, write: Any) -> None:
    """Write via a temporary file in the same folder and rename, so a crash never leaves
    half a file.
    """
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)
