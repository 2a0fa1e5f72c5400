"""Frozen embeddings of scans: `medmim embed` and the `medmim.load_encoder` API.

A scan reaches the encoder exactly as in `medmim classify` / `medmim cluster`
(`medmim.eval.labelled_sources`): the intensity part of the recipe (`prepare`: CT window ->
[0, 1], MR normalisation), then the whole volume resized (trilinear, `encoder_input`) to `size`,
else the encoder's pretraining crop, else its own shape rounded up to a multiple of 32
(`medmim.eval.encoders.input_size`). The embedding is one `forward_features` output
(`medmim.eval.encoders.select_feature`: auto, cls, pooled, patch_mean). The recipe is
`--recipe`, else the encoder's; a MedMNIST npz source gets the "medmnist" recipe (0..255 ->
[0, 1]), as `medmim cluster` reads it.

`run_embed` writes, in OUT:

    embeddings.npy   (N, C) float32, one row per readable scan, in the source's order
    index.csv        row, name, label (when the source has labels), feature
    embed.json       encoder, feature, recipe, size, source, counts, medmim version
    skipped.jsonl    {"path", "reason"} per unreadable scan (`on_error="skip"`)
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from medmim.errors import ConfigError, DataError
from medmim.eval.encoders import feature_name, input_size, load_encoder_or_scratch, select_feature
from medmim.eval.labelled import encoder_input
from medmim.eval.labelled_sources import prepare

log = logging.getLogger(__name__)
ON_ERROR = ("skip", "fail")
Volume = Any  #: a path, a numpy array (X, Y, Z) or a (Meta)Tensor (X, Y, Z) / (1, X, Y, Z)


@dataclass
class EmbedOptions:
    """Options of `medmim embed` (CLI flags of the same names, see `medmim embed --help`).

    Attributes:
        feature: auto, cls, pooled or patch_mean (`medmim.eval.encoders`).
        size: (D, H, W) every volume is resized to; None = the encoder's crop size.
        recipe: a recipe preset instead of the encoder's (a MedMNIST npz: "medmnist").
        image_key: the datalist / CSV field of the image path.
        split: the datalist section or npz split.
        batch_size, num_workers: of the DataLoader that reads the scans.
        on_error: "skip" lists an unreadable scan in skipped.jsonl and goes on; "fail" stops.
        seed, device, progress: as everywhere.
    """

    feature: str = "auto"
    size: Sequence[int] | None = None
    recipe: str | None = None
    image_key: str = "image"
    split: str = "training"
    batch_size: int = 8
    num_workers: int = 0
    on_error: str = "skip"
    seed: int = 0
    device: str = "auto"
    progress: bool = True


@dataclass
class Preprocessor:
    """A volume -> the encoder's input (C, D, H, W); picklable, so DataLoader workers run it.

    Attributes:
        recipe: the recipe dict whose intensity part is applied
            (`medmim.eval.labelled_sources.prepare`).
        meta: the encoder's encoder.json (crop_size, in_channels).
        size: the resize override (None: `input_size` decides per volume).
    """

    recipe: dict[str, Any]
    meta: dict[str, Any]
    size: Sequence[int] | None = None

    def __call__(self, volume: Volume) -> Tensor:
        """Apply the recipe's intensity part and resize: returns (C, D, H, W) float32."""
        image = prepare(as_volume(volume), self.recipe)
        size = input_size(self.size, self.meta, image.shape)
        return encoder_input(image, size, int(self.meta.get("in_channels") or 1))


def as_volume(volume: Volume) -> Tensor:
    """A path (read with `medmim.data.io.load_volume`), array or tensor -> (1, X, Y, Z)."""
    if isinstance(volume, (str, Path)):
        from medmim.data.io import load_volume

        return load_volume(volume)
    x = (
        torch.as_tensor(np.asarray(volume, dtype=np.float32))
        if isinstance(volume, np.ndarray)
        else volume
    )
    if not isinstance(x, Tensor) or x.ndim not in (3, 4) or (x.ndim == 4 and x.shape[0] != 1):
        shape = tuple(getattr(x, "shape", ()))
        raise ConfigError(
            f"embed: got {type(volume).__name__} of shape {shape}; give a path, "
            "an array (X, Y, Z) or a tensor (1, X, Y, Z)"
        )
    return x[None].float() if x.ndim == 3 else x.float()


