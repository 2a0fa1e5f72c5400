"""Grouped splits: no patient (group) on both sides of the test hold-out or of any fold."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from _toy_data import write_crops_csv, write_medmnist, write_scratch_spec

from medmim.cli.main import build_parser
from medmim.errors import ConfigError, DataError
from medmim.eval.classify import ClassifyConfig, run_classify
from medmim.eval.labelled import LabelledOptions
from medmim.eval.labelled_sources import load_for_encoder, load_labelled
from medmim.eval.splits import make_splits

# 20 patients with 2-5 samples each (72 samples), labels mixed within patients.
_SIZES = [2, 3, 4, 5] * 5
GROUPS = np.repeat([f"p{i:02d}" for i in range(len(_SIZES))], _SIZES)
LABELS = (np.arange(len(GROUPS)) * 7 // 3) % 2


def _groups_of(index: np.ndarray) -> set[str]:
    return set(GROUPS[index].tolist())


def _assert_grouped(splits) -> None:
    test = splits[0].test
    for s in splits:
        assert not _groups_of(s.train) & _groups_of(s.val), f"fold {s.fold} leaks a group"
        assert not (_groups_of(s.train) | _groups_of(s.val)) & _groups_of(s.test)
        assert not set(s.train) & set(s.val) and np.array_equal(s.test, test)


def test_kfold_and_holdout_keep_every_group_on_one_side() -> None:
    splits = make_splits(
        LABELS, folds=3, fractions=[0.5, 1.0], test_size=0.2, seed=1, groups=GROUPS
    )
    assert len(splits) == 6
    _assert_grouped(splits)
    test = splits[0].test
    assert 0.1 < len(test) / len(LABELS) < 0.3  # 1 of 5 folds: about test_size, whole groups
    full = [s for s in splits if s.fraction == 1.0]
    # The val parts partition the development set; the fractions stay inside their train part.
    vals = np.concatenate([s.val for s in full])
    assert sorted(vals.tolist()) == sorted(set(range(len(LABELS))) - set(test.tolist()))
    for s in splits:
        assert set(s.train) <= set(next(f.train for f in full if f.fold == s.fold))
    # The seed moves whole groups around.
    other = make_splits(LABELS, folds=3, test_size=0.2, seed=2, groups=GROUPS)
    assert not np.array_equal(other[0].test, test)


def test_single_split_and_source_test_split_are_grouped() -> None:
    (only,) = make_splits(LABELS, folds=1, test_size=0.2, seed=0, groups=GROUPS)
    _assert_grouped([only])
    assert len(_groups_of(only.val)) in (3, 4)  # 1 of 5 folds of the 16 development groups
    # The source's test split is kept; the rest is split by group.
    split = np.where(np.isin(GROUPS, ["p00", "p01", "p02", "p03"]), "test", "train")
    cv = make_splits(LABELS, split, folds=4, groups=GROUPS)
    assert all(_groups_of(s.test) == {"p00", "p01", "p02", "p03"} for s in cv)
    _assert_grouped(cv)
    # Fewer than 5 groups for --folds 1: as many folds as groups (here 3), at least 2.
    few = np.repeat(["a", "b", "c"], [8, 8, 8])
    (s,) = make_splits(np.tile([0, 1], 12), folds=1, test_size=0, groups=few)
    assert len(set(few[s.val])) == 1 and not set(few[s.val]) & set(few[s.train])


def test_too_few_groups_is_a_clear_error() -> None:
    few = np.repeat(["a", "b", "c"], [8, 8, 8])
    labels = np.tile([0, 1], 12)
    # the library names its own options (`folds`, `test_size`, `group_key`); the CLI's flags
    # are the CLI's business (tests/cli/test_classify_cluster_report_cli.py)
    with pytest.raises(
        ConfigError, match=r"`folds=4` needs at least 4 groups .* holds 3.*`group_key=none`"
    ) as err:
        make_splits(labels, folds=4, test_size=0, groups=few)
    assert "--" not in str(err.value)
    with pytest.raises(ConfigError, match=r"`test_size=0.2` .* needs at least 5 groups"):
        make_splits(labels, folds=2, test_size=0.2, groups=few)
    # Groups that each carry a single class leave a fold with one class to train on.
    with pytest.raises(ConfigError, match="train part holds only class"):
        make_splits(np.repeat([0, 1], 12), folds=2, test_size=0, groups=np.repeat(["a", "b"], 12))
    with pytest.raises(ConfigError, match="3 group ids for 24 samples"):
        make_splits(labels, folds=2, test_size=0, groups=few[:3])


def _with_column(path: Path, name: str, values: list[str]) -> Path:
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    for row, value in zip(rows, values):
        row[name] = value
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def phantom_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """18 crops (3 classes) from 6 phantoms of 3 nodules each, no split column."""
    path = write_crops_csv(tmp_path_factory.mktemp("nodules"), n=18)
    return _with_column(path, "phantom", [f"phantom_{i // 3:04d}" for i in range(18)])


def test_csv_group_column_auto_none_and_named(phantom_csv: Path, tmp_path: Path) -> None:
    data = load_labelled(phantom_csv)
    assert data.group_key == "phantom" and data.groups is not None
    assert data.groups.tolist() == [f"phantom_{i // 3:04d}" for i in range(18)]
    assert load_labelled(phantom_csv, group_key="none").groups is None
    named = load_labelled(phantom_csv, group_key="phantom")
    assert named.group_key == "phantom" and len(set(named.groups.tolist())) == 6
    # 'patient_id' comes before 'phantom' in the auto order.
    both = _with_column(
        write_crops_csv(tmp_path / "both", n=6), "patient_id", ["a", "a", "b", "b", "c", "c"]
    )
    assert load_labelled(both).group_key == "patient_id"
    # No known column: no grouping.
    plain = load_labelled(write_crops_csv(tmp_path / "plain", n=3))
    assert plain.groups is None and plain.group_key is None
    with pytest.raises(DataError, match=r"crops\.csv: no group column 'subject'.*'phantom'"):
        load_labelled(phantom_csv, group_key="subject")
    holes = _with_column(write_crops_csv(tmp_path / "holes", n=3), "phantom", ["a", "", "b"])
    with pytest.raises(DataError, match=r"crops\.csv: row 2 has no 'phantom' \(group\) value"):
        load_labelled(holes)


def test_split_selection_subsets_the_groups(tmp_path: Path) -> None:
    path = write_crops_csv(tmp_path / "split", n=9, with_split=True)  # last 6 rows: test
    path = _with_column(path, "subject", [f"s{i}" for i in range(9)])
    test = load_for_encoder(path, {}, LabelledOptions(), split="test")
    assert test.groups.tolist() == [f"s{i}" for i in range(3, 9)] and test.group_key == "subject"
    npz = write_medmnist(tmp_path / "organ.npz", counts=(4, 2, 2))
    assert load_labelled(npz).groups is None and load_labelled(npz, split="val").groups is None
    with pytest.raises(
        ConfigError,
        match=r"`group_key=patient`: organ.npz is a MedMNIST npz, which has no group column",
    ):
        load_labelled(npz, group_key="patient")


def test_cli_group_key_flag() -> None:
    from medmim.cli._labelled_args import labelled_options

    base = ["classify", "--encoder", "e", "--data", "d.csv", "--out", "o"]
    parser = build_parser()
    assert labelled_options(parser.parse_args(base))["group_key"] == "auto"
    assert (
        labelled_options(parser.parse_args([*base, "--group-key", "none"]))["group_key"] == "none"
    )


def test_classify_records_the_group_column(phantom_csv: Path, tmp_path: Path) -> None:
    spec = write_scratch_spec(tmp_path / "arch")
    cfg = ClassifyConfig(folds=2, test_size=0.34, feature="pooled", recipe="smart", progress=False)
    run_classify(f"scratch:{spec}", phantom_csv, tmp_path / "grouped", cfg)
    record = json.loads((tmp_path / "grouped" / "results.json").read_text(encoding="utf-8"))
    assert record["config"]["group_key"] == "phantom" and record["config"]["groups"] == 6
    with (tmp_path / "grouped" / "predictions.csv").open(newline="", encoding="utf-8") as f:
        preds = list(csv.DictReader(f))
    # ids are the crops' paths (crops/c007.nii.gz is nodule 7, of phantom 7 // 3).
    phantom = {r["id"]: int(Path(r["id"]).name[1:4]) // 3 for r in preds}
    test = {phantom[r["id"]] for r in preds if r["part"] == "test"}
    assert len(test) == 2  # 1 of round(1 / 0.34) = 3 folds of 6 phantoms
    for fold in ("0", "1"):
        val = {phantom[r["id"]] for r in preds if r["part"] == "val" and r["fold"] == fold}
        assert val and not val & test
    cfg = ClassifyConfig(
        folds=2, group_key="none", feature="pooled", recipe="smart", progress=False
    )
    run_classify(f"scratch:{spec}", phantom_csv, tmp_path / "plain", cfg)
    record = json.loads((tmp_path / "plain" / "results.json").read_text(encoding="utf-8"))
    assert record["config"]["group_key"] is None and record["config"]["groups"] is None
