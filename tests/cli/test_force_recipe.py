"""`--force-recipe` lets a downstream command run an encoder's CT recipe on MR data anyway."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import nibabel

from medmim.cli.main import main

sys.path.insert(0, str(Path(__file__).parents[1] / "eval"))  # tiny exported encoders
from _downstream_data import NATIVE, TINY_VIT, write_export  # noqa: E402

ANATOMICAL = Path(nibabel.__file__).parent / "tests" / "data" / "anatomical.nii"


def test_force_recipe_runs_the_ct_recipe_on_mr(tmp_path: Path, capsys) -> None:
    (tmp_path / "mr").mkdir()
    shutil.copy(ANATOMICAL, tmp_path / "mr" / "t1.nii")
    export = write_export(tmp_path / "export", TINY_VIT, NATIVE, (32, 32, 32))
    base = [
        "attention",
        "--encoder",
        f"scratch:{export}",
        "--data",
        str(tmp_path / "mr"),
        "--roi",
        "32",
        "--max-figures",
        "0",
        "--device",
        "cpu",
    ]
    assert main([*base, "--out", str(tmp_path / "refused")]) == 2
    assert "--force-recipe" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "forced"), "--force-recipe"]) == 0
    used = json.loads((tmp_path / "forced" / "results.json").read_text(encoding="utf-8"))
    text = json.dumps(used)
    assert "mr_zscore" not in text and "-200.0" in text  # the encoder's own CT window was applied
