"""`medmim classify` end to end on tiny data: linear and fine-tune, folds, fractions, outputs."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from _toy_data import write_crops_csv, write_medmnist, write_scratch_spec

from medmim.errors import ConfigError
from medmim.eval.classify import ClassifyConfig, run_classify
from medmim.eval.probe import FinetuneConfig, linear_probe


def read_rows(path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def npz(tmp_path_factory) -> object:
    return write_medmnist(tmp_path_factory.mktemp("mnist") / "nodule.npz", counts=(24, 8, 12))


def test_linear_probe_with_folds_and_fractions(tmp_path, npz) -> None:
    spec = write_scratch_spec(tmp_path / "arch")
    cfg = ClassifyConfig(folds=2, fractions=[0.5, 1.0], feature="pooled", progress=False)
    metrics = run_classify(f"scratch:{spec}", npz, tmp_path / "out", cfg)
    out = tmp_path / "out"
    rows = read_rows(out / "folds.csv")
    assert len(rows) == 2 * 2 * 2  # fractions x folds x (val, test)
    # npz: the 12 test volumes are the test set; train+val (32) are split in 2 folds of 16.
    assert {(r["fraction"], r["part"], r["n"], r["n_train"]) for r in rows} == {
        ("0.5", "val", "16", "8"),
        ("0.5", "test", "12", "8"),
        ("1.0", "val", "16", "16"),
        ("1.0", "test", "12", "16"),
    }
    assert len(read_rows(out / "predictions.csv")) == 2 * 2 * (16 + 12)
    assert metrics["test/auc"]["mean"] > 0.9  # the toy classes differ by a bright cube
    assert set(metrics) >= {"test/auc", "test/auc@0.5", "val/recall", "val/precision@0.5"}
    record = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert record["command"] == "classify" and record["encoder"]["method"] == "scratch"
    assert record["config"]["input_size"] == [32, 32, 32]
    assert [f["path"] for f in record["figures"]] == ["figures/roc.png", "figures/fractions.png"]
    for item in record["tables"] + record["figures"]:
        assert (out / item["path"]).stat().st_size > 0
    summary = (out / "summary.md").read_text(encoding="utf-8")
    assert "| 0.5 | test |" in summary and "±" in summary


def test_finetune_keeps_the_best_epoch(tmp_path, npz, vit_export) -> None:
    cfg = ClassifyConfig(
        mode="finetune",
        folds=1,
        feature="cls",
        size=[32] * 3,
        progress=False,
        finetune=FinetuneConfig(epochs=2, batch_size=8, lr=1e-3),
    )
    metrics = run_classify(vit_export, npz, tmp_path / "ft", cfg)
    rows = read_rows(tmp_path / "ft" / "folds.csv")
    # folds=1 on an npz: the official split (24 train / 8 val / 12 test).
    assert [(r["part"], r["n"], r["n_train"]) for r in rows] == [
        ("val", "8", "24"),
        ("test", "12", "24"),
    ]
    assert rows[0]["best_epoch"] in ("0", "1")
    assert float(rows[0]["best_val_auc"]) == pytest.approx(float(rows[0]["auc"]))
    assert np.isfinite(metrics["test/auc"]["mean"]) and metrics["test/auc"]["std"] == 0.0
    record = json.loads((tmp_path / "ft" / "results.json").read_text(encoding="utf-8"))
    assert record["encoder"]["pretrained"] is True and record["config"]["mode"] == "finetune"


def test_multiclass_csv_with_a_split_column(tmp_path) -> None:
    csv_path = write_crops_csv(tmp_path / "data", n=12, with_split=True)
    spec = write_scratch_spec(tmp_path / "arch")
    cfg = ClassifyConfig(folds=2, feature="pooled", recipe="smart", progress=False)
    metrics = run_classify(f"scratch:{spec}", csv_path, tmp_path / "out", cfg)
    rows = read_rows(tmp_path / "out" / "folds.csv")
    assert {r["n"] for r in rows if r["part"] == "test"} == {"6"}  # the CSV's 'test' rows
    preds = read_rows(tmp_path / "out" / "predictions.csv")
    assert set(preds[0]) >= {"prob_benign", "prob_malignant", "prob_unsure"}
    assert 0.0 <= metrics["test/auc"]["mean"] <= 1.0
    assert json.loads((tmp_path / "out" / "results.json").read_text(encoding="utf-8"))["config"][
        "classes"
    ] == [
        "benign",
        "malignant",
        "unsure",
    ]


def test_linear_probe_handles_a_class_missing_from_training() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(6, 3)), np.array([0, 0, 0, 2, 2, 2])
    (probs,) = linear_probe(x, y, [rng.normal(size=(4, 3))], num_classes=3)
    assert probs.shape == (4, 3) and np.all(probs[:, 1] == 0)
    np.testing.assert_allclose(probs.sum(1), 1.0)


def test_bad_mode_is_rejected(tmp_path, npz) -> None:
    with pytest.raises(ConfigError, match="--mode knn"):
        run_classify("scratch:swin_demo", npz, tmp_path, ClassifyConfig(mode="knn"))


def test_predict_on_an_empty_set_keeps_the_class_axis() -> None:
    import torch
    from torch.utils.data import DataLoader

    from medmim.eval.probe import ClassifierNet, predict

    net = ClassifierNet(torch.nn.Identity(), "pooled", 4, 3)
    empty = DataLoader(torch.utils.data.TensorDataset(torch.zeros(0, 4), torch.zeros(0)))
    assert predict(net, empty, torch.device("cpu")).shape == (0, 3)


def test_one_class_csv_is_refused_by_name(tmp_path) -> None:
    from medmim.errors import DataError

    csv_path = write_crops_csv(tmp_path / "data", n=4, names=("benign",))
    spec = write_scratch_spec(tmp_path / "arch")
    with pytest.raises(
        DataError, match=r"every volume has the label 'benign': classification needs at least two"
    ):
        run_classify(
            f"scratch:{spec}", csv_path, tmp_path / "out", ClassifyConfig(folds=2, progress=False)
        )
