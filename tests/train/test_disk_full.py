"""A full disk (issue 14): "no space left on <path>" when a checkpoint write fails, the previous
last.ckpt intact, no temporary file left, and a resume after freeing space works."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest
import torch
from toy_training import ToyVolumes, toy_config

import medmim.train.session as session
from medmim.train import checkpoint as ck
from medmim.train.loop import pretrain


def test_enospc_during_torch_save_is_named(tmp_path: Path, monkeypatch) -> None:
    ck.atomic_save({"step": 1}, tmp_path / "last.ckpt")
    real_save = torch.save

    def short_write(obj, f):
        real_save(obj, f)
        try:  # what torch reports after a short write: the OSError is only the context
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise RuntimeError(
                "[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598"
            ) from None

    monkeypatch.setattr(ck.torch, "save", short_write)
    with pytest.raises(
        ck.DiskFullError, match=rf"no space left on {tmp_path} .*the previous last.ckpt is intact"
    ):
        ck.atomic_save({"step": 2}, tmp_path / "last.ckpt")
    monkeypatch.undo()
    assert torch.load(tmp_path / "last.ckpt", weights_only=True) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_other_write_errors_are_not_called_a_full_disk(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(
        ck.torch, "save", lambda obj, f: (_ for _ in ()).throw(RuntimeError("boom"))
    )
    with pytest.raises(RuntimeError, match="boom"):
        ck.atomic_save({"step": 2}, tmp_path / "last.ckpt")


@pytest.fixture
def small_disk(tmp_path: Path):
    """An 80 MiB tmpfs (the run-start guard asks for 64 MiB of room for logs) (needs the right to
    mount: root on Linux; skipped elsewhere).
    """
    mount = tmp_path / "disk"
    mount.mkdir()
    if (
        os.name != "posix"
        or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=80m", "tmpfs", str(mount)], capture_output=True
        ).returncode
    ):
        pytest.skip("cannot mount a tmpfs here")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_checkpoint_on_a_real_full_disk(small_disk: Path, monkeypatch) -> None:
    cfg = toy_config(small_disk, "train.max_steps=2", "train.ckpt_every=2", "train.vis_every=0")
    run = pretrain(cfg, dataset=ToyVolumes())
    size = (run / "checkpoints" / "last.ckpt").stat().st_size
    filler = small_disk / "filler"
    with open(filler, "wb") as f:  # leave less than one checkpoint free
        f.write(
            b"\0"
            * max(os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize - size // 2, 0)
        )
    # past the guard that refuses to start without room (tested in test_run_dir.py)
    monkeypatch.setattr(session, "check_disk_space", lambda *a, **k: 0)
    cfg.resume, cfg.train.max_steps = True, 4
    with pytest.raises(
        ck.DiskFullError, match=rf"no space left on {run / 'checkpoints'}.*last.ckpt is intact"
    ):
        pretrain(cfg, dataset=ToyVolumes())
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["step"] == 2
    assert not list((run / "checkpoints").glob(".*tmp*"))
    filler.unlink()
    pretrain(cfg, dataset=ToyVolumes())  # room again: the run goes on from step 2
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["step"] == 4
