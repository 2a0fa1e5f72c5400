"""Labelled volumes from a MedMNIST npz or a CSV of crops."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _toy_data import write_crops_csv, write_medmnist

from medmim.errors import ConfigError, DataError
from medmim.eval.labelled import VolumeDataset, rename_classes
from medmim.eval.labelled_sources import encode_labels, load_labelled


def test_medmnist_npz(tmp_path) -> None:
    path = write_medmnist(tmp_path / "organ.npz", counts=(6, 2, 4), classes=3)
    data = load_labelled(path)
    assert len(data) == 12 and data.num_classes == 3 and data.shape == (28, 28, 28)
    assert data.split.tolist() == ["train"] * 6 + ["val"] * 2 + ["test"] * 4
    assert data.ids[6] == "organ.npz::val[0]"
    test = load_labelled(path, split="test")
    assert len(test) == 4 and test.labels.tolist() == [0, 1, 2, 0]
    x, y = VolumeDataset(data, [0], (32, 32, 32), in_channels=2)[0]
    assert x.shape == (2, 32, 32, 32) and type(x) is torch.Tensor and y == 0
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0  # uint8 / 255
    assert rename_classes(test, ["liver", "heart", "lung"]).class_names == [
        "liver",
        "heart",
        "lung",
    ]
    with pytest.raises(ConfigError, match="gives 2 names but .* has 3 classes"):
        rename_classes(test, ["liver", "heart"])
    with pytest.raises(DataError, match="no MedMNIST split 'tset'"):
        load_labelled(path, split="tset")


def test_csv_of_crops_uses_the_recipe_window(tmp_path) -> None:
    path = write_crops_csv(tmp_path, n=6, with_split=True)
    data = load_labelled(path, recipe={"intensity": "ct", "window": [-500.0, 500.0]})
    assert data.class_names == ["benign", "malignant", "unsure"]
    assert data.labels.tolist() == [0, 1, 2, 0, 1, 2]
    assert data.split.tolist() == ["test"] * 6
    img = data.images[0]
    assert img.shape == (24, 24, 24) and img.dtype == np.float32
    assert img.min() >= 0.0 and img.max() <= 1.0 and img.max() == pytest.approx(1.0)


def test_numeric_labels_keep_numeric_order() -> None:
    labels, names = encode_labels(["10", "2", "2", "1"], "x.csv")
    assert names == ["1", "2", "10"] and labels.tolist() == [2, 1, 1, 0]
    with pytest.raises(DataError, match="row 2 has no label"):
        encode_labels(["1", ""], "x.csv")


@pytest.mark.parametrize(
    "raw, message",
    [
        (["1", "nan"], r"row 2 has no label \('nan'\)"),
        (["0", "NA"], r"row 2 has no label \('NA'\)"),
        ([0.0, float("nan")], r"row 2 has no label \('nan'\)"),  # a NaN in a MedMNIST label array
        (["0", "0.5"], r"label '0.5' is not a class"),
        (["1", "benign"], r"labels mix numbers and names \(e.g. '1' and 'benign'\)"),
    ],
)
def test_label_garbage_is_refused(raw, message) -> None:
    with pytest.raises(DataError, match=message):
        encode_labels(raw, "x.csv")


def test_integer_spellings_are_one_class(caplog) -> None:
    import logging

    with caplog.at_level(logging.INFO, logger="medmim.eval"):
        labels, names = encode_labels(["1", "1.0", 1, "0", 0.0], "x.csv")
    assert names == ["0", "1"] and labels.tolist() == [1, 1, 1, 0, 0]
    assert "x.csv: 2 classes: 0 (2), 1 (3)" in caplog.text


def test_csv_errors_name_the_column(tmp_path) -> None:
    csv_path = tmp_path / "bad.csv"
    csv_path.write_text("image,grade\na.nii.gz,1\n", encoding="utf-8")
    with pytest.raises(DataError, match="no label column 'label'") as err:
        load_labelled(csv_path)
    assert "Did you mean 'label'" not in str(err.value)  # the columns the file has, not 'label'
    (tmp_path / "empty_labels.csv").write_text("image,label\na.nii.gz,\n", encoding="utf-8")
    with pytest.raises(
        DataError, match=r"row 1 has no label \(''\); every volume needs a class label"
    ):
        load_labelled(tmp_path / "empty_labels.csv")
    with pytest.raises(DataError, match=r"no column 'img'.*set `image_key`"):
        load_labelled(csv_path, image_key="img")
    folder = write_crops_csv(tmp_path / "ok", n=3).parent
    (folder / "split.csv").write_text(
        "image,label,split\ncrops/c000.nii.gz,benign,holdout\n", encoding="utf-8"
    )
    with pytest.raises(DataError, match=r"column 'split' has \['holdout'\]"):
        load_labelled(folder / "split.csv")
    (tmp_path / "data.json").write_text("{}", encoding="utf-8")
    with pytest.raises(DataError, match="give a .csv or a MedMNIST .npz"):
        load_labelled(tmp_path / "data.json")
