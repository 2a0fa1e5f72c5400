"""Labelled volumes for the downstream commands: the set (`LabelledSet`), the options that
`medmim classify` and `medmim cluster` share (`LabelledOptions`) and the dataset that feeds the
encoder (`VolumeDataset`). The readers of CSV and MedMNIST sources are in
`medmim.eval.labelled_sources`.

Every volume is resized (trilinear, MONAI `Resize`) to the encoder's input size only when a batch
is made (`VolumeDataset`), so a set of 28^3 crops stays small in memory however large the
encoder's crop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from monai.transforms import Resize
from torch.utils.data import Dataset

from medmim.errors import ConfigError


@dataclass
class LabelledSet:
    """Volumes with integer class labels.

    Attributes:
        images: N arrays (D, H, W), float32 in the recipe's range or uint8 (MedMNIST, / 255 later).
        labels: (N,) int64 class indices in [0, K).
        class_names: K names; `class_names[labels[i]]` is the label as written in the source.
        ids: N readable ids (path, or 'file.npz::test[3]').
        split: (N,) 'train' / 'val' / 'test' when the source fixes splits, else ''.
        source: the file it came from.
        groups: (N,) group ids (patient, phantom) of a CSV's group column, else None.
        group_key: the column `groups` came from (None = no groups).
    """

    images: Sequence[np.ndarray]
    labels: np.ndarray
    class_names: list[str]
    ids: list[str]
    split: np.ndarray
    source: str
    groups: np.ndarray | None = None
    group_key: str | None = None

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        """The number of classes K (the length of `class_names`)."""
        return len(self.class_names)

    @property
    def shape(self) -> tuple[int, int, int]:
        """The (D, H, W) of the first volume."""
        return tuple(int(s) for s in self.images[0].shape[-3:])  # type: ignore[return-value]


@dataclass
class LabelledOptions:
    """How labelled volumes reach the encoder: the options `medmim classify` and `medmim
    cluster` share (their flags: `medmim.cli._labelled_args`).

    Attributes:
        feature: the embedding (`medmim.eval.encoders`: auto, cls, pooled, patch_mean).
        size: (D, H, W) the volumes are resized to; None = the encoder's crop size.
        recipe: a recipe preset or plan file for CSV volumes instead of the encoder's.
        force_recipe: apply the recipe even to volumes of another modality.
        image_key, label_key: the CSV columns.
        group_key: the CSV column naming each sample's patient (group), kept on one side of
            every split: 'auto' = the first of `GROUP_COLUMNS` present (none present: no
            grouping), 'none' = no grouping, else that column.
        class_names: names of classes 0..K-1.
        seed, device, progress: as everywhere.
    """

    feature: str = "auto"
    size: Sequence[int] | None = None
    recipe: str | None = None
    force_recipe: bool = False
    image_key: str = "image"
    label_key: str = "label"
    group_key: str = "auto"
    class_names: Sequence[str] | None = None
    seed: int = 0
    device: str = "auto"
    progress: bool = True


def rename_classes(data: LabelledSet, names: Sequence[str] | None) -> LabelledSet:
    """Give the classes readable names (e.g. a MedMNIST npz holds only 0..K-1), in index order."""
    if not names:
        return data
    if len(names) != data.num_classes:
        raise ConfigError(
            f"`class_names` gives {len(names)} names but {data.source} has "
            f"{data.num_classes} classes ({', '.join(data.class_names)})"
        )
    data.class_names = [str(n) for n in names]
    return data


def subset(data: LabelledSet, index: Sequence[int]) -> LabelledSet:
    """The volumes at `index`, same classes (and their groups)."""
    index = np.asarray(index, dtype=np.int64)
    return LabelledSet(
        [data.images[i] for i in index],
        data.labels[index],
        data.class_names,
        [data.ids[i] for i in index],
        data.split[index],
        data.source,
        None if data.groups is None else data.groups[index],
        data.group_key,
    )


class VolumeDataset(Dataset):
    """`(volume (C, D, H, W) float32, label)` items at `size`, optionally flipped (training).

    Args:
        data: the labelled set.
        index: which of its volumes.
        size: (D, H, W) the encoder takes.
        in_channels: channels the encoder takes (a 1-channel volume is repeated).
        flip: random flips along each axis with p = 0.5 (fine-tuning augmentation).
    """

    def __init__(
        self,
        data: LabelledSet,
        index: Sequence[int],
        size: Sequence[int],
        in_channels: int = 1,
        flip: bool = False,
    ) -> None:
        self.data, self.index = data, np.asarray(index, dtype=np.int64)
        self.size, self.in_channels, self.flip = tuple(int(s) for s in size), in_channels, flip
        self.resize = Resize(self.size, mode="trilinear", anti_aliasing=True)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        j = int(self.index[i])
        x = encoder_input(self.data.images[j], self.size, 1, self.resize)
        if self.flip:
            dims = [d + 1 for d in range(3) if torch.rand(()) < 0.5]
            x = x.flip(dims) if dims else x
        x = x.expand(self.in_channels, *x.shape[1:]).contiguous()
        return x.as_subclass(torch.Tensor), int(self.data.labels[j])


def encoder_input(
    image: np.ndarray, size: Sequence[int], in_channels: int = 1, resize: Resize | None = None
) -> torch.Tensor:
    """One prepared volume (D, H, W) -> (in_channels, *size) float32: the encoder's input.

    uint8 volumes (MedMNIST) are divided by 255 first; the volume is resized (trilinear, with
    anti-aliasing) only when its shape differs from `size`. `VolumeDataset` and `medmim embed`
    (`medmim.eval.embed`) both make their inputs here.
    """
    size = tuple(int(s) for s in size)
    x = torch.as_tensor(np.asarray(image, dtype=np.float32))
    if np.asarray(image).dtype == np.uint8:
        x = x / 255.0
    x = x[None]
    if tuple(x.shape[1:]) != size:
        resize = resize or Resize(size, mode="trilinear", anti_aliasing=True)
        x = torch.as_tensor(resize(x)).float()
    return x.as_subclass(torch.Tensor).expand(in_channels, *x.shape[1:]).contiguous()
