"""`medmim segment`: splits, metrics against known values, end to end with geometry checks."""

from __future__ import annotations

import csv
import json

import nibabel as nib
import numpy as np
import pytest
from _downstream_data import NATIVE

from medmim.cli.main import main
from medmim.errors import ConfigError, DataError
from medmim.eval.report import read_results
from medmim.eval.segment import SegmentConfig, run_segment
from medmim.eval.segment_data import label_names, load_cases, make_splits
from medmim.eval.segment_eval import case_metrics, reference_labels


def test_case_metrics_known_values() -> None:
    ref = np.zeros((12, 12, 12), int)
    pred = np.zeros_like(ref)
    ref[2:6, 2:6, 2:6] = 1  # 64 voxels
    pred[2:7, 2:6, 2:6] = 1  # 80 voxels, one extra slab along axis 0
    ref[8:10, 8:10, 8:10] = 2  # class 2 missed by the prediction
    m = case_metrics(pred, ref, 3, spacing=(2.0, 1.0, 1.0))
    assert m["dice"][0] == pytest.approx(2 * 64 / (64 + 80))
    assert m["hd95"][0] == pytest.approx(2.0)  # the extra slab lies one voxel = 2 mm away
    assert m["dice"][1] == 0.0
    assert np.isnan(m["hd95"][1]) and np.isnan(m["asd"][1])  # no predicted surface: NaN, not inf


def test_splits_hold_out_validation_and_subsample_training(tmp_path) -> None:
    entries = [{"image": f"i{k}.nii.gz", "label": f"l{k}.nii.gz"} for k in range(10)]
    path = tmp_path / "d.json"
    path.write_text(json.dumps({"training": entries}), encoding="utf-8")
    full = make_splits(path, val_fraction=0.2, seed=1)
    assert len(full.train) == 8 and len(full.val) == 2 and full.test == []
    assert {r.image for r in full.train}.isdisjoint({r.image for r in full.val})
    quarter = make_splits(path, train_fraction=0.25, val_fraction=0.2, seed=1)
    assert len(quarter.train) == 2 and {r.image for r in quarter.val} == {r.image for r in full.val}
    assert {r.image for r in quarter.train} <= {r.image for r in full.train}
    with pytest.raises(ConfigError, match="train-fraction"):
        make_splits(path, train_fraction=0.0)


def test_label_names_come_from_the_datalist_and_are_checked(labelled) -> None:
    cases = load_cases(make_splits(labelled).train[:1], NATIVE)
    assert label_names(labelled, None, cases) == ["liver", "spleen"]
    assert label_names(labelled, ["a", "b", "c"], cases) == ["a", "b", "c"]
    with pytest.raises(DataError, match="label value 2 but only 1 classes"):
        label_names(labelled, ["a"], cases)


def test_reference_labels_must_fit_the_named_classes(labelled) -> None:
    case = load_cases(make_splits(labelled).val, NATIVE)[0]
    assert reference_labels(case, 3).max() == 2
    with pytest.raises(DataError, match=r"case_3.nii.gz: label values 0..2 outside 0..1"):
        reference_labels(case, 2)


def _check_prediction(pred_path, image_path) -> np.ndarray:
    pred, image = nib.load(pred_path), nib.load(image_path)
    assert pred.shape == image.shape
    np.testing.assert_allclose(pred.affine, image.affine, atol=1e-5)
    return np.asarray(pred.dataobj)


