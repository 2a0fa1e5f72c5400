"""`medmim reconstruct`: rebuild the method from a checkpoint, show its MIP head's output."""

from __future__ import annotations

import csv

import nibabel as nib
import numpy as np
import pytest
import torch
from _downstream_data import TINY_SWIN

from medmim.cli.main import main
from medmim.errors import ConfigError
from medmim.eval.reconstruct import ReconstructConfig, run_reconstruct, scores
from medmim.eval.report import read_results
from medmim.methods.base import PretrainMethod
from medmim.registry import METHODS
from medmim.types import StepOutput, TrainContext

SMIT = {"name": "smit", "out_dim": 32, "hidden_dim": 16, "bottleneck_dim": 8}


def write_run(tmp_path, images, method_spec, model_spec=TINY_SWIN, step: int = 7):
    """A run directory with checkpoints/last.ckpt in the loop's layout."""
    context = TrainContext(crop_size=(32, 32, 32))
    method = METHODS.build(method_spec, backbone=dict(model_spec), context=context)
    data = {
        "source": str(images),
        "crop_size": [32, 32, 32],
        "cache_dir": str(tmp_path / "cache"),
        "recipe": {"spacing": None, "window": [-200.0, 300.0]},
    }
    ckpt = {
        "method": method.state_dict(),
        "config": {"method": method_spec, "model": model_spec, "data": data},
        "encoder": method.encoder.state_dict(),
        "encoder_config": method.encoder.config,
        "step": step,
        "medmim_version": "test",
    }
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    torch.save(ckpt, run / "checkpoints" / "last.ckpt")
    return run, method


def test_reconstruct_a_smit_run(labelled, tmp_path) -> None:
    run, method = write_run(tmp_path, labelled.parent / "images", SMIT)
    out = tmp_path / "rec"
    metrics = run_reconstruct(ReconstructConfig(run=str(run), out=str(out), num=2))
    rows = list(csv.DictReader(open(out / "samples.csv", encoding="utf-8")))
    assert [r["sample"] for r in rows] == ["0", "1"]
    # SMIT masks 70 % of the 2x2x2 cells, rounded up: 6 of 8
    assert all(float(r["masked_fraction"]) == pytest.approx(6 / 8) for r in rows)
    assert metrics["recon/mse_masked"]["mean"] >= 0
    for name in ("masked", "recon", "target"):
        assert nib.load(out / "volumes" / f"sample_0_{name}.nii.gz").shape == (32, 32, 32)
    record = read_results(out / "results.json")
    assert record["command"] == "reconstruct" and record["encoder"]["method"] == "smit"
    assert record["config"]["step"] == 7
    assert (out / "figures/reconstruction.png").stat().st_size > 0


def test_scores_known_values() -> None:
    view = np.zeros((2, 2, 2))
    recon = np.full((2, 2, 2), 0.5)
    mask = np.zeros((2, 2, 2))
    mask[0] = 1
    recon[1] = 0.0  # visible half reconstructed exactly
    s = scores({"view": view, "recon": recon, "mask": mask})
    assert s["mse_masked"] == pytest.approx(0.25) and s["l1_masked"] == pytest.approx(0.5)
    assert s["mse_all"] == pytest.approx(0.125) and s["masked_fraction"] == 0.5


class NoVisualsMethod(PretrainMethod):
    """A method without a reconstruction head (reports no visuals)."""

    config = {"name": "none", "in_channels": 1}

    def __init__(self, backbone: dict, context: TrainContext | None = None) -> None:
        super().__init__(context)
        self.weight = torch.nn.Parameter(torch.zeros(1))

    @property
    def encoder(self) -> torch.nn.Module:
        return self

    def forward(self, batch, step) -> StepOutput:
        return StepOutput(loss=self.weight.sum())


@pytest.fixture
def no_visuals_method():
    METHODS.register("test_no_visuals")(NoVisualsMethod)
    yield {"name": "test_no_visuals"}
    METHODS._entries.pop("test_no_visuals")  # keep registry contract tests unaffected


def test_a_method_without_a_mip_head_is_refused(labelled, tmp_path, no_visuals_method) -> None:
    run, _ = write_run(tmp_path, labelled.parent / "images", no_visuals_method)
    with pytest.raises(ConfigError, match="no masked-image-prediction head"):
        run_reconstruct(ReconstructConfig(run=str(run), out=str(tmp_path / "o"), num=1))


def test_reconstruct_cli(labelled, tmp_path, capsys) -> None:
    run, _ = write_run(tmp_path, labelled.parent / "images", SMIT)
    rc = main(["reconstruct", str(run), "--out", str(tmp_path / "cli"), "--num", "1"])
    assert rc == 0 and "recon/mse_masked" in capsys.readouterr().out
    assert main(["reconstruct", str(tmp_path / "nope"), "--out", str(tmp_path / "x")]) == 2
