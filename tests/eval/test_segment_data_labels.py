"""Label maps are checked before a segmenter trains on them."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from medmim.errors import DataError
from medmim.eval.segment_data import check_label_map, label_names


def case(values, name="lab.nii.gz"):
    return SimpleNamespace(masks={"label": np.asarray(values)}, record=SimpleNamespace(label=name))


def test_negative_and_fractional_labels_are_refused() -> None:
    with pytest.raises(DataError, match=r"lab.nii.gz: label map holds negative values \(min -1\)"):
        check_label_map(np.array([0, 1, -1]), "lab.nii.gz")
    with pytest.raises(DataError, match=r"non-integer values \(e.g. 0.5\): is it an image"):
        check_label_map(np.array([0.0, 0.5, 1.0], dtype=np.float32), "lab.nii.gz")
    check_label_map(np.array([0.0, 2.0], dtype=np.float32), "ok")  # integral floats are fine


def test_sparse_high_label_values_need_names(tmp_path) -> None:
    datalist = tmp_path / "d.json"
    datalist.write_text(json.dumps({"training": []}), encoding="utf-8")
    with pytest.raises(DataError, match=r"label values \[1, 255\] reach 255 with no class names"):
        label_names(datalist, None, [case([0, 1, 255])])
    assert (
        label_names(
            datalist, ["liver", "spleen"] + [f"c{k}" for k in range(253)], [case([0, 1, 255])]
        )[0]
        == "liver"
    )
    assert label_names(datalist, None, [case([0, 1, 3])]) == ["class_1", "class_2", "class_3"]
    with pytest.raises(DataError, match="label map holds negative values"):
        label_names(datalist, None, [case([0, -2])])
