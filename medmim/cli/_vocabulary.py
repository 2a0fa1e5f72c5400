"""One flag vocabulary for every command: a concept has one canonical flag everywhere.

`FLAGS` lists each concept's canonical flag, the older spellings that keep working (argparse
aliases with the same `dest`) and the `medmim pretrain` config key it corresponds to.
`add_flag(parser, concept, ...)` is how a command adds one of these flags, so the names cannot
drift apart; `PRETRAIN_KEYS` maps every spelling to its pretrain key (for a did-you-mean when
someone writes `medmim pretrain --data X`). docs/cli.md shows the same table.

Two sizes stay distinct on purpose: `--crop-size` (alias `--roi`) is a crop or sliding window
*at the recipe's spacing* (what pretraining's `data.crop_size` is), while `--resize` (alias
`--size`) rescales a *whole* volume to that many voxels (classify, cluster, embed), changing its
physical scale.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Flag:
    """A concept's flag.

    Attributes:
        name: the canonical flag, e.g. "--source".
        aliases: older spellings parsed to the same dest, e.g. ("--data",).
        pretrain_key: the `medmim pretrain` key=value setting it mirrors, or None.
        meaning: one line for the docs table.
    """

    name: str
    aliases: tuple[str, ...]
    pretrain_key: str | None
    meaning: str

    @property
    def spellings(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)


#: concept (= argparse dest) -> its flag.
FLAGS: dict[str, Flag] = {
    "encoder": Flag("--encoder", (), None, "exported encoder folder, or scratch:PRESET"),
    "source": Flag(
        "--source",
        ("--data",),
        "data.source",
        "the scans: folder, datalist JSON, CSV, MedMNIST npz or one image",
    ),
    "image_key": Flag(
        "--image-key", ("--key",), "data.key", "datalist / CSV field that holds the image path"
    ),
    "split": Flag("--split", (), "data.split", "datalist section, npz split or CSV split"),
    "recipe": Flag("--recipe", (), "data.recipe", "preprocessing recipe preset"),
    "force_recipe": Flag(
        "--force-recipe",
        (),
        None,
        "apply the recipe to data of another modality (pretrain: data.recipe_check=false)",
    ),
    "crop_size": Flag(
        "--crop-size",
        ("--roi", "--crop"),
        "data.crop_size",
        "crop / sliding-window size in voxels at the recipe's spacing",
    ),
    "resize": Flag(
        "--resize", ("--size",), None, "whole volume resized to D,H,W (rescales; not a crop)"
    ),
    "max_steps": Flag("--max-steps", (), "train.max_steps", "optimizer steps"),
    "batch_size": Flag("--batch-size", (), "data.batch_size", "volumes per batch"),
    "num_workers": Flag(
        "--num-workers",
        ("--workers",),
        "data.num_workers",
        "parallel data-loading workers / processes",
    ),
    "on_error": Flag(
        "--on-error",
        (),
        "data.on_error",
        "an unreadable scan: skip (listed in skipped.jsonl) or fail",
    ),
    "cache_dir": Flag(
        "--cache-dir", (), "data.cache_dir", "persistent cache of preprocessed scans"
    ),
    "no_progress": Flag("--no-progress", (), "train.progress", "no progress bars"),
    "seed": Flag("--seed", (), "train.seed", "random seed"),
    "device": Flag("--device", (), "train.device", "auto, cpu, cuda, cuda:1, ..."),
    "out": Flag("--out", (), "output_dir", "output folder (pretrain: output_dir/name)"),
}

#: every spelling of a flag -> the pretrain config key it mirrors ("--data" -> "data.source").
PRETRAIN_KEYS: dict[str, str] = {
    spelling: flag.pretrain_key
    for flag in FLAGS.values()
    if flag.pretrain_key
    for spelling in flag.spellings
}


def pretrain_key(flag: str) -> str | None:
    """The `medmim pretrain` key for a downstream flag (`--crop-size=64` -> data.crop_size)."""
    return PRETRAIN_KEYS.get(flag.split("=", 1)[0])


def add_flag(parser: Any, concept: str, **kwargs: Any) -> argparse.Action:
    """`parser.add_argument` with the concept's canonical flag, its aliases and dest = concept.

    Args:
        parser: an `argparse.ArgumentParser` or argument group.
        concept: a key of `FLAGS`.
        **kwargs: the rest of `add_argument`'s arguments (type, default, help, ...).
    """
    flag = FLAGS[concept]
    return parser.add_argument(*flag.spellings, dest=concept, **kwargs)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Epilogs kept as written, and "(default: X)" after every option's help that does not
    already say its default (flags that take no value and required options get none).
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            "default" in text.lower()
            or action.default is argparse.SUPPRESS
            or action.required
            or action.nargs == 0
            or not action.option_strings
        ):
            return text
        shown = "not set" if action.default is None else "%(default)s"
        return f"{text} (default: {shown})".strip()


def use_formatter(parser: argparse.ArgumentParser) -> None:
    """Give `parser` and every sub-command parser under it `HelpFormatter`."""
    parser.formatter_class = HelpFormatter
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                use_formatter(sub)
