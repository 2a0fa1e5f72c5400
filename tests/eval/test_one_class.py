"""`medmim classify` on a source whose volumes all carry one label stops with the fix."""

from __future__ import annotations

import pytest
from _toy_data import write_crops_csv, write_scratch_spec

from medmim.errors import DataError
from medmim.eval.classify import ClassifyConfig, run_classify


def test_a_one_class_csv_is_refused(tmp_path) -> None:
    csv_path = write_crops_csv(tmp_path / "data", n=4, names=("benign",))
    spec = write_scratch_spec(tmp_path / "arch")
    with pytest.raises(
        DataError,
        match=r"crops.csv: every volume has the label 'benign': "
        r"classification needs at least two classes \(check --label-key\)",
    ):
        run_classify(f"scratch:{spec}", csv_path, tmp_path / "out", ClassifyConfig(progress=False))
    assert not (tmp_path / "out" / "results.json").exists()
