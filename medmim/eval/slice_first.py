"""Run a slice-first encoder (PUMIT's universal ViT) on the downstream commands' RAS volumes.

A `data.mode=native` run (PUMIT) trains on crops whose slice axis comes first, (C, D, H, W):
`medmim.data.pumit.slice_first` moves it there, which for a RAS-oriented axial scan is
(X, Y, Z) -> (Z, X, Y). Its export records `"slice_first": true`, its `crop_size` is in that
(D, H, W) order and its `"spacing"` is null (no resampling). The downstream commands read every
scan through the recipe into RAS order (C, X, Y, Z), whose slice axis for axial CT and MR is Z.

`SliceFirstEncoder` moves Z to the front before the encoder, (X, Y, Z) -> (Z, X, Y) as in
pretraining, and every output map back, so the downstream code sees the backbone contract in
the volumes' own order: `grid`, `bottleneck` and `features` are (x, y, z), `patch` and `attn`
row-major over (x, y, z). `slice_first_view` also reorders the export's crop size, (D, H, W)
-> (H, W, D), since `--size` / `--roi` defaults are read in (X, Y, Z) order.

Spacing: the downstream commands pass none, so the universal ViT runs at DA 0 (isotropic 16^3
patches), as PUMIT's own MedMNIST fine-tuning does (`DA=0`), and UNETR's cubic-patch decoder
applies. A caller that does pass `spacing` gives it in the volumes' order (s_X, s_Y, s_Z); it is
reordered to the model's (s_D, s_H, s_W) = (s_Z, s_X, s_Y). Scans acquired along X or Y
(sagittal / coronal MR) are still taken as slice axis Z here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from medmim.types import Features

#: (B, C, X, Y, Z) -> (B, C, Z, X, Y), and back.
TO_SLICE_FIRST = (0, 1, 4, 2, 3)
FROM_SLICE_FIRST = (0, 1, 3, 4, 2)


class SliceFirstEncoder(nn.Module):
    """A backbone trained on slice-first crops, seen as a backbone on (X, Y, Z) volumes.

    Args:
        encoder: the slice-first backbone (its weights stay under `.encoder`).

    Example:
        >>> from medmim.models.universal_vit import UniversalViT
        >>> enc = SliceFirstEncoder(UniversalViT(embed_dim=24, depth=1, num_heads=2))
        >>> enc.forward_features(torch.randn(1, 1, 32, 48, 16))["grid"]
        (2, 3, 1)
    """

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    @property
    def config(self) -> dict[str, Any]:
        """The wrapped backbone's build spec (`BACKBONES.build` gives the bare backbone)."""
        return self.encoder.config

    def mask_grid(self, input_shape: Sequence[int]) -> tuple[int, int, int]:
        """Token grid (x, y, z) of an input (..., X, Y, Z)."""
        *_, sx, sy, sz = (int(s) for s in input_shape)
        d, h, w = self.encoder.mask_grid((sz, sx, sy))
        return h, w, d

    def forward_features(
        self, x: Tensor, mask: Tensor | None = None, spacing: Any = None
    ) -> Features:
        """The wrapped encoder's `forward_features` on `x` with its slice axis moved first.

        Args:
            x: (B, C, X, Y, Z).
            mask: (B, x, y, z) bool on `mask_grid(x.shape)`, True = masked.
            spacing: None (DA 0), or (3,) / (B, 3) in (s_X, s_Y, s_Z) order.

        Returns:
            The backbone contract (`medmim.types`) in (x, y, z) order.
        """
        kwargs = {}
        if spacing is not None:
            kwargs["spacing"] = torch.as_tensor(spacing, dtype=torch.float64)[..., [2, 0, 1]]
        if mask is not None:
            mask = mask.permute(0, 3, 1, 2)
        out = self.encoder.forward_features(x.permute(*TO_SLICE_FIRST), mask, **kwargs)
        d, h, w = out["grid"]

        def tokens(t: Tensor) -> Tensor:  # (B, d*h*w, ...) -> (B, h*w*d, ...)
            order = (0, 2, 3, 1, *range(4, t.ndim + 2))
            return t.unflatten(1, (d, h, w)).permute(*order).flatten(1, 3)

        result: Features = {**out, "grid": (h, w, d)}  # type: ignore[typeddict-item]
        for key in ("patch", "attn"):
            if key in out:
                result[key] = tokens(out[key])  # type: ignore[literal-required]
        if "bottleneck" in out:
            result["bottleneck"] = out["bottleneck"].permute(*FROM_SLICE_FIRST)
        if "features" in out:
            result["features"] = [m.permute(*FROM_SLICE_FIRST) for m in out["features"]]
        return result

    def forward(self, x: Tensor, mask: Tensor | None = None, spacing: Any = None) -> Features:
        """Same as `forward_features`."""
        return self.forward_features(x, mask, spacing)


def slice_first_view(model: nn.Module, meta: dict[str, Any]) -> tuple[nn.Module, dict[str, Any]]:
    """`(SliceFirstEncoder(model), meta with crop_size in (X, Y, Z) order)` for an export
    with `"slice_first": true`; `(model, meta)` unchanged otherwise.
    """
    if not meta.get("slice_first"):
        return model, meta
    crop = meta.get("crop_size")
    if crop is not None and len(crop) == 3:
        meta = {**meta, "crop_size": [crop[1], crop[2], crop[0]]}
    return SliceFirstEncoder(model), meta
