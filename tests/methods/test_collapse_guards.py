"""Collapse guards shared by the self-distillation methods: multi-crop local views, Sinkhorn-Knopp
targets, the KoLeo term and the health logs (`SelfDistillation`)."""

from __future__ import annotations

import math

import pytest
import torch
from method_helpers import BACKBONE_OF, TINY_SWIN, Recorder, build, make_batch

from medmim.errors import ConfigError
from medmim.losses.koleo import KoLeoLoss
from medmim.registry import BACKBONES

#: per method: global family -> (student head, backbone token), patch family, and the loss term
#: each family's CE is logged under.
GLOBAL = {
    "smart": {"cls": ("head", "cls"), "pooled": ("head_pooled", "pooled")},
    "smit": {"global": ("head_global", "pooled")},
    "ibot": {"cls": ("head", "cls")},
}
TERM = {
    "smart": {"patch": "ampd", "cls": "aitd", "pooled": "gitd"},
    "smit": {"patch": "mpd", "global": "itd"},
    "ibot": {"patch": "patch", "cls": "cls"},
}
#: global and local crop edges: the Swin takes multiples of 32, the tiny ViT of its 8^3 patch.
SIZES = {"smart": (64, 32), "smit": (64, 32), "ibot": (32, 16)}


def with_locals(name: str, batch_size: int = 2, crops: int = 2) -> dict:
    big, small = SIZES[name]
    batch = make_batch(batch_size=batch_size, size=big)
    batch["local_views"] = [torch.rand(batch_size, 1, small, small, small) for _ in range(crops)]
    return batch


def record_losses(method) -> None:
    for loss in method.losses.values():
        loss.global_loss = Recorder(loss.global_loss)
        loss.patch_loss = Recorder(loss.patch_loss)


def recorded(name: str):
    """A seeded tiny method whose losses record their arguments, and a batch with local views."""
    torch.manual_seed(0)
    method = build(name)
    record_losses(method)
    return method, with_locals(name)


@pytest.mark.parametrize("name", sorted(GLOBAL))
def test_local_views_are_extra_student_views_of_the_global_losses_only(name: str) -> None:
    method, batch = recorded(name)
    out = method(batch, step=0)
    out.loss.backward()
    assert math.isfinite(out.loss.item())
    local = method.student["backbone"](torch.cat(batch["local_views"]))
    for family, (head, token) in GLOBAL[name].items():
        student, teacher = method.losses[family].global_loss.args[:2]
        assert len(teacher) == 2 and len(student) == 2 + 2  # 2 global + 2 local: 2 * 3 pairs
        want = method.student[head](local[token]).chunk(2)
        assert torch.allclose(student[2], want[0], atol=1e-5)
        assert torch.allclose(student[3], want[1], atol=1e-5)
    student, teacher, masks = method.losses["patch"].patch_loss.args[:3]
    assert len(student) == len(teacher) == len(masks) == 2  # patch terms: global views only


@pytest.mark.parametrize("name", sorted(GLOBAL))
def test_without_or_with_empty_local_views_nothing_changes(name: str) -> None:
    method, batch = recorded(name)
    batch["local_views"] = []
    method(batch, step=0)
    family = next(iter(GLOBAL[name]))
    assert len(method.losses[family].global_loss.args[0]) == 2


def test_local_crops_the_backbone_cannot_take_are_refused_clearly() -> None:
    method = build("smit")
    batch = make_batch(batch_size=1)
    batch["local_views"] = [torch.rand(1, 1, 16, 16, 16)]
    with pytest.raises(ConfigError, match="multiple of 32"):
        method(batch, step=0)
    batch["local_views"] = [torch.rand(2, 1, 32, 32, 32)]
    with pytest.raises(ValueError, match="samples per crop"):
        method(batch, step=0)


def test_demo_backbones_take_half_size_local_crops() -> None:
    """The demo presets train on 64^3 globals: their backbones take 32^3 local crops."""
    for spec in ({"name": "swin_demo"}, {"name": "vit_demo", "pos_grid": [4, 4, 4]}):
        net = BACKBONES.build(spec)
        with torch.no_grad():
            out = net(torch.rand(1, 1, 32, 32, 32))
        assert out["grid"] == (2, 2, 2) and "cls" in out and "pooled" in out, spec


@pytest.mark.parametrize("name", sorted(BACKBONE_OF))
def test_sinkhorn_centering_works_for_every_method(name: str) -> None:
    method = build(name, centering="sinkhorn")
    assert all(loss.centering == "sinkhorn" for loss in method.losses.values())
    out = method(make_batch(batch_size=2), step=0)
    out.loss.backward()
    assert math.isfinite(out.loss.item())
    assert all(float(loss.center.abs().sum()) == 0.0 for loss in method.losses.values())
    with pytest.raises(ConfigError, match="centering"):
        build(name, centering="centre")


def test_koleo_term_and_its_token() -> None:
    assert build("smart").koleo_token == "cls" and build("ibot").koleo_token == "cls"
    assert build("smit").koleo_token == "pooled"  # SMIT's Swin has no [CLS]
    assert build("smart", semantic_attention=False).koleo_token == "pooled"
    assert build("smart", koleo_token="pooled").koleo_token == "pooled"
    with pytest.raises(ConfigError, match="koleo_token=pooled"):
        build("smit", koleo_token="cls")
    with pytest.raises(ConfigError, match="koleo_token"):
        build("smit", koleo_token="gap")

    method = build("smit", koleo_weight=0.1)
    out = method(make_batch(batch_size=3), step=0)
    logs = out.logs
    want = logs["loss/mip"] + 0.1 * (logs["loss/mpd"] + logs["loss/itd"] + logs["loss/koleo"])
    assert out.loss.item() == pytest.approx(float(want), rel=1e-5)
    assert "loss/koleo" not in build("smit")(make_batch(batch_size=3), step=0).logs

    features = {"pooled": torch.randn(6, 5)}  # 2 views of 3 samples
    by_hand = KoLeoLoss()(features["pooled"][:3]) + KoLeoLoss()(features["pooled"][3:])
    assert torch.allclose(method.koleo(features, 2), by_hand)


@pytest.mark.parametrize("name", sorted(GLOBAL))
def test_koleo_reaches_smart_smit_and_ibot(name: str) -> None:
    out = build(name, koleo_weight=0.1)(make_batch(batch_size=2), step=0)
    assert math.isfinite(float(out.logs["loss/koleo"]))
    out.loss.backward()


@pytest.mark.parametrize("name", sorted(GLOBAL))
def test_health_logs(name: str) -> None:
    out = build(name)(make_batch(batch_size=2), step=0)
    logs = out.logs
    assert logs["distill/ln_k"] == pytest.approx(math.log(64))
    for family, term in TERM[name].items():
        assert float(logs[f"distill/ce/{family}"]) == pytest.approx(float(logs[f"loss/{term}"]))
        assert -1.0 <= float(logs[f"teacher/cos_batch/{family}"]) <= 1.0 + 1e-6
        assert (f"teacher/cos_views/{family}" in logs) == (family in GLOBAL[name])
    single = build(name)(make_batch(batch_size=1), step=0).logs  # B = 1: no pair of samples
    assert not any(k.startswith("teacher/cos_batch/") for k in single)
    assert all(f"distill/ce/{f}" in single for f in TERM[name])


def test_swin_without_sa_smart_takes_local_views() -> None:
    method = build("smart", backbone={**TINY_SWIN, "sa_stage": 2}, semantic_attention=False)
    out = method(with_locals("smart"), step=0)
    assert "loss/aitd" not in out.logs and math.isfinite(out.loss.item())