@pytest.mark.slow
def test_segment_end_to_end_vit(labelled, vit_export, tmp_path) -> None:
    out = tmp_path / "seg"
    cfg = SegmentConfig(
        encoder=str(vit_export),
        data=str(labelled),
        out=str(out),
        max_steps=2,
        num_samples=1,
        feature_size=8,
    )
    metrics = run_segment(cfg)
    root = labelled.parent
    # validation (case_3) and test (case_4) predictions, in the non-RAS anisotropic input geometry
    for name in ("case_3", "case_4"):
        seg = _check_prediction(
            out / "predictions" / f"{name}_seg.nii.gz", root / f"images/{name}.nii.gz"
        )
        assert seg.dtype == np.uint8 and set(np.unique(seg)) <= {0, 1, 2}
    rows = list(csv.DictReader(open(out / "per_case.csv", encoding="utf-8")))
    assert [(r["case"], r["class"]) for r in rows] == [("case_3", "liver"), ("case_3", "spleen")]
    assert 0.0 <= metrics["val/dice"]["mean"] <= 1.0
    assert metrics["val/dice"]["mean"] == pytest.approx(np.mean([float(r["dice"]) for r in rows]))
    record = read_results(out / "results.json")
    assert record["command"] == "segment" and record["encoder"]["method"] == "smart"
    assert record["config"]["decoder"] == "unetr" and record["config"]["roi"] == [32, 32, 32]
    assert len(open(out / "train_log.jsonl", encoding="utf-8").read().splitlines()) == 2
    assert (out / "figures/overlays.png").stat().st_size > 0
    assert (out / "segmenter.safetensors").is_file()


@pytest.mark.slow
def test_segment_swin_unetr_one_step(labelled, swin_export, tmp_path) -> None:
    root = labelled.parent
    entries = json.loads(labelled.read_text(encoding="utf-8"))

    def absolute(entry: dict) -> dict:
        return {field: str(root / path) for field, path in entry.items()}

    small = tmp_path / "small.json"  # one training and one validation case, no class names
    small.write_text(
        json.dumps(
            {
                "training": [absolute(entries["training"][0])],
                "validation": [absolute(entries["validation"][0])],
            }
        ),
        encoding="utf-8",
    )
    out = tmp_path / "seg_swin"
    metrics = run_segment(
        SegmentConfig(
            encoder=str(swin_export), data=str(small), out=str(out), max_steps=1, num_samples=1
        )
    )
    assert (
        json.loads((out / "segmenter.json").read_text(encoding="utf-8"))["decoder"]["name"]
        == "swin_unetr"
    )
    _check_prediction(out / "predictions/case_3_seg.nii.gz", root / "images/case_3.nii.gz")
    assert not (out / "predictions/case_4_seg.nii.gz").exists()
    assert set(metrics) >= {
        "val/dice",
        "val/hd95",
        "val/asd",
        "val/dice/class_1",
        "val/asd/class_2",
    }


def test_segment_rejects_a_bad_roi_for_swin(labelled, swin_export, tmp_path) -> None:
    with pytest.raises(ConfigError, match="multiples of 32 and at least 64"):
        run_segment(
            SegmentConfig(
                encoder=str(swin_export),
                data=str(labelled),
                out=str(tmp_path / "x"),
                roi=[48, 48, 48],
                max_steps=1,
            )
        )


@pytest.mark.slow
def test_segment_cli(labelled, vit_export, tmp_path, capsys) -> None:
    out = tmp_path / "cli"
    rc = main(
        [
            "segment",
            "--encoder",
            str(vit_export),
            "--data",
            str(labelled),
            "--out",
            str(out),
            "--max-steps",
            "1",
            "--num-samples",
            "1",
            "--feature-size",
            "8",
            "--labels",
            "a,b",
            "--roi",
            "32",
            "--overlap",
            "0.25",
        ]
    )
    assert rc == 0 and "val/dice" in capsys.readouterr().out
    classes = [r["class"] for r in csv.DictReader(open(out / "per_class.csv", encoding="utf-8"))]
    assert classes == ["a", "b"]
    assert read_results(out / "results.json")["config"]["labels"] == ["a", "b"]


def test_segment_cli_reports_bad_data(tmp_path, vit_export, capsys) -> None:
    rc = main(
        [
            "segment",
            "--encoder",
            str(vit_export),
            "--data",
            str(tmp_path / "missing.json"),
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert rc == 2 and "missing.json" in capsys.readouterr().err
