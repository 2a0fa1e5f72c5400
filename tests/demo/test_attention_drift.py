"""Attention drift: the correlation of an encoder's attention maps with scratch's (its
initial ones).
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medmim.demo.collect import Collected, attention_correlation, attention_dir
from medmim.demo.config import demo_config
from medmim.demo.report import drift_lines


def write_maps(folder: Path, maps: dict[str, np.ndarray]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for case, volume in maps.items():
        nib.Nifti1Image(volume.astype(np.float32), np.eye(4)).to_filename(
            folder / f"{case}_attn.nii.gz"
        )
    return folder


def random_maps(
    seed: int, cases: list[str], shape: tuple[int, ...] = (16, 16, 16)
) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {case: rng.random(shape) + 0.01 for case in cases}  # > 0: every voxel scored


def test_identical_maps_give_one_and_unrelated_maps_near_zero(tmp_path: Path) -> None:
    maps = random_maps(0, ["a", "b", "c"])
    final = write_maps(tmp_path / "final", maps)
    same = write_maps(tmp_path / "same", maps)
    other = write_maps(tmp_path / "other", random_maps(1, ["a", "b", "c"]))
    assert attention_correlation(final, same) == pytest.approx({"a": 1.0, "b": 1.0, "c": 1.0})
    r = attention_correlation(final, other)
    assert set(r) == {"a", "b", "c"} and max(abs(v) for v in r.values()) < 0.06


def test_shared_background_and_missing_cases_do_not_count(tmp_path: Path) -> None:
    a, b = random_maps(0, ["x"])["x"], random_maps(1, ["x"])["x"]
    pad = [(8, 8)] * 3  # the zeros outside the foreground crop, the same in both maps
    final = write_maps(tmp_path / "final", {"x": np.pad(a, pad), "only_final": a})
    initial = write_maps(tmp_path / "initial", {"x": np.pad(b, pad), "only_initial": b})
    r = attention_correlation(final, initial)
    assert list(r) == ["x"] and abs(r["x"]) < 0.06  # all voxels would give r ~ 0.7
    write_maps(tmp_path / "flat", {"x": np.ones_like(np.pad(a, pad))})
    assert attention_correlation(final, tmp_path / "flat") == {}  # constant map: r undefined


def fake_demo(
    out: Path, seed: int, method_seed: int, scratch_maps: dict[str, np.ndarray]
) -> Collected:
    """OUT with one method's export, run config and localize maps, and scratch's maps."""
    cfg = demo_config("tiny", ["methods=[smart]", f"seed={seed}"])
    run = out / "pretrain" / "smart"
    (run / "export").mkdir(parents=True)
    (run / "export" / "encoder.json").write_text(
        json.dumps({"backbone": {"name": "swin", "sa_stage": 2}}), encoding="utf-8"
    )
    (run / "config.yaml").write_text(
        f"train:\n  seed: {method_seed}\n  init_from: ''\n", encoding="utf-8"
    )
    write_maps(attention_dir(out, "smart"), random_maps(0, ["a", "b"]))
    write_maps(attention_dir(out, "scratch"), scratch_maps)
    return Collected(cfg, out)


def test_report_line_for_the_same_seed(tmp_path: Path) -> None:
    c = fake_demo(tmp_path, 3, 3, random_maps(0, ["a", "b", "c"]))
    assert c.drift == {"smart": pytest.approx({"a": 1.0, "b": 1.0})} and not c.drift_skipped
    text = "\n".join(drift_lines(c))
    assert (
        "SMART: correlation of the final attention maps with the initial ones (scratch, same "
        "seed): 1.00 over 2 cases (1 = unchanged)"
    ) in text
    assert "Valid only where scratch is built with the pretraining seed (seed 3)" in text


def test_another_seed_is_not_measured(tmp_path: Path) -> None:
    c = fake_demo(tmp_path, 3, 4, random_maps(0, ["a", "b"]))
    assert c.drift == {} and c.drift_skipped == {
        "smart": "pretrained with seed 4, scratch built with seed 3"
    }
    assert (
        "- SMART: not measured (pretrained with seed 4, scratch built with seed 3)"
        in drift_lines(c)
    )
    assert (
        drift_lines(Collected(demo_config("tiny", ["methods=[smart]"]), tmp_path / "empty")) == []
    )