class Encoder:
    """A frozen encoder with its encoder.json: `embed` scans, or read its raw `features`.

    Built by `medmim.load_encoder`; `medmim embed` uses the same object, so a row of its
    embeddings.npy equals `encoder.embed(path)` for that scan.

    Attributes:
        module: the backbone (eval mode), `forward_features(x) -> dict`.
        meta: its encoder.json (plus "pretrained"); for `scratch:` specs, method "scratch".
        feature: the embedding `embed` returns (auto, cls, pooled, patch_mean).
        preprocess: volume -> (C, D, H, W) input (`Preprocessor`).
        device: where `module` runs.
        batch_size: volumes per forward when `embed` gets a list.
    """

    def __init__(
        self,
        module: nn.Module,
        meta: dict[str, Any],
        preprocess: Preprocessor,
        feature: str = "auto",
        device: str | torch.device = "cpu",
        batch_size: int = 8,
    ) -> None:
        self.module, self.meta, self.preprocess = module.eval(), meta, preprocess
        self.feature, self.device, self.batch_size = feature, torch.device(device), batch_size
        self.feature_used: str | None = None  #: what `feature` resolved to, after a forward

    def __repr__(self) -> str:
        return (
            f"Encoder({self.meta['backbone'].get('name')}, method={self.meta.get('method')}, "
            f"feature={self.feature}, device={self.device})"
        )

    @torch.no_grad()
    def features(self, x: Tensor) -> dict[str, Any]:
        """The backbone's `forward_features` dict for a preprocessed input.

        Args:
            x: (B, C, D, H, W) or one (C, D, H, W) volume, e.g. from `preprocess`.

        Returns:
            The fixed-key dict of medmim/types.py: "patch" (B, N, C), "pooled" (B, C), "cls"
            (B, C) when the backbone has one, "grid", ...
        """
        x = x[None] if x.ndim == 4 else x
        return self.module.forward_features(x.to(self.device))

    def embed_inputs(self, inputs: Sequence[Tensor]) -> np.ndarray:
        """Preprocessed (C, D, H, W) inputs -> (N, C') float32; equal shapes share a forward."""
        out: list[Tensor | None] = [None] * len(inputs)
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, x in enumerate(inputs):
            groups.setdefault(tuple(x.shape), []).append(i)
        for index in groups.values():
            for start in range(0, len(index), self.batch_size):
                part = index[start : start + self.batch_size]
                feats = self.features(torch.stack([inputs[i] for i in part]))
                self.feature_used = feature_name(feats, self.feature)
                for i, row in zip(part, select_feature(feats, self.feature).float().cpu()):
                    out[i] = row
        return torch.stack(out).numpy() if out else np.zeros((0, 0), np.float32)  # type: ignore[arg-type]

    def embed(self, volume: Volume | list[Volume]) -> np.ndarray:
        """Embeddings of one volume (C',) or of a list of volumes (N, C'), float32.

        Args:
            volume: a path (NIfTI, NRRD, MHA, DICOM folder, ...), a numpy array (X, Y, Z) in
                the scan's units (e.g. HU), a MetaTensor / tensor (1, X, Y, Z), or a list.
        """
        if isinstance(volume, list):
            return self.embed_inputs([self.preprocess(v) for v in volume])
        return self.embed_inputs([self.preprocess(volume)])[0]


def load_encoder(
    path: str | Path,
    device: str | torch.device = "cpu",
    *,
    feature: str = "auto",
    recipe: str | None = None,
    size: Sequence[int] | None = None,
    seed: int = 0,
    batch_size: int = 8,
) -> Encoder:
    """An exported encoder (or `scratch:PRESET` / `scratch:EXPORT`) ready to embed scans.

    Args:
        path: the export folder, its encoder.json, or a `scratch:` spec (`medmim.eval.encoders`).
        device: "cpu", "cuda", "cuda:1", or "auto".
        feature: the embedding `Encoder.embed` returns.
        recipe: a recipe preset instead of the encoder's (e.g. "medmnist" for 0..255 crops).
        size: (D, H, W) volumes are resized to; None = the encoder's crop size.
        seed: the random init of a scratch encoder.
        batch_size: volumes per forward when embedding a list.

    Example:
        >>> enc = medmim.load_encoder("runs/smart/export")           # doctest: +SKIP
        >>> enc.embed("ct/case_001.nii.gz").shape                     # doctest: +SKIP
        (48,)
    """
    from medmim.eval.runtime import pick_device, resolve_recipe

    dev = pick_device(str(device))
    module, meta = load_encoder_or_scratch(path, seed=seed, device=dev)
    prep = Preprocessor(resolve_recipe(meta, recipe), meta, size)
    return Encoder(module, meta, prep, feature=feature, device=dev, batch_size=batch_size)


class _Scans(Dataset):
    """(index, input or None, (path, reason) or None) per record; a bad file is not raised here
    (DataLoader workers would lose its message), it is handed back.
    """

    def __init__(self, records: Sequence[Any], preprocess: Preprocessor) -> None:
        self.records, self.preprocess = records, preprocess

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> tuple[int, Tensor | None, tuple[str, str] | None]:
        try:
            return i, self.preprocess(self.records[i].load()), None
        except DataError as exc:
            return i, None, (exc.path, exc.reason)


