"""Fixtures of the downstream-command tests (classify, segment, attention, localize, ...)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _downstream_data import (
    PUMIT_DATA,
    TINY_SWIN,
    TINY_UVIT,
    TINY_VIT,
    write_case,
    write_checkpoint,
    write_export,
)


@pytest.fixture(scope="session")
def labelled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A datalist JSON with 3 training cases, 1 validation case and 1 unlabelled test case."""
    root = tmp_path_factory.mktemp("labelled")
    cases = [write_case(root, f"case_{i}", seed=i) for i in range(5)]
    datalist = {
        "labels": {"0": "background", "1": "liver", "2": "spleen"},
        "training": cases[:3],
        "validation": cases[3:4],
        "test": [cases[4]["image"]],
    }
    (root / "dataset.json").write_text(json.dumps(datalist), encoding="utf-8")
    return root / "dataset.json"


@pytest.fixture(scope="session")
def swin_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_export(tmp_path_factory.mktemp("swin") / "export", TINY_SWIN)


@pytest.fixture(scope="session")
def vit_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_export(tmp_path_factory.mktemp("vit") / "export", TINY_VIT, crop=(32, 32, 32))


@pytest.fixture(scope="session")
def uvit_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny PUMIT universal ViT exported by `medmim.eval.export` from a `pumit_mim` run."""
    from medmim.eval.export import export

    run = tmp_path_factory.mktemp("uvit") / "run"
    write_checkpoint(run, TINY_UVIT, PUMIT_DATA, method="pumit_mim")
    return export(run)


@pytest.fixture(scope="session")
def phantoms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three small medmim phantoms (one per split): organs.json, tumors.json, images/."""
    from medmim.data.phantoms import generate_phantoms

    root = tmp_path_factory.mktemp("phantoms")
    generate_phantoms(root, 3, seed=0, size="small")
    return root


@pytest.fixture(scope="session")
def coarse_vit_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny ViT whose recipe resamples to 6 mm, so phantom scans are ~50^3 voxels."""
    recipe = {
        "orientation": "RAS",
        "spacing": [6.0, 6.0, 6.0],
        "intensity": "ct",
        "window": [-750.0, 1750.0],
        "foreground_crop": True,
    }
    return write_export(
        tmp_path_factory.mktemp("coarse") / "export", TINY_VIT, recipe, (32, 32, 32)
    )
