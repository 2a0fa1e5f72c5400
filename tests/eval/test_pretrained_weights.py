"""`medmim segment` and `medmim classify` start from exactly the exported weights (issue 12).

Each test exports an encoder whose every floating-point tensor is seeded noise (so a constructor
default, a re-initialisation or a skipped key cannot pass for a loaded one), runs the command's
library entry point up to the moment training would start, and compares the network it built
with the export tensor by tensor (`torch.equal`). Exports whose keys do not fit are refused.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from _downstream_data import TINY_SWIN, TINY_VIT, write_export
from _toy_data import write_medmnist
from safetensors.torch import load_file, save_file
from torch import Tensor

from medmim.errors import ConfigError, DataError
from medmim.eval import classify, segment
from medmim.eval.classify import ClassifyConfig, run_classify
from medmim.eval.probe import FinetuneConfig
from medmim.eval.segment import SegmentConfig, run_segment

SWIN_PREFIX = "swinViT."
#: The Swin encoder's pretraining-only parameters, deliberately not part of the segmenter.
PRETRAINING_ONLY = {"mask_token", "sa", "norm", "pool_norm"}


class Captured(Exception):
    """Raised by a stand-in for the training function once it has seen the model."""


def randomised_export(
    folder: Path, spec: dict, crop=(64, 64, 64), seed: int = 7
) -> dict[str, Tensor]:
    """Export `spec` with every float tensor replaced by seeded noise; returns the weights."""
    write_export(folder, spec, crop=crop)
    gen = torch.Generator().manual_seed(seed)
    weights = {
        k: (torch.randn(v.shape, generator=gen) * 0.1 + 0.3).to(v.dtype)
        if v.is_floating_point()
        else v
        for k, v in load_file(str(folder / "encoder.safetensors")).items()
    }
    save_file(weights, str(folder / "encoder.safetensors"))
    return weights


def assert_same_tensors(got: dict[str, Tensor], want: dict[str, Tensor]) -> None:
    """Same key set and bit-identical tensors (named in the failure)."""
    assert sorted(got) == sorted(want), sorted(set(got) ^ set(want))
    unequal = [k for k in want if not torch.equal(got[k].cpu(), want[k])]
    assert not unequal, f"{len(unequal)} tensors differ from the export: {unequal[:5]}"


def capture(name: str, store: dict):
    """A stand-in for `segment.train` / `classify.finetune` that records its model and stops."""

    def stand_in(model, *args, **kwargs):
        store[name] = model
        raise Captured

    return stand_in


@pytest.fixture(scope="module")
def npz(tmp_path_factory) -> Path:
    return write_medmnist(tmp_path_factory.mktemp("mnist") / "toy.npz", counts=(8, 4, 4))


def test_segment_swin_unetr_holds_exactly_the_exported_swin(
    labelled, tmp_path, monkeypatch
) -> None:
    weights = randomised_export(tmp_path / "export", TINY_SWIN)
    seen: dict = {}
    monkeypatch.setattr(segment, "train", capture("model", seen))
    with pytest.raises(Captured):
        run_segment(
            SegmentConfig(
                encoder=str(tmp_path / "export"),
                data=str(labelled),
                out=str(tmp_path / "seg"),
                max_steps=0,
                device="cpu",
            )
        )
    swin = {k[len(SWIN_PREFIX) :]: v for k, v in weights.items() if k.startswith(SWIN_PREFIX)}
    assert_same_tensors(seen["model"].swinViT.state_dict(), swin)
    # Left out on purpose, and nothing else: the mask token, the SA block and its norms.
    assert {k.split(".")[0] for k in weights if not k.startswith(SWIN_PREFIX)} == PRETRAINING_ONLY


def test_segment_unetr_holds_exactly_the_exported_vit(labelled, tmp_path, monkeypatch) -> None:
    weights = randomised_export(tmp_path / "export", TINY_VIT, crop=(32, 32, 32))
    seen: dict = {}
    monkeypatch.setattr(segment, "train", capture("model", seen))
    with pytest.raises(Captured):
        run_segment(
            SegmentConfig(
                encoder=str(tmp_path / "export"),
                data=str(labelled),
                out=str(tmp_path / "seg"),
                max_steps=0,
                device="cpu",
            )
        )
    assert_same_tensors(seen["model"].encoder.state_dict(), weights)


@pytest.mark.parametrize("spec, crop", [(TINY_SWIN, (32, 32, 32)), (TINY_VIT, (32, 32, 32))])
def test_classify_finetune_starts_from_exactly_the_export(
    npz, tmp_path, monkeypatch, spec, crop
) -> None:
    weights = randomised_export(tmp_path / "export", spec, crop=crop)
    seen: dict = {}
    monkeypatch.setattr(classify, "finetune", capture("net", seen))
    cfg = ClassifyConfig(
        mode="finetune",
        folds=1,
        feature="pooled",
        progress=False,
        device="cpu",
        finetune=FinetuneConfig(epochs=0),
    )
    with pytest.raises(Captured):
        run_classify(str(tmp_path / "export"), npz, tmp_path / "ft", cfg)
    net = seen["net"]
    assert_same_tensors(net.encoder.state_dict(), weights)  # the whole encoder, SA block included
    assert net.encoder.training is False  # `finetune` switches to train mode itself


def test_classify_linear_embeds_with_exactly_the_export(npz, tmp_path, monkeypatch) -> None:
    weights = randomised_export(tmp_path / "export", TINY_SWIN, crop=(32, 32, 32))
    seen: dict = {}
    original = classify.extract_features

    def spy(model, *args, **kwargs) -> np.ndarray:
        seen["model"] = model
        return original(model, *args, **kwargs)

    monkeypatch.setattr(classify, "extract_features", spy)
    run_classify(
        str(tmp_path / "export"),
        npz,
        tmp_path / "lin",
        ClassifyConfig(folds=2, feature="pooled", progress=False, device="cpu"),
    )
    assert_same_tensors(seen["model"].state_dict(), weights)


def test_scratch_of_an_export_shares_no_weights_with_it(npz, tmp_path, monkeypatch) -> None:
    """The control the comparisons above need: `scratch:<export>` is a fresh init."""
    weights = randomised_export(tmp_path / "export", TINY_SWIN, crop=(32, 32, 32))
    seen: dict = {}
    monkeypatch.setattr(classify, "finetune", capture("net", seen))
    cfg = ClassifyConfig(
        mode="finetune", folds=1, progress=False, device="cpu", finetune=FinetuneConfig(epochs=0)
    )
    with pytest.raises(Captured):
        run_classify(f"scratch:{tmp_path / 'export'}", npz, tmp_path / "ft", cfg)
    got = seen["net"].encoder.state_dict()
    same = [k for k, v in weights.items() if v.is_floating_point() and torch.equal(got[k], v)]
    assert not same


def _drop_key(w: dict) -> str:
    key = next(k for k in w if k.startswith(SWIN_PREFIX) and k.endswith("weight"))
    del w[key]
    return key


def _extra_key(w: dict) -> str:
    w["swinViT.layers1.0.extra.weight"] = torch.zeros(3)
    return "swinViT.layers1.0.extra.weight"


def _reshape_key(w: dict) -> str:
    key = "swinViT.patch_embed.proj.weight"
    w[key] = torch.zeros(w[key].shape[0] + 1, *w[key].shape[1:])
    return key


@pytest.mark.parametrize("mutate", [_drop_key, _extra_key, _reshape_key])
@pytest.mark.parametrize("command", ["segment", "classify"])
def test_weights_that_do_not_fit_are_refused(labelled, npz, tmp_path, mutate, command) -> None:
    weights = randomised_export(tmp_path / "export", TINY_SWIN, crop=(64, 64, 64))
    key = mutate(weights)
    save_file(weights, str(tmp_path / "export" / "encoder.safetensors"))
    with pytest.raises(DataError, match=key.replace(".", r"\.")):
        if command == "segment":
            run_segment(
                SegmentConfig(
                    encoder=str(tmp_path / "export"),
                    data=str(labelled),
                    out=str(tmp_path / "seg"),
                    max_steps=0,
                    device="cpu",
                )
            )
        else:
            run_classify(
                str(tmp_path / "export"),
                npz,
                tmp_path / "cls",
                ClassifyConfig(mode="finetune", folds=1, progress=False, device="cpu"),
            )


def test_swin_unetr_refuses_a_swin_weight_it_has_no_place_for() -> None:
    """A weight of the encoder's Swin that SwinUNETR lacks is an error, not a silent drop."""
    from medmim.registry import BACKBONES, DECODERS

    encoder = BACKBONES.build(TINY_SWIN)
    encoder.swinViT.register_parameter("extra_scale", torch.nn.Parameter(torch.ones(3)))
    with pytest.raises(ConfigError, match="extra_scale"):
        DECODERS.build({"name": "swin_unetr", "out_channels": 3}, encoder=encoder)
