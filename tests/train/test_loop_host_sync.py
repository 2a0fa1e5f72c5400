"""The training loop reads nothing back from the device outside its check steps (issue 15):
no `.item()`, `.tolist()`, `float(tensor)`, ... in a step that does not log or checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
from host_sync import count_host_syncs
from toy_training import ToyVolumes, toy_config

import medmim.train.loop as loop


@pytest.fixture
def step_syncs(monkeypatch: pytest.MonkeyPatch) -> dict[bool, list[list[str]]]:
    """Host reads per step, keyed by whether the step was a check step; data loading (host
    data, no device) is not counted."""
    seen: dict[bool, list[list[str]]] = {True: [], False: []}
    original = loop._train_step

    def counted(s, batches, step, check):
        def fetch():
            while True:
                yield next(batches)  # outside the counting block below

        pending = fetch()

        class Lazy:
            def __next__(self):
                with paused:
                    return next(pending)

        with count_host_syncs() as calls:
            paused.calls = calls
            out = original(s, Lazy(), step, check)
        seen[check].append(list(calls))
        return out

    class Paused:
        calls: list[str] = []

        def __enter__(self):
            self.mark = len(self.calls)

        def __exit__(self, *exc):
            del self.calls[self.mark :]

    paused = Paused()
    monkeypatch.setattr(loop, "_train_step", counted)
    return seen


def test_no_host_sync_outside_check_steps(tmp_path: Path, step_syncs) -> None:
    loop.pretrain(
        toy_config(tmp_path, "train.log_every=5", "train.ckpt_every=100", "train.max_steps=10"),
        dataset=ToyVolumes(),
    )
    assert len(step_syncs[False]) == 7 and len(step_syncs[True]) == 3  # steps 1, 5, 10 check
    assert step_syncs[False] == [[]] * 7, step_syncs[False]
    assert all(calls for calls in step_syncs[True])  # the counter sees the check steps' reads