def run_embed(
    encoder: str | Path, source: str | Path, out_dir: str | Path, opts: EmbedOptions | None = None
) -> dict[str, Any]:
    """Embed every scan of `source` with a frozen encoder and write OUT (module docstring).

    Args:
        encoder: an export folder / encoder.json or a `scratch:` spec.
        source: a folder, datalist JSON, CSV, MedMNIST npz or one image
            (`medmim.data.sources.resolve_source`).
        out_dir: the output folder (created).
        opts: see `EmbedOptions`.

    Returns:
        The contents of embed.json.

    Raises:
        ConfigError: a bad option (on_error, feature, recipe, size).
        DataError: an unreadable scan with `on_error="fail"`, or no readable scan at all.
    """
    from medmim.data.sources import resolve_source

    opts = opts or EmbedOptions()
    if opts.on_error not in ON_ERROR:
        raise ConfigError(f"--on-error {opts.on_error}: choose skip or fail")
    records = resolve_source(source, key=opts.image_key, split=opts.split)
    recipe = opts.recipe or ("medmnist" if records[0].array_key else None)
    enc = load_encoder(
        encoder,
        opts.device,
        feature=opts.feature,
        recipe=recipe,
        size=opts.size,
        seed=opts.seed,
        batch_size=opts.batch_size,
    )
    loader = DataLoader(
        _Scans(records, enc.preprocess),
        batch_size=opts.batch_size,
        num_workers=opts.num_workers,
        collate_fn=list,
    )
    parts, kept, skipped, sizes = [], [], [], set()
    for batch in tqdm(
        loader, desc=f"embed ({opts.feature})", unit="batch", disable=not opts.progress, leave=False
    ):
        for _, _, err in batch:
            if err is not None:
                if opts.on_error == "fail":
                    raise DataError(*err)
                log.warning("skipping %s: %s", *err)
                skipped.append(DataError(*err))
        ok = [(i, x) for i, x, err in batch if x is not None]
        if ok:
            parts.append(enc.embed_inputs([x for _, x in ok]))
            kept += [i for i, _ in ok]
            sizes.update(tuple(x.shape[1:]) for _, x in ok)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _write_skipped(out, skipped)
    if not kept:
        raise DataError(
            source,
            f"none of its {len(records)} scans could be read; the reasons "
            f"are in {out / 'skipped.jsonl'}",
        )
    feats = np.concatenate(parts).astype(np.float32)
    np.save(out / "embeddings.npy", feats)
    _write_index(out / "index.csv", [records[i] for i in kept], str(enc.feature_used))
    summary = _summary(enc, encoder, source, opts, feats, sizes, len(skipped))
    (out / "embed.json").write_text(
        json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8"
    )
    log.info(
        "embed: %d scans -> %s %s (%d skipped)",
        len(kept),
        out / "embeddings.npy",
        feats.shape,
        len(skipped),
    )
    return summary


def _write_skipped(out: Path, skipped: list[DataError]) -> None:
    """skipped.jsonl of this run only (an older one is replaced)."""
    from medmim.data.pretrain import write_skipped

    (out / "skipped.jsonl").unlink(missing_ok=True)
    write_skipped(skipped, out)


def _write_index(path: Path, records: Sequence[Any], feature: str) -> None:
    """index.csv: row of embeddings.npy, record name, label (if the source has labels), feature."""
    has_label = any(r.label is not None for r in records)
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["row", "name", *(["label"] if has_label else []), "feature"])
        for row, r in enumerate(records):
            label = [] if not has_label else ["" if r.label is None else r.label]
            w.writerow([row, r.name, *label, feature])


def _summary(
    enc: Encoder,
    spec: str | Path,
    source: str | Path,
    opts: EmbedOptions,
    feats: np.ndarray,
    sizes: set[tuple[int, ...]],
    num_skipped: int,
) -> dict[str, Any]:
    from medmim import __version__
    from medmim.eval.encoders import describe

    shapes = sorted(list(s) for s in sizes)
    return {
        "encoder": describe(spec, enc.meta),
        "feature": opts.feature,
        "feature_used": enc.feature_used,
        "recipe": enc.preprocess.recipe,
        "preprocessing": "the recipe's intensity mapping, then the whole volume resized to size",
        "size": shapes[0] if len(shapes) == 1 else shapes,
        "source": str(source),
        "split": opts.split,
        "image_key": opts.image_key,
        "num_embedded": int(feats.shape[0]),
        "num_skipped": num_skipped,
        "dim": int(feats.shape[1]),
        "medmim_version": __version__,
    }
