"""The pretraining dataset: every scan of a source, preprocessed and cached up front, sampled
as augmented views.

Contract (shared with `medmim.train`): `build_pretrain_dataset(data_cfg, run_dir, seed)` returns
a `torch.utils.data.Dataset` whose items are `{"views": [Tensor(C, D, H, W)] * num_views,
"index": int}`. Bad files are found before training: with `data.on_error=skip` each is appended
to `run_dir/skipped.jsonl` as `{"path": ..., "reason": ...}` and left out; with `fail` the first
one raises `DataError`. `build_pretrain_batch_sampler(data_cfg, dataset, num_batches, rank,
world_size, seed)` gives the engine the batch sampler of a mode that groups its batches
(`data.mode=native`: PUMIT's `DABatchSampler`, items with a "spacing" entry; see
`medmim.data.config.DataConfig`), or None when the engine shuffles items itself.

Reproducibility: the views of item `index` in epoch `epoch` are a pure function of
`(seed, epoch, index)` (a NumPy `SeedSequence`), whatever the number of workers or ranks and
whichever worker loads it, so resuming at an epoch replays the same crops. Call
`set_epoch(epoch)` before iterating an epoch; the epoch lives in shared memory, so it reaches
persistent DataLoader workers too.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from medmim.data.cache import CachedVolume, VolumeCache, cache_records
from medmim.data.config import as_data_config, view_geometry
from medmim.data.sources import Record, resolve_source
from medmim.data.views import ViewSampler
from medmim.errors import ConfigError, DataError, did_you_mean

log = logging.getLogger(__name__)
ON_ERROR = ("skip", "fail")
MODES = ("views", "native")


class PretrainDataset(Dataset):
    """Augmented views of cached scans.

    Args:
        volumes: (record, cache entry) pairs, one per scan.
        sampler: makes the views of one volume.
        seed: base seed of the run.
    """

    def __init__(
        self, volumes: list[tuple[Record, CachedVolume]], sampler: ViewSampler, seed: int = 0
    ) -> None:
        self.records = [r for r, _ in volumes]
        self.entries = [v for _, v in volumes]
        self.sampler = sampler
        self.seed = int(seed) & (2**63 - 1)
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def epoch(self) -> int:
        """The current epoch (held in shared memory, so loader workers see `set_epoch`)."""
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose crops `__getitem__` returns (visible to all workers)."""
        self._epoch.fill_(int(epoch))

    def rng(self, index: int) -> np.random.Generator:
        """The generator of item `index` in the current epoch."""
        return np.random.default_rng([self.seed, self.epoch, int(index)])

    def __getitem__(self, index: int) -> dict[str, Any]:
        """{"views": [float32 (C, D, H, W)] * num_views, "index": index} (and "local_views":
        [float32 (C, d, h, w)] * local_views when the sampler makes local crops).

        A cache file that vanished or broke after the up-front check (someone cleared the cache)
        does not stop the epoch: the next readable scan is used, with a warning.
        """
        for offset in range(len(self)):
            i = (int(index) + offset) % len(self)
            try:
                array = self.entries[i].array()
            except (OSError, ValueError) as exc:
                log.warning(
                    "cache entry of %s unreadable (%s); using the next scan",
                    self.records[i].name,
                    exc,
                )
                continue
            with _one_thread():
                views, local = self.sampler.sample(
                    array, self.rng(i), float(self.entries[i].meta["background"])
                )
            item: dict[str, Any] = {"views": views, "index": i}
            if local:
                item["local_views"] = local
            return item
        raise DataError(
            self.entries[0].path.parent.parent, "no readable cache entry left; rebuild the cache"
        )


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Run the view sampling on one intra-op thread, as DataLoader workers do. On small crops
    threads gain little, and with num_workers=0 on a busy CPU they cost 5-15x (measured).
    """
    n = torch.get_num_threads()
    if n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def build_pretrain_dataset(data_cfg: Any, run_dir: str | Path | None, seed: int) -> Dataset:
    """Resolve the source, cache every scan (tqdm), and return the dataset of the data mode.

    Args:
        data_cfg: a `DataConfig` (or its OmegaConf node / dict).
        run_dir: the run directory (for `skipped.jsonl`; its parent holds the default cache).
            Give it on every rank: only rank 0 writes, and all ranks must share one cache.
        seed: base seed; views depend only on (seed, epoch, index) (mode "native": on (seed,
            index, draw)).

    Returns:
        A `PretrainDataset` (mode "views") or a `medmim.data.pumit.NativeSpacingCropDataset`
        (mode "native").

    Raises:
        ConfigError: bad `on_error`, `mode`, or native-mode settings; a recipe made for another
            modality than the scans (`data.recipe_check`).
        DataError: with on_error=fail, the first bad file; always, when no scan is usable.
    """
    cfg = as_data_config(data_cfg)
    if cfg.on_error not in ON_ERROR:
        raise ConfigError(
            f"data.on_error='{cfg.on_error}' is unknown.{did_you_mean(cfg.on_error, ON_ERROR)} "
            "Choose skip or fail"
        )
    if cfg.mode not in MODES:
        raise ConfigError(
            f"data.mode='{cfg.mode}' is unknown.{did_you_mean(cfg.mode, MODES)} "
            "Choose views or native"
        )
    tokens = native_tokens(cfg) if cfg.mode == "native" else None
    volumes = _cache_source(cfg, run_dir)
    if tokens is not None:
        from medmim.data.pumit import NativeSpacingCropDataset, from_cached

        images = [from_cached(v.path, v.meta["spacing"], r.name) for r, v in volumes]
        return NativeSpacingCropDataset(
            images, tokens, cfg.patch_size, flip_prob=cfg.augment.flip_prob, seed=seed
        )
    sampler = ViewSampler(cfg.crop_size, cfg.augment, cfg.num_views, **view_geometry(cfg))
    return PretrainDataset(volumes, sampler, seed)


def _cache_source(cfg: Any, run_dir: str | Path | None) -> list[tuple[Record, CachedVolume]]:
    """Every usable scan of `cfg.source`, preprocessed into the cache; the bad ones recorded.
    First, unless `data.recipe_check=false`, a few raw scans must match the recipe's modality
    (`medmim.data.recipe_check`), so a CT window never silently flattens an MR source.
    """
    unlisted: list[DataError] = []  # sub-folders that cannot be listed, under on_error=skip
    records = resolve_source(
        cfg.source,
        key=cfg.key,
        split=cfg.split,
        skipped=unlisted if cfg.on_error == "skip" else None,
    )
    if cfg.recipe_check:
        from medmim.data.recipe_check import check_recipe_modality

        check_recipe_modality(records, cfg.recipe, source=str(cfg.source))
    cache = VolumeCache(
        cache_root(cfg.cache_dir, run_dir), cfg.recipe, allow_2d=cfg.mode == "native"
    )
    t0 = time.perf_counter()
    volumes, errors = cache_records(
        records, cache, on_error=cfg.on_error, desc="preprocess + cache"
    )
    errors = unlisted + errors
    skipped = write_skipped(errors, run_dir)
    log.info(
        "data: %d scans cached in %s (%.1f s); %d skipped%s",
        len(volumes),
        cache.root,
        time.perf_counter() - t0,
        len(errors),
        f", see {skipped}" if skipped else "",
    )
    if not volumes:
        raise DataError(
            cfg.source, f"no usable scan: all {len(records)} failed (first: {errors[0].reason})"
        )
    return volumes


def native_tokens(cfg: Any) -> tuple[int, int]:
    """The (t_z, t_x) token grid of a DA-0 crop in mode "native"; checks the native settings.

    Raises:
        ConfigError: resampling recipe, several views, or a crop that is not a token grid.
    """
    cfg = as_data_config(cfg)
    p, (d, h, w) = int(cfg.patch_size), (int(c) for c in cfg.crop_size)
    if cfg.recipe.spacing is not None:
        raise ConfigError(
            f"data.mode=native crops scans at their native spacing, but data.recipe.spacing="
            f"{list(cfg.recipe.spacing)} would resample them; set data.recipe.spacing=null"
        )
    if cfg.num_views != 1:
        raise ConfigError(
            f"data.mode=native makes one crop per scan; set data.num_views=1 (got {cfg.num_views})"
        )
    if p < 1 or p & (p - 1):
        raise ConfigError(f"data.patch_size={p}: give a power of two (PUMIT: 16)")
    if h != w or min(d, h) < p or d % p or h % p:
        raise ConfigError(
            f"data.crop_size={[d, h, w]}: in mode native give the DA-0 crop (t_z * {p}, t_x * {p}, "
            f"t_x * {p}) for data.patch_size={p}, e.g. [64, 128, 128] (4 x 8 x 8 tokens)"
        )
    return d // p, h // p


def build_pretrain_batch_sampler(
    data_cfg: Any, dataset: Dataset, num_batches: int, rank: int, world_size: int, seed: int
) -> Sampler[list[Any]] | None:
    """The batch sampler of `data.mode`, or None where the engine samples items itself.

    Mode "native": a `DABatchSampler` over `dataset.das` that yields `num_batches` whole,
    DA-homogeneous batches of `data.batch_size` per epoch to process `rank` of `world_size`.

    Raises:
        ConfigError: mode "native" with a dataset that knows no DAs; mode "views" with a
            dataset of several DAs (its crops differ in shape and cannot be batched).
    """
    cfg = as_data_config(data_cfg)
    das = getattr(dataset, "das", None)
    if cfg.mode != "native":
        if das is not None and len(set(das)) > 1:
            raise ConfigError(
                f"the dataset ({type(dataset).__name__}) holds scans of several degrees of "
                f"anisotropy {sorted(set(das))}, whose crops differ in shape; set data.mode=native "
                "to batch them by DA"
            )
        return None
    if das is None:
        raise ConfigError(
            f"data.mode=native batches scans by degree of anisotropy, but the dataset "
            f"({type(dataset).__name__}) has no `das`; use medmim.data.pumit."
            "NativeSpacingCropDataset or data.mode=views"
        )
    from medmim.data.pumit import DABatchSampler

    return DABatchSampler(
        das, int(cfg.batch_size), num_batches, seed=seed, rank=rank, world_size=world_size
    )


def cache_root(cache_dir: str, run_dir: str | Path | None) -> Path:
    """`cache_dir`, else `<run dir parent>/.cache`, else `$MEDMIM_CACHE` or `~/.cache/medmim`."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    if run_dir is not None:
        return Path(run_dir).parent / ".cache"
    return Path(os.environ.get("MEDMIM_CACHE", "~/.cache/medmim")).expanduser()


def write_skipped(errors: list[DataError], run_dir: str | Path | None) -> Path | None:
    """Append one JSON line per skipped file to `run_dir/skipped.jsonl`; return its path.
    Only rank 0 writes (every rank finds the same bad files).
    """
    if not errors or run_dir is None or int(os.environ.get("RANK", 0)) != 0:
        return None
    path = Path(run_dir) / "skipped.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        for exc in errors:
            fh.write(json.dumps(exc.to_record()) + "\n")
    return path
