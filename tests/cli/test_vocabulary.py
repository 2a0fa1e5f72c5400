"""One flag vocabulary: every command's parser uses the canonical flags, old names still parse,
every --help shows defaults, and the pretrain mapping names real config keys."""

from __future__ import annotations

import argparse
import typing
from pathlib import Path

from medmim.cli._vocabulary import FLAGS, PRETRAIN_KEYS, HelpFormatter, pretrain_key
from medmim.cli.main import build_parser

DOCS = Path(__file__).resolve().parents[2] / "docs" / "cli.md"

#: command -> the concepts it has (so it must spell them with the canonical flag).
CONCEPTS: dict[str, set[str]] = {
    "classify": {
        "encoder",
        "source",
        "out",
        "recipe",
        "seed",
        "device",
        "image_key",
        "resize",
        "batch_size",
        "num_workers",
        "no_progress",
    },
    "cluster": {
        "encoder",
        "source",
        "out",
        "recipe",
        "seed",
        "device",
        "image_key",
        "resize",
        "batch_size",
        "num_workers",
        "no_progress",
        "split",
    },
    "embed": {
        "encoder",
        "source",
        "out",
        "recipe",
        "seed",
        "device",
        "image_key",
        "resize",
        "batch_size",
        "num_workers",
        "no_progress",
        "split",
        "on_error",
    },
    "segment": {
        "encoder",
        "source",
        "out",
        "recipe",
        "seed",
        "device",
        "crop_size",
        "max_steps",
        "batch_size",
        "no_progress",
    },
    "attention": {
        "encoder",
        "source",
        "out",
        "recipe",
        "seed",
        "device",
        "crop_size",
        "split",
        "no_progress",
    },
    "localize": {
        "encoder",
        "source",
        "out",
        "recipe",
        "seed",
        "device",
        "crop_size",
        "split",
        "no_progress",
    },
    "reconstruct": {"source", "out", "seed", "device"},
    "data cache": {"recipe", "cache_dir", "image_key", "split", "on_error", "no_progress"},
    "data fingerprint": {"out", "image_key", "split", "seed"},
    "data preview": {"out", "recipe", "crop_size", "cache_dir", "seed", "image_key", "split"},
    "data phantoms": {"out", "seed", "num_workers"},
}
#: (command, flag) spelled like a vocabulary flag but meaning something else, on purpose:
#: phantoms' --crop-size is the size of the nodule crops it writes, --size its voxel-size preset.
EXCEPTIONS = {("data phantoms", "--crop-size"), ("data phantoms", "--size")}


