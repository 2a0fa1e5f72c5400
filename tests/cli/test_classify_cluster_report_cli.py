"""Smoke tests of `medmim classify`, `medmim cluster` and `medmim report` through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medmim.cli.main import main

SWIN = {"name": "swin", "embed_dim": 12, "depths": [1, 1, 1, 1], "num_heads": [3, 3, 3, 3]}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> tuple[Path, Path]:
    """A MedMNIST-like npz (2 classes) and an encoder.json-only architecture for scratch:."""
    root = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 12), ("val", 4), ("test", 6)):
        y = np.arange(n) % 2
        x = rng.integers(0, 60, (n, 28, 28, 28)).astype(np.uint8)
        x[y == 1, 8:20, 8:20, 8:20] = 255
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = x, y.reshape(-1, 1).astype(np.uint8)
    np.savez(root / "toy.npz", **arrays)
    (root / "arch").mkdir()
    (root / "arch" / "encoder.json").write_text(
        json.dumps(
            {
                "backbone": SWIN,
                "method": "smart",
                "recipe": None,
                "in_channels": 1,
                "crop_size": [32] * 3,
            }
        ),
        encoding="utf-8",
    )
    return root / "toy.npz", root / "arch"


def test_classify_cluster_report(inputs, tmp_path, capsys) -> None:
    npz, arch = inputs
    enc = f"scratch:{arch}"
    common = ["--encoder", enc, "--data", str(npz), "--device", "cpu", "--no-progress"]
    assert (
        main(
            [
                "classify",
                *common,
                "--out",
                str(tmp_path / "cls"),
                "--folds",
                "2",
                "--fractions",
                "0.5,1",
                "--feature",
                "pooled",
            ]
        )
        == 0
    )
    assert "test/auc:" in capsys.readouterr().out
    assert (
        main(
            [
                "cluster",
                *common,
                "--out",
                str(tmp_path / "clu"),
                "--projection",
                "pca",
                "--feature",
                "pooled",
            ]
        )
        == 0
    )
    assert "kmeans/nmi:" in capsys.readouterr().out
    report = tmp_path / "report.md"
    assert main(["report", str(tmp_path / "cls"), str(tmp_path / "clu"), "--out", str(report)]) == 0
    text = report.read_text(encoding="utf-8")
    assert "## Comparison: classify" in text and "`kmeans/ari`" in text
    assert "figures/fractions.png" in text and "figures/pca.png" in text


def test_bad_inputs_exit_with_a_message(inputs, tmp_path, capsys) -> None:
    npz, _ = inputs
    assert (
        main(
            [
                "classify",
                "--encoder",
                "scratch:swin_dmeo",
                "--data",
                str(npz),
                "--out",
                str(tmp_path),
            ]
        )
        == 2
    )
    assert "neither an export folder nor a backbone preset" in capsys.readouterr().err
    bad = tmp_path / "bad.csv"
    bad.write_text("image,grade\nx.nii.gz,1\n", encoding="utf-8")
    assert (
        main(
            [
                "cluster",
                "--encoder",
                "scratch:swin_demo",
                "--data",
                str(bad),
                "--out",
                str(tmp_path),
            ]
        )
        == 2
    )
    assert "no label column 'label'" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "nothing"), "--out", str(tmp_path / "r.md")]) == 2
    with pytest.raises(SystemExit):
        main(["classify", "--encoder", "x", "--data", "y", "--out", "z", "--fractions", "0,1"])


def test_library_options_are_named_as_flags(inputs, tmp_path, capsys) -> None:
    """The library says `group_key=patient` / `folds=0`; the CLI says --group-key / --folds."""
    npz, arch = inputs
    common = [
        "--encoder",
        f"scratch:{arch}",
        "--data",
        str(npz),
        "--device",
        "cpu",
        "--no-progress",
        "--out",
        str(tmp_path / "cls"),
    ]
    assert main(["classify", *common, "--group-key", "patient"]) == 2
    err = capsys.readouterr().err
    assert "error: --group-key patient: toy.npz is a MedMNIST npz" in err
    assert "use --group-key auto or --group-key none" in err and "`" not in err
    assert main(["classify", *common, "--folds", "0", "--feature", "pooled"]) == 2
    err = capsys.readouterr().err
    assert "error: --folds 0: use 1 (a single train/val split) or k >= 2" in err


def test_flag_message_translates_known_options_only() -> None:
    from medmim.cli._messages import flag_message

    text = "`folds=3` needs 3 groups; lower `folds`, or pass `group_key=none`; see `medmim export`"
    assert (
        flag_message(text)
        == "--folds 3 needs 3 groups; lower --folds, or pass --group-key none; see `medmim export`"
    )
    assert flag_message("set `label_key`", {"label_key": "--labels"}) == "set --labels"
