"""Count the calls that read a tensor's value back to the host (on a GPU each one waits for
the queue to drain): `.item()`, `.tolist()`, `.cpu()`, `.numpy()`, `bool()`, `float()`,
`int()` of a tensor. On a CPU they are cheap, but the same code on a GPU stalls, so the
training step is checked for them here."""

from __future__ import annotations

import contextlib
import traceback
from collections.abc import Iterator

import torch

_NAMES = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__")


@contextlib.contextmanager
def count_host_syncs() -> Iterator[list[str]]:
    """Within the block, every host read of a tensor appends 'name at file:line' (the caller's
    frame) to the yielded list."""
    calls: list[str] = []
    # AdamW's step counter is a host tensor (unless fused/capturable): reading it never waits
    # for the device, so torch.optim's own reads are not counted
    originals = {name: getattr(torch.Tensor, name) for name in _NAMES}

    def wrap(name: str, fn):
        def counted(self, *args, **kwargs):
            frame = traceback.extract_stack(limit=2)[0]
            host = frame.name == "host_scalar"  # medmim.masking.utils: a CPU draw, by design
            if not host and "torch/optim/" not in frame.filename.replace("\\", "/"):
                calls.append(f"{name} at {frame.filename}:{frame.lineno}")
            return fn(self, *args, **kwargs)

        return counted

    try:
        for name, fn in originals.items():
            setattr(torch.Tensor, name, wrap(name, fn))
        yield calls
    finally:
        for name, fn in originals.items():
            setattr(torch.Tensor, name, fn)
