"""The Python API behind `medmim.load_encoder` and `medmim.load_into_swinunetr`.

`import medmim` stays cheap: `medmim/__init__.py` imports this module (and torch, MONAI) only
when one of these names is first used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from medmim.errors import ConfigError, DataError
from medmim.eval.embed import Encoder, load_encoder

__all__ = ["Encoder", "load_encoder", "load_into_swinunetr"]


def load_into_swinunetr(path: str | Path, **swinunetr_kwargs: Any) -> nn.Module:
    """A MONAI `SwinUNETR` whose `swinViT` holds an exported Swin encoder's weights.

    The network is built from the export's `monai_swinunetr` arguments (in_channels, depths,
    num_heads, feature_size, window_size, ...; taken from its backbone spec when the
    encoder.json predates them) updated with `swinunetr_kwargs`, then its
    `swinViT` is loaded strictly (`medmim.eval.export.load_into_swinunetr`): a missing,
    unexpected or mis-shaped key is an error that names it.

    Args:
        path: the export folder or its encoder.json.
        **swinunetr_kwargs: `SwinUNETR` arguments; `out_channels` (the number of classes,
            background included) is required, the others override the export's.

    Returns:
        The `monai.networks.nets.SwinUNETR`; its decoder is randomly initialised.

    Raises:
        DataError: the export is not a Swin encoder (e.g. a ViT), or is missing.
        ConfigError: no `out_channels`.

    Example:
        >>> net = medmim.load_into_swinunetr("runs/smart/export", out_channels=14)  # doctest: +SKIP
    """
    from monai.networks.nets import SwinUNETR

    from medmim.eval.export import ENCODER_META, read_export
    from medmim.eval.export import load_into_swinunetr as load_swin

    meta, weights = read_export(path)
    base = meta.get("monai_swinunetr") or _swinunetr_kwargs(meta["backbone"])
    if base is None:
        name = meta["backbone"].get("name")
        raise DataError(
            weights.with_name(ENCODER_META),
            f"holds a '{name}' encoder, not a Swin one, so it has no SwinUNETR form; use "
            "medmim.load_encoder(path) for its features, or `medmim segment --decoder unetr` "
            "to segment with it",
        )
    kwargs = {**base, **swinunetr_kwargs}
    if "out_channels" not in kwargs:
        raise ConfigError(
            "load_into_swinunetr: give out_channels=K (segmentation classes, background included)"
        )
    return load_swin(SwinUNETR(**kwargs), path)


def _swinunetr_kwargs(backbone: dict[str, Any]) -> dict[str, Any] | None:
    """The SwinUNETR arguments of a backbone spec (an export older than `monai_swinunetr`), or
    None when the backbone is not a Swin.
    """
    from medmim.registry import BACKBONES

    model = BACKBONES.build(backbone)
    return model.swinunetr_kwargs() if hasattr(model, "swinunetr_kwargs") else None
