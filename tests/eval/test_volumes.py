"""Geometry round trips: recipe grid <-> original scan, for non-RAS, anisotropic files."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from _downstream_data import AFFINE, NATIVE, write_case

from medmim.data.sources import Record
from medmim.errors import DataError
from medmim.eval.volumes import (
    case_name,
    load_case,
    mask_path,
    save_nifti,
    to_original,
    to_original_labels,
)


@pytest.fixture(scope="module")
def scan(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("scan")
    paths = write_case(root, "scan_a")
    record = Record(
        str(root / paths["image"]),
        label=str(root / paths["label"]),
        extra={"tumor": paths["tumor"]},
    )
    return root, record


@pytest.mark.parametrize("spacing", [None, [0.45, 0.55, 1.0], [1.5, 1.5, 1.5]])
def test_labels_survive_recipe_and_inverse(scan, spacing) -> None:
    root, record = scan
    recipe = {**NATIVE, "spacing": spacing}
    case = load_case(record, recipe, ("label", "tumor"), base=root)
    original = nib.load(record.label)
    ref = np.asarray(original.dataobj).astype(int)
    # the recipe reoriented to RAS: the grid's affine has a positive diagonal
    assert np.all(np.diag(np.asarray(case.meta["affine"])[:3, :3]) > 0)
    onehot = torch.nn.functional.one_hot(torch.from_numpy(case.masks["label"]), 3)
    back = to_original(onehot.permute(3, 0, 1, 2).float(), case.meta).argmax(0).numpy()
    assert back.shape == ref.shape == tuple(case.meta["original_shape"])
    np.testing.assert_allclose(case.meta["original_affine"], original.affine, atol=1e-5)
    if spacing is None or spacing[0] < 0.9:  # native or finer grid: exact round trip
        np.testing.assert_array_equal(back, ref)
    else:  # a coarser grid loses detail, but the organs stay where they are
        for k in (1, 2):
            inter = ((back == k) & (ref == k)).sum()
            assert 2 * inter / ((back == k).sum() + (ref == k).sum()) > 0.75
    assert case.masks["tumor"].sum() > 0 and set(np.unique(case.masks["tumor"])) == {0, 1}


def test_saved_nifti_has_the_scans_shape_and_affine(scan, tmp_path) -> None:
    root, record = scan
    case = load_case(record, {**NATIVE, "spacing": [1.2, 1.2, 1.2]})
    vol = to_original(torch.from_numpy(case.image), case.meta)[0]
    path = save_nifti(vol, case.meta["original_affine"], tmp_path / "x.nii.gz")
    saved, source = nib.load(path), nib.load(record.image)
    assert saved.shape == source.shape
    np.testing.assert_allclose(saved.affine, AFFINE, atol=1e-5)
    np.testing.assert_allclose(saved.header.get_zooms(), source.header.get_zooms(), atol=1e-5)
    assert nib.aff2axcodes(saved.affine) == nib.aff2axcodes(source.affine) == ("L", "S", "P")


def test_errors_name_the_file(scan, tmp_path) -> None:
    root, record = scan
    with pytest.raises(DataError, match="no 'lesion' mask"):
        load_case(record, NATIVE, ("lesion",))
    small = tmp_path / "small.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((5, 5, 5), np.uint8), AFFINE), str(small))
    bad = Record(record.image, label=str(small))
    with pytest.raises(DataError, match="small.nii.gz: mask shape"):
        load_case(bad, NATIVE, ("label",))


def test_names_and_mask_paths(tmp_path) -> None:
    assert case_name("/a/b/case_001.nii.gz") == "case_001" and case_name("x.nrrd") == "x"
    rec = Record("/a/img.nii.gz", label="/a/lab.nii.gz", extra={"tumor": "t/x.nii.gz"})
    assert mask_path(rec, "label") == "/a/lab.nii.gz"
    assert mask_path(rec, "tumor", tmp_path) == str(tmp_path / "t/x.nii.gz")
    assert mask_path(rec, "missing") is None


def test_chunked_argmax_equals_the_full_resampling(scan) -> None:
    root, record = scan
    case = load_case(record, {**NATIVE, "spacing": [1.3, 1.3, 1.3]})
    probs = torch.softmax(torch.randn(5, *case.image.shape[1:]) * 3, dim=0)
    full = to_original(probs, case.meta).argmax(0)
    torch.testing.assert_close(to_original_labels(probs, case.meta, chunk=2), full)
