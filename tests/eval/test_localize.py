"""`medmim localize`: percentile threshold, largest component, Dice, end to end."""

from __future__ import annotations

import csv
import json

import nibabel as nib
import numpy as np
import pytest

from medmim.cli.main import main
from medmim.errors import ConfigError, DataError
from medmim.eval.localize import (
    LocalizeConfig,
    dice,
    largest_component_mask,
    run_localize,
    threshold_attention,
)
from medmim.eval.report import read_results


def test_percentile_threshold_keeps_the_top_tenth_inside_the_field_of_view() -> None:
    attn = np.zeros((10, 10, 12))
    attn[:, :, :10] = np.arange(1, 1001).reshape(10, 10, 10)  # 1000 voxels in view, 200 outside
    pred, t = threshold_attention(attn, 90.0)
    assert t == pytest.approx(np.percentile(np.arange(1, 1001), 90))
    assert pred.sum() == 100 and pred[:, :, 10:].sum() == 0 and pred[attn > 900.1].all()
    pred, _ = threshold_attention(attn, 50.0)
    assert pred.sum() == 500
    with pytest.raises(ConfigError, match="percentile 100"):
        threshold_attention(attn, 100)


def test_largest_component() -> None:
    mask = np.zeros((12, 12, 12), bool)
    mask[1:4, 1:4, 1:4] = True  # 27 voxels
    mask[6:11, 6:11, 6:8] = True  # 50 voxels
    mask[4, 4, 4] = True  # touches the first blob diagonally: 26-connected -> 28
    keep = largest_component_mask(mask)
    assert keep.sum() == 50 and keep[8, 8, 7] and not keep[2, 2, 2]
    assert largest_component_mask(np.zeros((3, 3, 3), bool)).sum() == 0
    attn = mask.astype(float) + 0.01  # everything in view; top 77 voxels are both blobs + bridge
    pred, _ = threshold_attention(attn, 100 * (1 - 78 / attn.size), largest_component=True)
    assert pred.sum() == 50


def test_dice_known_values() -> None:
    a = np.zeros((4, 4, 4), bool)
    b = np.zeros((4, 4, 4), bool)
    a[:2], b[1:3] = True, True  # 32 voxels each, 16 shared
    assert dice(a, b) == pytest.approx(0.5)
    assert dice(a, a) == pytest.approx(1.0)
    assert np.isnan(dice(a, np.zeros_like(a)))  # empty reference: undefined


def test_localize_reads_maps_from_attention_output(labelled, tmp_path) -> None:
    """Maps that rank the tumor highest give Dice 1 at the right percentile."""
    root, maps = labelled.parent, tmp_path / "att"
    (maps / "attention").mkdir(parents=True)
    fractions = []
    for k in range(3):
        tumor = nib.load(root / f"labels/case_{k}_tumor.nii.gz")
        t = np.asarray(tumor.dataobj) > 0
        attn = np.where(t, 5.0, 1.0).astype(np.float32)
        nib.save(nib.Nifti1Image(attn, tumor.affine), str(maps / f"attention/case_{k}_attn.nii.gz"))
        fractions.append(t.mean())
    (maps / "results.json").write_text(
        json.dumps({"encoder": {"spec": "x", "method": "m"}, "config": {"recipe_used": None}}),
        encoding="utf-8",
    )
    # the tumors have the same size: one percentile fits all
    assert max(fractions) == pytest.approx(min(fractions))
    out = tmp_path / "loc"
    metrics = run_localize(
        LocalizeConfig(
            data=str(labelled),
            out=str(out),
            attention=str(maps),
            mask_key="tumor",
            percentile=100 * (1 - fractions[0]) - 1e-6,
            max_figures=1,
        )
    )
    assert metrics["localize/dice"] == {"mean": pytest.approx(1.0), "std": pytest.approx(0.0)}
    assert metrics["localize/pointing"] == 1.0
    rows = list(csv.DictReader(open(out / "localize.csv", encoding="utf-8")))
    assert len(rows) == 3 and all(
        int(r["predicted_voxels"]) == int(r["reference_voxels"]) for r in rows
    )
    saved = nib.load(out / "masks/case_0_loc.nii.gz")
    np.testing.assert_array_equal(
        np.asarray(saved.dataobj), np.asarray(nib.load(root / "labels/case_0_tumor.nii.gz").dataobj)
    )
    np.testing.assert_allclose(
        saved.affine, nib.load(root / "images/case_0.nii.gz").affine, atol=1e-5
    )
    record = read_results(out / "results.json")
    assert record["command"] == "localize" and record["encoder"]["method"] == "m"


def test_localize_errors(labelled, tmp_path) -> None:
    with pytest.raises(ConfigError, match="--encoder"):
        run_localize(LocalizeConfig(data=str(labelled), out=str(tmp_path / "a")))
    with pytest.raises(DataError, match="not an output folder"):
        run_localize(
            LocalizeConfig(data=str(labelled), out=str(tmp_path / "b"), attention=str(tmp_path))
        )


def test_localize_cli_on_phantom_tumors(phantoms, coarse_vit_export, tmp_path, capsys) -> None:
    out = tmp_path / "cli"
    rc = main(
        [
            "localize",
            "--encoder",
            str(coarse_vit_export),
            "--data",
            str(phantoms / "tumors.json"),
            "--out",
            str(out),
            "--largest-component",
            "--max-figures",
            "1",
        ]
    )
    assert rc == 0 and "localize/dice" in capsys.readouterr().out
    tumors = json.loads((phantoms / "tumors.json").read_text(encoding="utf-8"))["training"]
    rows = list(csv.DictReader(open(out / "localize.csv", encoding="utf-8")))
    assert len(rows) == len(tumors) >= 1
    for row, entry in zip(rows, tumors):
        assert 0.0 <= float(row["dice"]) <= 1.0 and int(row["reference_voxels"]) > 0
        saved = nib.load(out / "masks" / f"{row['case']}_loc.nii.gz")
        image = nib.load(phantoms / entry["image"])
        assert saved.shape == image.shape
        np.testing.assert_allclose(saved.affine, image.affine, atol=1e-4)
    assert read_results(out / "results.json")["config"]["largest_component"] is True
