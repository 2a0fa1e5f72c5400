"""Library errors in the CLI's words.

The library names its options as a Python user writes them, between backquotes: `group_key`
or `folds=0`. `flag_message` prints those as the flags that set them (`--group-key`,
`--folds 0`); any other backquoted text stays as it is.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

#: library option -> the flag that sets it (`medmim.eval.labelled_sources`, `medmim.eval.splits`).
OPTION_FLAGS: dict[str, str] = {
    "image_key": "--image-key",
    "label_key": "--label-key",
    "group_key": "--group-key",
    "class_names": "--class-names",
    "folds": "--folds",
    "test_size": "--test-size",
}

_OPTION = re.compile(r"`([a-z_]+)(?:=([^`]*))?`")


def flag_message(text: str, flags: Mapping[str, str] = OPTION_FLAGS) -> str:
    """`text` with each `option` / `option=value` that `flags` knows written as `--flag` /
    `--flag value`.

    Example:
        >>> flag_message("`folds=0`: use 1 or k >= 2; or pass `group_key=none`")
        '--folds 0: use 1 or k >= 2; or pass --group-key none'
    """

    def swap(match: re.Match[str]) -> str:
        flag = flags.get(match.group(1))
        if flag is None:
            return match.group(0)
        return flag if match.group(2) is None else f"{flag} {match.group(2)}"

    return _OPTION.sub(swap, text)
