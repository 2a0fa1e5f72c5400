"""An exclusive lock on a run directory, held for the life of a run.

Two `medmim pretrain` processes on one run directory would interleave metrics.jsonl and could
delete each other's checkpoint temp files; the second one is refused instead. The lock is
`fcntl.flock` on `<run dir>/.lock`: the kernel drops it when its process exits in any way
(SIGKILL included), so a lock is never stale. The file keeps the holder's pid for the message.
Where `fcntl` does not exist (Windows) runs are not locked.
"""

from __future__ import annotations

import os
from pathlib import Path

from medmim.errors import ConfigError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = ".lock"


class RunLock:
    """`acquire()` takes the lock of `run_dir` (creating the folder), `release()` drops it.

    Example:
        >>> lock = RunLock(Path("runs/x")).acquire()   # a second acquire elsewhere: ConfigError
        >>> lock.release()
    """

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        """Take the lock, or raise a `ConfigError` naming the process that holds it."""
        if fcntl is None or self._fd is not None:
            return self
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise ConfigError(
                f"cannot write to run directory {self.run_dir} ({exc.strerror or exc}); "
                "set output_dir= to a writable folder"
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 32).decode(errors="replace").strip()
            os.close(fd)
            raise ConfigError(
                f"{self.run_dir} is in use by another medmim process"
                f"{f' (pid {holder})' if holder.isdigit() else ''}; wait for it to finish or stop "
                "it, or choose another name="
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        """Drop the lock (idempotent); the file stays."""
        if self._fd is None:
            return
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None