def _parsers() -> dict[str, argparse.ArgumentParser]:
    """Every command's parser, data subcommands as 'data <name>'."""
    found: dict[str, argparse.ArgumentParser] = {}

    def walk(parser: argparse.ArgumentParser, prefix: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    found[f"{prefix}{name}".strip()] = sub
                    walk(sub, f"{prefix}{name} ")

    root = build_parser()
    found[""] = root
    walk(root, "")
    return found


PARSERS = _parsers()


def test_every_command_with_a_concept_uses_its_canonical_flag() -> None:
    missing = [c for c in CONCEPTS if c not in PARSERS]
    assert not missing, f"commands not found in build_parser(): {missing}"
    for command, concepts in CONCEPTS.items():
        options = PARSERS[command]._option_string_actions
        for concept in concepts:
            flag = FLAGS[concept]
            assert flag.name in options, f"medmim {command} lacks {flag.name}"
            action = options[flag.name]
            assert action.dest == concept, f"medmim {command} {flag.name}: dest {action.dest}"
            for alias in flag.aliases:  # an old name is the same action: same dest, same type
                assert options.get(alias) is action, f"medmim {command}: {alias} is not an alias"


def test_no_command_spells_a_vocabulary_flag_with_another_meaning() -> None:
    owner = {s: concept for concept, f in FLAGS.items() for s in f.spellings}
    for command, parser in PARSERS.items():
        for spelling, action in parser._option_string_actions.items():
            if (
                action.help == argparse.SUPPRESS
            ):  # pretrain's hidden traps: they only print the key=value
                continue
            if spelling in owner and (command, spelling) not in EXCEPTIONS:
                assert action.dest == owner[spelling], (
                    f"medmim {command} {spelling} -> dest '{action.dest}', but the vocabulary "
                    f"says {FLAGS[owner[spelling]].name} ({owner[spelling]})"
                )


def test_old_names_parse_like_the_new() -> None:
    parser = build_parser()
    base = ["--encoder", "e", "--out", "o"]
    for command in ("segment", "attention", "localize"):
        old = vars(parser.parse_args([command, *base, "--data", "d.json", "--roi", "32"]))
        new = vars(
            parser.parse_args([command, *base, "--source", "d.json", "--crop-size", "32,32,32"])
        )
        assert old == new and new["source"] == "d.json" and new["crop_size"] == [32, 32, 32]
    old = parser.parse_args(
        ["embed", *base, "--data", "d", "--size", "48", "--workers", "2", "--key", "img"]
    )
    new = parser.parse_args(
        [
            "embed",
            *base,
            "--source",
            "d",
            "--resize",
            "48",
            "--num-workers",
            "2",
            "--image-key",
            "img",
        ]
    )
    assert vars(old) == vars(new) and new.resize == [48, 48, 48] and new.image_key == "img"
    assert vars(parser.parse_args(["data", "preview", "s", "--crop", "64", "32", "32"])) == vars(
        parser.parse_args(["data", "preview", "s", "--crop-size", "64", "32", "32"])
    )
    assert parser.parse_args(["data", "phantoms", "--out", "o", "--workers", "3"]).num_workers == 3


def test_every_help_shows_the_defaults() -> None:
    for command, parser in PARSERS.items():
        assert issubclass(parser.formatter_class, HelpFormatter), command
        formatter = parser.formatter_class(prog="medmim")
        in_required_group = {
            a for g in parser._mutually_exclusive_groups if g.required for a in g._group_actions
        }
        for action in parser._actions:
            if not action.option_strings or action.nargs == 0 or action.required:
                continue
            text = formatter._get_help_string(action)
            assert "default" in text.lower(), f"medmim {command} {action.option_strings[0]}"
            if command in CONCEPTS and action not in in_required_group:
                assert "not set" not in text, (  # a None default must say what None means
                    f"medmim {command} {action.option_strings[0]}: say what the default is"
                )
    assert "(default: 200)" in PARSERS["segment"].format_help()
    assert "(default: runs/.cache)" in PARSERS["data cache"].format_help()
    assert "examples:\n  medmim pretrain" in PARSERS["pretrain"].format_help()  # epilog kept


def _field_type(schema: type, name: str) -> typing.Any:
    hints = typing.get_type_hints(schema)
    assert name in hints, f"{schema.__name__} has no field '{name}'"
    return hints[name]


def test_pretrain_keys_are_real_config_keys() -> None:
    from medmim.train.config import RunConfig

    expected = {
        "--data": "data.source",
        "--source": "data.source",
        "--crop-size": "data.crop_size",
        "--roi": "data.crop_size",
        "--max-steps": "train.max_steps",
        "--recipe": "data.recipe",
        "--batch-size": "data.batch_size",
        "--num-workers": "data.num_workers",
        "--key": "data.key",
    }
    assert {k: PRETRAIN_KEYS[k] for k in expected} == expected
    assert pretrain_key("--crop-size=64") == "data.crop_size" and pretrain_key("--lr") is None
    for key in set(PRETRAIN_KEYS.values()):  # each names a field of the pretrain schema
        schema: typing.Any = RunConfig
        for part in key.split("."):
            schema = _field_type(schema, part)


def test_docs_table_lists_every_flag() -> None:
    text = DOCS.read_text(encoding="utf-8")
    for flag in FLAGS.values():
        row = next(
            (line for line in text.splitlines() if line.startswith(f"| `{flag.name}`")), None
        )
        assert row, f"docs/cli.md has no table row for {flag.name}"
        for alias in flag.aliases:
            assert f"`{alias}`" in row, f"docs/cli.md: {flag.name} row lacks alias {alias}"
        assert f"`{flag.pretrain_key}`" in row if flag.pretrain_key else "| - |" in row, row
