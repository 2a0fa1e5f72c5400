"""Errors that tell the user what is wrong and how to fix it."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path


def did_you_mean(value: str, choices: Iterable[str]) -> str:
    """Return ' Did you mean 'x'?' for the closest choice, or '' when none is close."""
    close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" Did you mean '{close[0]}'?" if close else ""


class ConfigError(ValueError):
    """A bad configuration value or key; the message names the key, the value and the fix."""


class DataError(ValueError):
    """An input file that cannot be used.

    Args:
        path: the offending file (or folder).
        reason: what is wrong with it, in words a user can act on.
    """

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def to_record(self) -> dict[str, str]:
        """A JSON-able record for `skipped.jsonl`."""
        return {"path": self.path, "reason": self.reason}
