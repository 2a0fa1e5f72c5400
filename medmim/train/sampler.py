"""Deterministic, resumable, sharded data order for pretraining.

Epoch `e` visits the dataset in the order `randperm(len, seed + e)` (torch's
`DistributedSampler`). Process `r` of `W` takes positions `r, r + W, r + 2W, ...`, so the
`W` per-process batches of step `t` hold exactly the samples that ONE process with a `W` times
larger batch would take at step `t`: perm[t*W*b : (t+1)*W*b]. That is what makes a `W`-process
run match a single-process run with the same global batch.

Data that must be batched in groups (PUMIT: one degree of anisotropy per batch) come with their
own batch sampler (`medmim.data.pretrain.build_pretrain_batch_sampler`), which `build_loader`
takes instead: it yields whole batches, shards them itself (`medmim.data.pumit.DABatchSampler`
deals each batch whole to one process, round-robin, so every process gets DA-homogeneous batches
and all get the same number) and is deterministic in (seed, epoch).

Resuming: the position inside an epoch is a function of the step, `(step % steps_per_epoch) *
accumulate` batches, which the sampler skips (`start`: in indices for `ResumableSampler`, in
batches for a batch sampler; `start_epoch` converts). Augmentations must not come from the
loader workers' random streams (which depend on which worker loads which batch): a dataset
that exposes `set_epoch(epoch)` is told the epoch and draws its randomness from (seed, epoch,
index); the loader's own generator is reseeded from (seed, epoch, rank) every epoch and never
touches the global random state.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from medmim.errors import ConfigError


class ResumableSampler(DistributedSampler):
    """`DistributedSampler` (shuffled from seed + epoch) that can start mid-epoch.

    Args:
        dataset: the map-style dataset.
        num_replicas: processes.
        rank: this process.
        seed: the run's seed.

    Attributes:
        start: indices of this process's epoch order to skip (set before iterating; reset by
            `set_epoch`).
    """

    def __init__(self, dataset: Dataset, num_replicas: int = 1, rank: int = 0, seed: int = 0):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Select epoch `epoch` and skip its first `start` indices (of this process)."""
        super().set_epoch(epoch)
        self.start = start

    def __iter__(self) -> Iterator[int]:
        return iter(list(super().__iter__())[self.start :])

    def __len__(self) -> int:
        return max(self.num_samples - self.start, 0)


def steps_per_epoch(num_items: int, batch_size: int, world_size: int, accumulate: int) -> int:
    """Optimizer steps in one epoch; incomplete batches and accumulation groups are dropped.

    Raises:
        ConfigError: when the dataset cannot fill a single step.
    """
    per_rank = -(-num_items // world_size)  # DistributedSampler pads to a multiple of W
    steps = (per_rank // batch_size) // accumulate
    if steps < 1:
        raise ConfigError(
            f"the dataset has {num_items} items but one optimizer step needs data.batch_size "
            f"({batch_size}) x optim.accumulate ({accumulate}) x processes ({world_size}) = "
            f"{batch_size * accumulate * world_size}; lower data.batch_size or optim.accumulate"
        )
    return steps


def build_loader(
    dataset: Dataset,
    batch_size: int,
    num_workers: int,
    rank: int,
    world_size: int,
    seed: int,
    pin_memory: bool = False,
    batch_sampler: Sampler[list[Any]] | None = None,
) -> tuple[DataLoader, Any]:
    """The pretraining DataLoader (drop_last, no persistent workers) and its sampler.

    Args:
        dataset: the pretraining dataset.
        batch_size: samples per batch on this process.
        num_workers: loader worker processes.
        rank: this process's rank, its shard of the data.
        world_size: number of processes sharing the data.
        seed: the sampler's shuffling seed.
        pin_memory: DataLoader `pin_memory`.
        batch_sampler: yields whole batches of dataset keys, already sharded for `rank`, and
            has `set_epoch(epoch, start)` (skip `start` batches); it replaces the engine's
            `ResumableSampler` (then `batch_size` and `seed` are the batch sampler's business).

    Returns:
        (loader, sampler): the sampler is the `ResumableSampler`, or `batch_sampler`.
    """
    common = {
        "num_workers": num_workers,
        "pin_memory": pin_memory,
        "generator": torch.Generator(),
        "persistent_workers": False,
    }
    if batch_sampler is not None:
        if not hasattr(batch_sampler, "set_epoch"):
            raise TypeError(
                f"{type(batch_sampler).__name__} needs set_epoch(epoch, start) to resume"
            )
        return DataLoader(dataset, batch_sampler=batch_sampler, **common), batch_sampler
    sampler = ResumableSampler(dataset, num_replicas=world_size, rank=rank, seed=seed)
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=True, **common)
    return loader, sampler


def start_epoch(
    loader: DataLoader,
    sampler: Any,
    epoch: int,
    skip_batches: int,
    seed: int,
    rank: int,
) -> Iterator[Any]:
    """An iterator over epoch `epoch` of `loader` that starts after `skip_batches` batches."""
    per_batch = 1 if loader.batch_sampler is sampler else int(loader.batch_size or 1)
    sampler.set_epoch(epoch, start=skip_batches * per_batch)
    dataset = loader.dataset
    if hasattr(dataset, "set_epoch"):
        dataset.set_epoch(epoch)
    assert loader.generator is not None
    loader.generator.manual_seed(hash((seed, epoch, rank)) & 0x7FFF_FFFF_FFFF_FFFF)
    return iter(loader)


def to_device(batch: Any, device: torch.device) -> Any:
    """Move every tensor of a (nested) batch to `device`."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch
