"""Sources: folder scan, MSD datalist, CSV, MedMNIST npz, single file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from medmim.data.sources import Record, resolve_source
from medmim.errors import DataError


def _touch_dicom(
    folder: Path, n: int = 2, series_uid: str = "1.2.826.0.1.3680043.2.1125.7"
) -> None:
    """`n` 4 x 4 slices of one series, 1 mm apart."""
    folder.mkdir(parents=True, exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(n):
        img = sitk.Image(4, 4, sitk.sitkInt16)
        img.SetMetaData("0020|000e", series_uid)
        img.SetMetaData("0020|0032", f"0\\0\\{k}")
        img.SetMetaData("0020|0037", "1\\0\\0\\0\\1\\0")
        writer.SetFileName(str(folder / f"{series_uid[-1]}slice{k}.dcm"))
        writer.Execute(img)


def test_folder_scan(tmp_path: Path, scans) -> None:
    root = tmp_path / "data"
    for rel in (
        "a.nii.gz",
        "sub/b.nii",
        "sub/deeper/c.mha",
        "labelsTr/a.nii.gz",
        "masks/m.nii.gz",
        ".hidden/h.nii.gz",
    ):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x")
    (root / "notes.txt").write_text("not an image", encoding="utf-8")
    _touch_dicom(root / "patient1" / "series1")
    np.savez(root / "organmnist3d.npz", train_images=np.zeros((2, 4, 4, 4), np.uint8))
    names = [Path(r.image).relative_to(root).as_posix() for r in resolve_source(root)]
    assert names == ["a.nii.gz", "patient1/series1", "sub/b.nii", "sub/deeper/c.mha"]


def test_datalist_resolves_paths_against_its_folder(tmp_path: Path, monkeypatch) -> None:
    folder = tmp_path / "Task01"
    folder.mkdir()
    datalist = {
        "training": [
            {"image": "./imagesTr/a.nii.gz", "label": "./labelsTr/a.nii.gz", "site": "A"},
            {"image": "/abs/b.nii.gz", "label": 3},
        ],
        "test": ["./imagesTs/c.nii.gz"],
    }
    (folder / "dataset.json").write_text(json.dumps(datalist), encoding="utf-8")
    monkeypatch.chdir(tmp_path)  # relative paths must not depend on the working directory
    records = resolve_source(folder / "dataset.json")
    assert [r.image for r in records] == [str(folder / "imagesTr/a.nii.gz"), "/abs/b.nii.gz"]
    assert records[0].label == str(folder / "labelsTr/a.nii.gz") and records[0].extra == {
        "site": "A"
    }
    assert records[1].label == 3
    assert [r.image for r in resolve_source(folder / "dataset.json", split="test")] == [
        str(folder / "imagesTs/c.nii.gz")
    ]
    with pytest.raises(DataError, match="no section 'trainig'. Did you mean 'training'"):
        resolve_source(folder / "dataset.json", split="trainig")
    with pytest.raises(DataError, match=r"training\[0\] has no field 'img'"):
        resolve_source(folder / "dataset.json", key="img")


def test_csv(tmp_path: Path) -> None:
    (tmp_path / "list.csv").write_text(
        "image,label,age\nscans/a.nii.gz,1,60\n/x/b.nrrd,0,70\n,,\n", encoding="utf-8"
    )
    records = resolve_source(tmp_path / "list.csv")
    assert [r.image for r in records] == [str(tmp_path / "scans/a.nii.gz"), "/x/b.nrrd"]
    assert [r.label for r in records] == ["1", "0"] and records[1].extra == {"age": "70"}
    with pytest.raises(DataError, match="no column 'img'. Did you mean 'image'"):
        resolve_source(tmp_path / "list.csv", key="img")


def test_medmnist(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    arrays = {
        f"{split}_{kind}": (
            rng.integers(0, 256, (n, 28, 28, 28), dtype=np.uint8)
            if kind == "images"
            else np.arange(n)[:, None] % 11
        )
        for split, n in (("train", 5), ("val", 2), ("test", 3))
        for kind in ("images", "labels")
    }
    np.savez_compressed(tmp_path / "organmnist3d.npz", **arrays)
    train = resolve_source(tmp_path / "organmnist3d.npz")  # 'training' -> 'train'
    assert len(train) == 5 and [r.label for r in train] == [0, 1, 2, 3, 4]
    assert train[2].name == f"{tmp_path / 'organmnist3d.npz'}::train_images[2]"
    assert len(resolve_source(tmp_path / "organmnist3d.npz", split="validation")) == 2
    vol = train[3].load()
    assert vol.shape == (1, 28, 28, 28)
    np.testing.assert_array_equal(vol[0].numpy(), arrays["train_images"][3])
    with pytest.raises(DataError, match="no MedMNIST split 'tset'. Did you mean 'test'"):
        resolve_source(tmp_path / "organmnist3d.npz", split="tset")


@pytest.mark.parametrize("problem", ["short", "nan"])
def test_medmnist_labels_must_match_the_images(tmp_path: Path, problem: str) -> None:
    images = np.zeros((4, 28, 28, 28), np.uint8)
    labels = np.arange(4, dtype=np.float64)[:, None]
    if problem == "short":
        labels = labels[:3]
    else:
        labels[2, 0] = np.nan
    np.savez(tmp_path / "nodulemnist3d.npz", train_images=images, train_labels=labels)
    with pytest.raises(DataError) as err:
        resolve_source(tmp_path / "nodulemnist3d.npz")
    assert err.value.path == str(tmp_path / "nodulemnist3d.npz")
    assert "'train_labels'" in err.value.reason
    if problem == "short":
        assert "shape (3, 1) but 'train_images' holds 4 volumes" in err.value.reason
    else:
        assert "1 NaN/infinite labels (first at volume 2)" in err.value.reason


def test_single_file_and_bad_sources(tmp_path: Path, ct_file: Path) -> None:
    assert resolve_source(ct_file) == [Record(str(ct_file))]
    with pytest.raises(DataError, match="source not found"):
        resolve_source(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no images"):
        resolve_source(tmp_path / "empty")
    with pytest.raises(DataError, match="no source given"):
        resolve_source("")


def test_csv_with_a_byte_order_mark_or_not_utf8(tmp_path: Path) -> None:
    (tmp_path / "bom.csv").write_text("\ufeffimage,label\na.nii.gz,1\n", encoding="utf-8")
    assert [r.label for r in resolve_source(tmp_path / "bom.csv")] == ["1"]  # no '\ufeffimage'
    (tmp_path / "latin.csv").write_bytes("image,label\nb\xe9b\xe9.nii.gz,1\n".encode("latin-1"))
    with pytest.raises(
        DataError,
        match=r"latin.csv.*is not UTF-8 text \(byte 0xe9 at position 13\); save it as UTF-8",
    ):
        resolve_source(tmp_path / "latin.csv")
    (tmp_path / "empty.csv").write_bytes(b"")
    with pytest.raises(DataError, match="is empty: a CSV needs a header row"):
        resolve_source(tmp_path / "empty.csv")


def test_folder_scan_follows_links_once(tmp_path: Path) -> None:
    root = tmp_path / "L"
    (root / "sub").mkdir(parents=True)
    (root / "a.nii.gz").write_bytes(b"x")
    (root / "sub" / "b.nii.gz").write_bytes(b"x")
    (root / "loop1").symlink_to(".")  # ln -s . L/loop1: a loop
    (root / "loop2").symlink_to(".")
    (root / "sub" / "up").symlink_to("..")  # a loop through the parent
    (root / "again.nii.gz").symlink_to(root / "a.nii.gz")  # a second name for the same file
    names = [Path(r.image).relative_to(root).as_posix() for r in resolve_source(root)]
    assert names == ["a.nii.gz", "sub/b.nii.gz"]


def test_unlistable_folder_is_named(tmp_path: Path, monkeypatch) -> None:
    root = tmp_path / "data"
    (root / "locked").mkdir(parents=True)
    (root / "a.nii.gz").write_bytes(b"x")
    real_iterdir = Path.iterdir

    def iterdir(self: Path):
        if self.name == "locked":
            raise PermissionError(13, "Permission denied", str(self))
        return real_iterdir(self)

    monkeypatch.setattr(Path, "iterdir", iterdir)
    with pytest.raises(
        DataError, match=r"locked: cannot be listed \(Permission denied\); fix its permissions"
    ):
        resolve_source(root)
    skipped: list[DataError] = []  # training's on_error=skip: passed over and recorded
    records = resolve_source(root, skipped=skipped)
    assert [r.image for r in records] == [str(root / "a.nii.gz")]
    assert [e.path for e in skipped] == [str(root / "locked")]
    assert "cannot be listed (Permission denied)" in skipped[0].reason
    with pytest.raises(DataError, match="cannot be listed"):  # the source itself stays an error
        resolve_source(root / "locked", skipped=[])


def test_datalist_entries_that_are_not_objects_are_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"training": [{"image": "a.nii.gz"}, 3]}), encoding="utf-8")
    with pytest.raises(DataError, match=r"training\[1\] is a int \(3\), not an object like"):
        resolve_source(bad)
    bad.write_text(json.dumps({"training": {"image": "a.nii.gz"}}), encoding="utf-8")
    with pytest.raises(DataError, match="section 'training' is a dict, not a list of entries"):
        resolve_source(bad)
