"""The README's code that users copy must run: loading an export into MONAI's SwinUNETR."""

from __future__ import annotations

import contextlib
import io
import os
import re
from pathlib import Path

import torch

from medmim.eval.export import export
from medmim.registry import BACKBONES

README = Path(__file__).resolve().parents[1] / "README.md"
TINY_SWIN = {"name": "swin", "embed_dim": 12, "depths": [1, 1, 1, 1], "num_heads": [3, 3, 3, 3]}


def _block_after(heading: str) -> str:
    text = README.read_text(encoding="utf-8")
    section = text[text.index(heading) :]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, f"no python block after '{heading}' in README.md"
    return match.group(1)


def _tiny_export(tmp_path: Path, name: str, crop: int) -> None:
    """A tiny Swin encoder exported as runs/<name>/export under `tmp_path`."""
    model = BACKBONES.build(TINY_SWIN)
    ckpt = tmp_path / "last.ckpt"
    config = {
        "data": {"recipe": {"spacing": [2.0, 2.0, 2.0]}, "crop_size": [crop] * 3},
        "method": {"name": "smart"},
    }
    torch.save(
        {
            "encoder": model.state_dict(),
            "encoder_config": model.config,
            "step": 1,
            "config": config,
        },
        ckpt,
    )
    export(ckpt, tmp_path / "runs" / name / "export")


def _run_block(heading: str, cwd: Path) -> str:
    """Run the README's python block after `heading` in `cwd`; returns what it printed."""
    code = _block_after(heading)
    out, old = io.StringIO(), os.getcwd()
    try:
        os.chdir(cwd)
        with contextlib.redirect_stdout(out):
            exec(compile(code, "README.md", "exec"), {})
    finally:
        os.chdir(old)
    return out.getvalue().strip()


def test_swinunetr_snippet_runs_on_an_export(tmp_path: Path) -> None:
    _tiny_export(tmp_path, "smart", 64)
    printed = _run_block("## Load exported weights into MONAI's SwinUNETR", tmp_path)
    assert printed == "torch.Size([1, 14, 96, 96, 96])"


def test_python_quickstart_runs_on_an_export(tmp_path: Path) -> None:
    import nibabel as nib
    import numpy as np

    _tiny_export(tmp_path, "ct", 32)
    scan = np.random.default_rng(0).uniform(-1000, 1000, (40, 36, 30)).astype(np.float32)
    nib.save(nib.Nifti1Image(scan, np.diag([1.5, 1.5, 2.0, 1.0])), tmp_path / "scan.nii.gz")
    printed = _run_block("From Python:", tmp_path)
    assert re.fullmatch(r"\(\d+,\) (cls|pooled)", printed), printed
