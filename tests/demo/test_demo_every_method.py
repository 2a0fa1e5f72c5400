"""The demo for every registered method: its plan, the run config each pretraining stage
resolves (the preset's own `demo:` section applied at the demo's crop), and its report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medmim.config import load_config, to_dict
from medmim.demo.config import PresetDemo, demo_config, preset_demo
from medmim.demo.report import write_demo_report
from medmim.demo.study import SCRATCH, plan, pretrain_overrides
from medmim.errors import ConfigError
from medmim.registry import METHODS
from medmim.train.config import RunConfig

PACKAGE_METHODS = [
    n for n in METHODS.names() if METHODS.get(n).__module__.startswith("medmim.methods.")
]


@pytest.mark.parametrize("method", PACKAGE_METHODS)
@pytest.mark.parametrize("crop", [32, 64])
def test_plan_and_resolved_config_of_every_method(method: str, crop: int, tmp_path: Path) -> None:
    cfg = demo_config("default", [f"methods=[{method}]", f"crop={crop}"])
    stages = [name for name, _, _ in plan(cfg, tmp_path)]
    assert stages[:2] == ["data", f"pretrain/{method}"] and f"linear/{SCRATCH}" in stages
    run = to_dict(
        load_config(
            f"{method}_demo", pretrain_overrides(cfg, method, tmp_path, False), schema=RunConfig
        )
    )
    assert run["method"]["name"] == method and "demo" not in run
    assert (
        run["data"]["crop_size"] == [crop] * 3 and run["train"]["max_steps"] == cfg.pretrain_steps
    )
    for key, cell in preset_demo(f"{method}_demo").crop_grid.items():  # the ViTs' position grid
        section, option = key.split(".")
        assert run[section][option] == [crop // cell] * 3
    if (
        "pumit" not in method
    ):  # PUMIT stage 2 needs a trained tokenizer; its config is checked above
        from medmim.types import TrainContext

        context = TrainContext(
            steps_per_epoch=1, total_steps=cfg.pretrain_steps, crop_size=(crop,) * 3
        )
        encoder = METHODS.build(run["method"], backbone=run["model"], context=context).encoder
        assert encoder.mask_grid((1, 1, crop, crop, crop))  # the crop fits the masking grid


def test_swin_presets_mask_on_the_stage_2_grid(tmp_path: Path) -> None:
    """The two Swin methods of the default study mask one cell per 8^3 voxels."""
    cfg = demo_config()
    for method in cfg.methods:
        run = to_dict(
            load_config(
                f"{method}_demo", pretrain_overrides(cfg, method, tmp_path, False), schema=RunConfig
            )
        )
        assert run["model"]["sa_stage"] == 2 and "sa_stage" not in run["method"]


def test_preset_demo_section_is_checked(tmp_path: Path) -> None:
    assert PresetDemo(["a=1"], {"model.pos_grid": 16}).for_crop(64) == [
        "a=1",
        "model.pos_grid=[4,4,4]",
    ]
    assert preset_demo("smart").for_crop(32) == []  # a preset without a demo section
    bad = tmp_path / "mine_demo.yaml"
    bad.write_text("base: smart_demo\ndemo:\n  crop_grd: {model.pos_grid: 16}\n", encoding="utf-8")
    with pytest.raises(
        ConfigError, match="(?i)preset .*mine_demo.yaml', section 'demo'.*did you mean 'crop_grid'"
    ):
        preset_demo(str(bad))


def fake_run(out: Path, method: str, steps: int = 10) -> None:
    """A finished pretraining run of `method`: config.yaml and metrics.jsonl with every term it
    declares, plus the distillation keys its self-distillation families would log."""
    run = out / "pretrain" / method
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(
        f"method:\n  name: {method}\n  out_dim: 64\n", encoding="utf-8"
    )
    terms = METHODS.get(method).loss_terms
    rows = [
        {
            "step": s,
            **{f"loss/{t}": 1.0 / s for t in terms},
            **(
                {"distill/ce/patch": 4.0, "teacher/entropy/patch": 0.5, "distill/ln_k": 4.16}
                if "distillation" in terms.values()
                else {}
            ),
        }
        for s in range(1, steps + 1)
    ]
    (run / "metrics.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8"
    )


def test_report_of_every_method(tmp_path: Path) -> None:
    cfg = demo_config("tiny", [f"methods=[{','.join(PACKAGE_METHODS)}]"])
    for method in PACKAGE_METHODS:
        fake_run(tmp_path, method)
    report = write_demo_report(cfg, tmp_path, "run log", "machine").read_text(encoding="utf-8")
    for method in PACKAGE_METHODS:
        for term, kind in METHODS.get(method).loss_terms.items():
            assert f"| {method.upper()} | {term.upper()} | {kind} | 1.000 |" in report, (
                method,
                term,
            )
        distils = "distillation" in METHODS.get(method).loss_terms.values()
        assert (f"| {method.upper()} | patch |" in report) == distils


@pytest.mark.parametrize("method", [m for m in PACKAGE_METHODS if "pumit" not in m])
def test_tiny_budget_shrinks_every_method_from_its_own_preset(method: str, tmp_path: Path) -> None:
    """The tiny budget's network sizes come from each preset's `demo.tiny` (no architecture
    in demo/): every self-distillation method gets one, and it is much smaller."""
    from medmim.types import TrainContext

    assert preset_demo(f"{method}_demo").tiny, f"{method}_demo has no demo.tiny sizes"
    sizes = {}
    for budget in ("default", "tiny"):
        cfg = demo_config(budget, [f"methods=[{method}]", "crop=32"])
        run = to_dict(
            load_config(
                f"{method}_demo", pretrain_overrides(cfg, method, tmp_path, False), schema=RunConfig
            )
        )
        context = TrainContext(steps_per_epoch=1, total_steps=2, crop_size=(32, 32, 32))
        built = METHODS.build(run["method"], backbone=run["model"], context=context)
        sizes[budget] = sum(p.numel() for p in built.parameters())
    assert sizes["tiny"] < sizes["default"] / 2, sizes  # (SMART: the MIP head stays 6 M)
