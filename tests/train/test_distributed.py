"""2 processes (torchrun, gloo on CPU) with batch b per process == 1 process with batch 2b.

DistributedSampler gives process r the positions r, r+2, r+4, ... of the epoch's permutation, so
at step t the two per-process batches together hold perm[4t : 4t+4], exactly the single
process's batch (in another order). DDP averages the two per-process mean gradients, which
equals the single process's mean gradient; the toy's center is all-reduced. Only float
summation order differs, hence allclose rather than equal.
"""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch._dynamo  # noqa: F401  (the optimizer imports it; import it once, before forking)
import torch.multiprocessing as mp
from toy_training import EXACT, ToyAutoencoder, ToyVolumes, method_state, toy_config, write_script

from medmim.train.checkpoint import seed_everything
from medmim.train.loop import pretrain
from medmim.train.sampler import build_loader, start_epoch

COMMON = ("train.max_steps=6", "train.ckpt_every=6", *EXACT)


def test_sharded_batches_together_equal_the_single_process_batch() -> None:
    data = ToyVolumes(n=16)
    single, _ = build_loader(data, 4, 0, rank=0, world_size=1, seed=3)
    ranks = [build_loader(data, 2, 0, rank=r, world_size=2, seed=3) for r in (0, 1)]
    for epoch in (0, 1):
        one = [
            b["index"].tolist()
            for b in start_epoch(*build_loader(data, 4, 0, 0, 1, 3), epoch, 0, 3, 0)
        ]
        two = [
            [b["index"].tolist() for b in start_epoch(ld, sp, epoch, 0, 3, r)]
            for r, (ld, sp) in enumerate(ranks)
        ]
        assert len(one) == 4 and all(sorted(o) == sorted(x + y) for o, x, y in zip(one, *two))
        assert sorted(sum(one, [])) == list(range(16))
    skipped = [b["index"].tolist() for b in start_epoch(single, single.sampler, 1, 2, 3, 0)]
    assert skipped == one[2:]  # resuming mid-epoch skips exactly the used batches


def test_da_grouped_batches_are_dealt_whole_to_the_processes() -> None:
    """A batch sampler (PUMIT's DA buckets) replaces the item sampler: process r of 2 gets the
    whole global batches r, r+2, ..., each of one DA, and resumes mid-epoch by skipping batches."""
    import numpy as np

    from medmim.data.pumit import DABatchSampler, NativeSpacingCropDataset, SpacedImage

    rng = np.random.default_rng(0)
    spacings = [(1.0, 1.0, 1.0), (2.0, 1.0, 1.0), (4.0, 1.0, 1.0)] * 3
    data = NativeSpacingCropDataset(
        [SpacedImage(rng.random((1, 8, 8, 8), dtype=np.float32), s) for s in spacings],
        tokens=(1, 1),
        patch_size=8,
    )

    def epoch(rank: int, world: int, n: int, skip: int = 0) -> list[list[int]]:
        loader, sampler = build_loader(
            data,
            2,
            0,
            rank,
            world,
            3,
            batch_sampler=DABatchSampler(data.das, 2, n, seed=3, rank=rank, world_size=world),
        )
        batches = list(start_epoch(loader, sampler, 1, skip, 3, rank))
        assert all(len({data.das[i] for i in b["index"].tolist()}) == 1 for b in batches)
        assert all(b["views"][0].shape[0] == 2 and b["spacing"].shape == (2, 3) for b in batches)
        return [b["index"].tolist() for b in batches]

    one = epoch(0, 1, 6)
    assert len(one) == 6 and len({data.das[b[0]] for b in one}) > 1
    assert epoch(0, 2, 3) == one[0::2] and epoch(1, 2, 3) == one[1::2]
    assert epoch(0, 1, 6, skip=4) == one[4:] and epoch(1, 2, 3, skip=2) == one[5:]


def _rank(rank: int, root: str, port: int) -> None:
    """One process of the 2-process job: the environment torchrun would set, then train."""
    os.environ.update(
        {
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": "2",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
        }
    )
    torch.set_num_threads(1)
    pretrain(toy_config(Path(root), "name=ddp", "data.batch_size=2", *COMMON), dataset=ToyVolumes())


def test_two_processes_match_one_process_with_the_same_global_batch(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # fork: the workers start with everything imported (spawn/torchrun would re-import torch
    # and medmim, ~5 s per process); the code path is the torchrun one (env:// rendezvous)
    mp.start_processes(_rank, args=(str(root), port), nprocs=2, start_method="fork")
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        assert key not in os.environ  # set in the children only
    single = pretrain(
        toy_config(root, "name=single", "data.batch_size=4", *COMMON), dataset=ToyVolumes()
    )
    ddp_ckpt = torch.load(root / "ddp" / "checkpoints" / "last.ckpt", weights_only=True)
    assert (
        ddp_ckpt["step"] == 6
        and ddp_ckpt["sampler"]["world_size"] == 2
        and len(ddp_ckpt["rng"]) == 2
    )
    a, b = ddp_ckpt["method"], method_state(single)
    seed_everything(0)
    init = ToyAutoencoder({"name": "toy_encoder", "dim": 8}).state_dict()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)
    moved = max(float((b[k] - init[k]).abs().max()) for k in b if k.startswith("student."))
    assert moved > 1e-2  # the runs trained: agreement to 1e-6 is not agreement of the inits


@pytest.mark.slow
def test_torchrun_cli_path(tmp_path: Path) -> None:
    """The real launcher once: `torchrun --nproc_per_node=2 script.py` (gloo on CPU)."""
    root = tmp_path / "runs"
    script = write_script(tmp_path, root)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(script),
        "name=torchrun",
        "data.batch_size=2",
        "train.max_steps=2",
        *EXACT,
    ]
    done = subprocess.run(
        cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ckpt = torch.load(root / "torchrun" / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["step"] == 2 and len(ckpt["rng"]) == 2
    assert not torch.equal(ckpt["rng"][0]["torch"], ckpt["rng"][1]["torch"])  # seed + rank
