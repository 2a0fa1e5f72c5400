"""`has_cls_attention`: one property on every backbone says whether `forward_features` returns
`cls` and `attn`; the export records it in encoder.json for readers that build no model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from medmim.eval.export import encoder_meta, has_cls_attention
from medmim.registry import BACKBONES

SWIN = {"name": "swin", "embed_dim": 12, "depths": [1, 1, 1, 1], "num_heads": [3, 3, 3, 3]}
SPECS = [
    ({**SWIN, "sa_depth": 0}, (1, 1, 32, 32, 32)),
    (SWIN, (1, 1, 32, 32, 32)),
    (
        {
            "name": "vit",
            "embed_dim": 24,
            "depth": 1,
            "num_heads": 2,
            "patch_size": 8,
            "pos_grid": [4, 4, 4],
        },
        (1, 1, 32, 32, 32),
    ),
    (
        {
            "name": "universal_vit",
            "embed_dim": 24,
            "depth": 1,
            "num_heads": 2,
            "pos_embed_shape": [1, 2, 2],
        },
        (1, 1, 16, 32, 32),
    ),
]


def test_every_backbone_class_has_the_property() -> None:
    classes = {BACKBONES.get(n) for n in BACKBONES.names()}
    classes = {getattr(c, "base", c) for c in classes}
    assert all(
        isinstance(getattr(c, "has_cls_attention", None), property)
        for c in classes
        if isinstance(c, type)
    )


@pytest.mark.parametrize(
    "spec, shape", SPECS, ids=["swin_no_sa", "swin_sa", "vit", "universal_vit"]
)
def test_property_matches_the_features_and_the_export(
    spec: dict, shape: tuple, tmp_path: Path
) -> None:
    model = BACKBONES.build(spec).eval()
    with torch.no_grad():
        feats = model.forward_features(torch.rand(shape))
    assert (
        model.has_cls_attention == (feats.get("attn") is not None) == (feats.get("cls") is not None)
    )
    meta = json.loads(json.dumps(encoder_meta(model, {"config": {}}), default=str))
    assert meta["has_cls_attention"] is model.has_cls_attention
    old = {
        k: v for k, v in meta.items() if k != "has_cls_attention"
    }  # an export made before the key
    assert has_cls_attention(old) is has_cls_attention(meta) is model.has_cls_attention
