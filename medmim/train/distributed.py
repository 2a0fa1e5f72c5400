"""Data-parallel training through `torchrun` (one process per GPU, or per CPU slot with gloo).

`torchrun --nproc_per_node=N [--nnodes=M ...] -m medmim pretrain ...` sets RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR and MASTER_PORT; `init_distributed` reads them. Without them the run is a
single process and every helper here is a no-op.

How DDP sees a method: the WHOLE `PretrainMethod` is wrapped in `DistributedDataParallel`, so
`model(batch, step)` runs the method's forward (teacher and student) unchanged. DDP reduces the
gradients of the parameters that require grad (the student and its heads); an EMA teacher's
parameters have `requires_grad=False`, so DDP leaves them out of the reduction, and each rank
updates its teacher from identical student weights in `on_optimizer_step`, so teachers stay
identical. `find_unused_parameters` (train config) covers methods whose forward leaves some
trainable parameters without a gradient. Statistics that must be global (centers, prior
means) are all-reduced by the methods themselves.
"""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from medmim.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass
class DistInfo:
    """Where this process sits in the job.

    Attributes:
        rank: global rank (0 = main process: logs and checkpoints).
        world_size: number of processes.
        local_rank: rank on this node (picks the GPU).
        device: the device this process trains on.
        owns_group: True when `init_distributed` created the process group (and destroys it).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0 (the process that logs and checkpoints)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """Whether the job has more than one process."""
        return self.world_size > 1


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """The device for `name`: "auto" -> `cuda:LOCAL_RANK` when CUDA is available, else CPU.

    "cuda" means `cuda:LOCAL_RANK`; any other name goes to `torch.device`.

    Raises:
        ConfigError: `name` is not a device, or names CUDA where none is available.
    """
    if name == "auto":
        return (
            torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
        )
    try:
        device = torch.device(f"cuda:{local_rank}" if name == "cuda" else name)
    except RuntimeError as exc:
        raise ConfigError(
            f"train.device: '{name}' is not a device ({exc}); use auto, cpu or cuda"
        ) from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device={name} but CUDA is not available; use train.device=cpu")
    return device


def init_distributed(device: str = "auto", backend: str = "auto") -> DistInfo:
    """Join the torchrun job described by the environment (or run as a single process).

    Args:
        device: `train.device`.
        backend: "auto" (nccl on CUDA, gloo otherwise), "nccl" or "gloo".
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world <= 1:
        return DistInfo(device=dev)
    owns = False
    if not dist.is_initialized():
        if backend == "auto":
            backend = "nccl" if dev.type == "cuda" else "gloo"
        kwargs: dict[str, Any] = {"device_id": dev} if dev.type == "cuda" else {}
        dist.init_process_group(
            backend, init_method="env://", timeout=datetime.timedelta(minutes=30), **kwargs
        )
        owns = True
    info = DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, dev, owns)
    log.debug("process %d of %d on %s", info.rank, info.world_size, dev)
    return info


def wrap_ddp(method: nn.Module, info: DistInfo, find_unused_parameters: bool = True) -> nn.Module:
    """The method wrapped in DDP when distributed, else the method itself (see module doc)."""
    if not info.distributed:
        return method
    ids = [info.device.index] if info.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(
        method, device_ids=ids, find_unused_parameters=find_unused_parameters
    )


def unwrap(model: nn.Module) -> nn.Module:
    """The method inside a DDP wrapper."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def all_reduce_sum(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum `tensor` over processes, in place (no-op in a single process)."""
    if info.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_object(obj: Any, info: DistInfo) -> Any:
    """Rank 0's `obj` on every process."""
    if not info.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """`[obj of rank 0, obj of rank 1, ...]` on every process."""
    if not info.distributed:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(info: DistInfo) -> None:
    """Wait for every process."""
    if info.distributed:
        dist.barrier()


def cleanup(info: DistInfo) -> None:
    """Destroy the process group if `init_distributed` created it."""
    if info.owns_group and dist.is_initialized():
        dist.destroy_process_group()
