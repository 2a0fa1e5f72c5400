"""A method's training step (forward, backward, EMA hook) reads nothing back from the device
(issue 15): its logs stay tensors until the loop's check step reads them."""

from __future__ import annotations

import pytest
from host_sync import count_host_syncs
from method_helpers import build, make_batch
from test_method_contract import METHOD_NAMES


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_step_has_no_host_sync(name: str) -> None:
    method = build(name)
    batch = make_batch(batch_size=2)
    method(batch, step=0).loss.backward()  # first call: lazy set-up may read values
    method.zero_grad()
    with count_host_syncs() as calls:
        out = method(batch, step=1)
        out.loss.backward()
        method.on_optimizer_step(1)
    assert calls == [], calls
    assert out.logs  # logs exist, as tensors or host numbers
