"""Ctrl-C and SIGTERM (a cluster's preemption signal) stop a run cleanly.

The first SIGINT or SIGTERM asks the loop to stop after the current optimizer step; the loop
then writes last.ckpt (atomically, as always) and raises `RunInterrupted`, which
`medmim pretrain` turns into exit code 130 (SIGINT) or 143 (SIGTERM) and the exact resume
command. A second Ctrl-C raises `KeyboardInterrupt` at once; a checkpoint being written then is
left as a temp file, never as a half-written last.ckpt.
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

log = logging.getLogger("medmim.train")

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class RunInterrupted(Exception):
    """The run stopped on a signal after saving `checkpoint` at `step`."""

    def __init__(self, signum: int, step: int, checkpoint: Path) -> None:
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        super().__init__(f"{signal.Signals(signum).name} at step {step}; saved {checkpoint}")

    @property
    def exit_code(self) -> int:
        """128 + the signal number: 130 for SIGINT, 143 for SIGTERM."""
        return 128 + int(self.signum)


class StopRequest:
    """Context manager that records the first SIGINT/SIGTERM (`signum`) instead of dying.

    Installed only in the main thread (signal handlers cannot be set elsewhere); outside it,
    `signum` stays None and the signals keep their default behaviour.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
        self._old.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # the second Ctrl-C: stop now
        if self.signum is None:
            self.signum = signum
            log.warning(
                "%s received: finishing this step and saving last.ckpt (Ctrl-C again "
                "to stop at once)",
                signal.Signals(signum).name,
            )
