"""Persistent on-disk cache of preprocessed volumes, shared by DataLoader workers and DDP ranks.

Layout::

    <root>/<recipe hash>/recipe.json            the recipe, for humans
    <root>/<recipe hash>/<kk>/<key>.npy         (1, X, Y, Z) array, read with mmap_mode="r"
    <root>/<recipe hash>/<kk>/<key>.json        geometry and provenance (see `Preprocessed`)

The key is the SHA-1 of the file's bytes (every file of a DICOM series folder, with its name),
plus the volume's place in an archive (MedMNIST); the recipe picks the folder. A changed file
or a changed recipe therefore never reads stale data. Within one process, a file whose inode,
size, modification and status-change times (ctime, which any write updates and `touch` cannot
set back) are unchanged is not hashed twice.

Writes are atomic (a unique temporary file in the same folder, then `os.replace`), the array
before its JSON: an entry exists once its JSON exists, so concurrent workers and ranks may
compute the same entry and the last rename wins with identical content. Reads are memory maps,
so every worker and rank on a machine shares one copy in the page cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medmim import __version__
from medmim.data.preprocess import preprocess, recipe_dict
from medmim.data.sources import Record
from medmim.errors import DataError

log = logging.getLogger(__name__)

#: Bump when the cached format or the preprocessing code changes meaning.
#: 2: "mr_zscore" normalises inside the foreground after a percentile clip, background 0.
CACHE_VERSION = 2
_CHUNK = 1 << 20
_digests: dict[tuple[str, int, int, int, int], str] = {}


@dataclass(frozen=True)
class CachedVolume:
    """A cache entry: `array()` is a read-only memory map of shape (1, X, Y, Z)."""

    path: Path
    meta: dict[str, Any]

    def array(self) -> np.ndarray:
        """Memory-map the cached (1, X, Y, Z) array, read-only."""
        return np.load(self.path, mmap_mode="r", allow_pickle=False)


def content_digest(path: str | Path) -> str:
    """SHA-1 of a file's bytes, or of a folder's direct files (names and bytes), read in chunks."""
    path = Path(path)
    if not path.exists():
        raise DataError(path, "file not found")
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    sha = hashlib.sha1()
    for file in files:
        stat = file.stat()
        memo = (str(file.resolve()), stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
        if memo not in _digests:
            h = hashlib.sha1()
            try:
                with open(file, "rb") as fh:
                    while chunk := fh.read(_CHUNK):
                        h.update(chunk)
            except OSError as exc:
                raise DataError(file, f"cannot be read: {exc.strerror or exc}") from exc
            _digests[memo] = h.hexdigest()
        sha.update(file.name.encode() if path.is_dir() else b"")
        sha.update(_digests[memo].encode())
    return sha.hexdigest()


class VolumeCache:
    """Preprocess-once, read-many store of volumes for one recipe.

    Args:
        root: the cache folder (created); shared by runs that use the same recipe.
        recipe: a `RecipeConfig` (or dict / OmegaConf node).
        allow_2d: accept one-slice 2D images (PUMIT's native mode); otherwise they are bad
            files, also when another run with `allow_2d` cached them.
    """

    def __init__(self, root: str | Path, recipe: Any, allow_2d: bool = False) -> None:
        self.allow_2d = allow_2d
        self.recipe = recipe_dict(recipe)
        blob = json.dumps({"recipe": self.recipe, "version": CACHE_VERSION}, sort_keys=True)
        self.recipe_hash = hashlib.sha1(blob.encode()).hexdigest()[:16]
        self.root = Path(root).expanduser() / self.recipe_hash
        self.root.mkdir(parents=True, exist_ok=True)
        if not (self.root / "recipe.json").exists():
            _atomic_write_text(self.root / "recipe.json", json.dumps(self.recipe, indent=2))

    def key(self, record: Record) -> str:
        """The entry's name: hash of the content and of the volume's place in an archive or
        DICOM folder (its series).
        """
        where = f"{record.array_key}:{record.array_index}" if record.array_key else ""
        where += f"|series:{record.series}" if record.series else ""
        return hashlib.sha1(f"{content_digest(record.image)}|{where}".encode()).hexdigest()

    def _paths(self, key: str) -> tuple[Path, Path]:
        folder = self.root / key[:2]
        return folder / f"{key}.npy", folder / f"{key}.json"

    def lookup(self, record: Record, key: str | None = None) -> CachedVolume | None:
        """The entry for `record` if it is complete, else None."""
        npy, meta_path = self._paths(key or self.key(record))
        if not (meta_path.exists() and npy.exists()):
            return None
        try:
            return CachedVolume(npy, json.loads(meta_path.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            return None

    def ensure(self, record: Record) -> CachedVolume:
        """The entry for `record`, preprocessing and writing it first when missing.

        Raises:
            DataError: when the file cannot be read or preprocessed (names the file and why).
        """
        key = self.key(record)
        found = self.lookup(record, key)
        if found is not None:
            shape = found.meta.get("original_shape", [])
            if not self.allow_2d and 1 in shape:
                raise DataError(
                    record.name, f"2D image of shape {tuple(shape)} where a 3D volume is expected"
                )
            return found
        t0 = time.perf_counter()
        try:
            result = preprocess(record.load(allow_2d=self.allow_2d), self.recipe)
        except DataError:
            raise
        except Exception as exc:  # a MONAI/numpy failure on odd geometry: name the file
            raise DataError(
                record.name, f"preprocessing failed: {type(exc).__name__}: {exc}"
            ) from exc
        npy, meta_path = self._paths(key)
        npy.parent.mkdir(parents=True, exist_ok=True)
        array = result.array.astype(self.recipe["cache_dtype"], copy=False)
        meta = {
            "source": record.name,
            "key": key,
            "recipe": self.recipe,
            "recipe_hash": self.recipe_hash,
            "dtype": str(array.dtype),
            "medmim_version": __version__,
            "seconds": round(time.perf_counter() - t0, 3),
            **result.meta,
        }
        _atomic_write(npy, lambda fh: np.save(fh, array, allow_pickle=False))
        _atomic_write_text(meta_path, json.dumps(meta, indent=1))
        return CachedVolume(npy, meta)


def _atomic_write(path: Path, write) -> None:
    """Write through `write(fh)` into a temporary file next to `path`, then rename over it."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a shared cache is read by other users too
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _atomic_write_text(path: Path, text: str) -> None:
    _atomic_write(path, lambda fh: fh.write(text.encode()))


def cache_records(
    records: list[Record],
    cache: VolumeCache,
    *,
    on_error: str = "skip",
    progress: bool = True,
    desc: str = "cache",
) -> tuple[list[tuple[Record, CachedVolume]], list[DataError]]:
    """Preprocess every record into `cache` up front, so bad files show before training.

    Under torchrun, rank r starts at record r * n / world so the ranks mostly fill different
    entries at first, then find the others' in the cache.

    Args:
        records: the scans to preprocess.
        cache: where the entries go (`VolumeCache.ensure` per record).
        on_error: "skip" collects bad files and goes on; "fail" raises at the first one.
        progress: show a progress bar.
        desc: the progress bar's label.

    Returns:
        (record, entry) pairs in the order of `records`, and the errors of the skipped files.
    """
    from tqdm.auto import tqdm

    rank, world = int(os.environ.get("RANK", 0)), max(1, int(os.environ.get("WORLD_SIZE", 1)))
    n = len(records)
    order = [(i + rank * n // world) % n for i in range(n)] if n else []
    done: dict[int, CachedVolume] = {}
    errors: dict[int, DataError] = {}
    for i in tqdm(order, desc=desc, unit="scan", disable=not progress or None, leave=False):
        try:
            done[i] = cache.ensure(records[i])
        except DataError as exc:
            if on_error == "fail":
                raise
            log.warning("skipping %s", exc)
            errors[i] = exc
    volumes = [(records[i], done[i]) for i in range(n) if i in done]
    return volumes, [errors[i] for i in sorted(errors)]
