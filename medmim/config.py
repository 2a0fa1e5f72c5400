"""Configs: packaged YAML presets, `key=value` overrides, schema validation with did-you-mean.

A preset is a short YAML file under `medmim/configs/`. It may start from another preset with
`base: other_preset` (or a list of them); the keys of the file then override the base's.
Sections that a registry builds (`model`, `method`, ...) hold `name:` plus that entry's options;
the registry checks those options when it builds the object, so a typo never passes silently.

A schema may hook into loading (`RunConfig` does): `config_prepare(cfg) -> cfg` runs before every
validation (to expand shortcuts such as `data.recipe: mr` written in YAML, or apply a plan file),
`config_shortcut(key, value) -> value` rewrites each override's value before it is set, and the
overrides of the keys in `config_first` are applied (and validated) before the others, so that
the others apply on top of what they bring.

Example:
    >>> cfg = load_config("smart_demo", ["optim.base_lr=1e-3", "data.crop_size=[64,64,64]"])
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from medmim.errors import ConfigError, did_you_mean

CONFIG_DIR = Path(__file__).parent / "configs"


def list_presets() -> list[str]:
    """Names of the packaged presets."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def preset_path(name_or_path: str | Path) -> Path:
    """Resolve a preset name (`smart_demo`) or a YAML path to a file."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path
    packaged = (
        CONFIG_DIR / f"{path.stem if path.suffix in ('.yaml', '.yml') else name_or_path}.yaml"
    )
    if packaged.is_file():
        return packaged
    raise ConfigError(
        f"no preset or YAML file '{name_or_path}'.{did_you_mean(str(name_or_path), list_presets())}"
        f" Packaged presets: {', '.join(list_presets()) or '(none)'}"
    )


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping with `yaml.safe_load`; errors name the file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read YAML ({exc})") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a mapping of keys, got {type(data).__name__}")
    return data


def load_preset(name_or_path: str | Path, _seen: tuple[Path, ...] = ()) -> DictConfig:
    """Load a preset and the chain of `base:` presets below it, merged base-first."""
    path = preset_path(name_or_path).resolve()
    if path in _seen:
        raise ConfigError(f"{path}: 'base' presets form a cycle: {' -> '.join(map(str, _seen))}")
    data = load_yaml(path)
    bases = data.pop("base", None) or []
    bases = [bases] if isinstance(bases, str) else list(bases)
    merged = OmegaConf.create()
    for base in bases:
        base_ref = path.parent / base if (path.parent / base).is_file() else base
        merged = OmegaConf.merge(merged, load_preset(base_ref, _seen + (path,)))
    return OmegaConf.merge(merged, OmegaConf.create(data))  # type: ignore[return-value]


def _parse_value(text: str) -> Any:
    try:
        return yaml.safe_load(text) if text != "" else ""
    except yaml.YAMLError:
        return text


def _node_keys(cfg: Any, dotted: str) -> list[str]:
    node = OmegaConf.select(cfg, dotted) if dotted else cfg
    return list(node.keys()) if isinstance(node, DictConfig) else []


def apply_overrides(
    cfg: DictConfig,
    overrides: Sequence[str],
    shortcut: Callable[[str, Any], Any] | None = None,
) -> DictConfig:
    """Apply `a.b=value` overrides (values parsed as YAML). `+a.b=value` adds a new key.
    `shortcut(key, value)` may rewrite a value first (`data.recipe=mr` -> the preset's fields).

    Raises:
        ConfigError: for a malformed override or a key that does not exist, with the closest key.
    """
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form key=value")
        key, text = item.split("=", 1)
        add = key.startswith("+")
        key = key.lstrip("+").strip()
        parts = key.split(".")
        for i, part in enumerate(parts):
            parent = ".".join(parts[:i])
            node = OmegaConf.select(cfg, parent) if parent else cfg
            if not isinstance(node, DictConfig):
                if isinstance(node, ListConfig):
                    break
                raise ConfigError(f"override '{item}': '{parent}' is not a section")
            if part not in node and not add and not _is_open(node):
                keys = _node_keys(cfg, parent)
                raise ConfigError(
                    f"override '{item}': unknown key '{'.'.join(parts[: i + 1])}'."
                    f"{did_you_mean(part, keys)} Keys here: {', '.join(map(str, keys))}"
                    " (prefix with '+' to add a new key)"
                )
            if part not in node:
                break
        value = _parse_value(text)
        if shortcut is not None:
            value = shortcut(key, value)
        try:
            OmegaConf.update(cfg, key, value, merge=True, force_add=add)
        except OmegaConfBaseException as exc:
            raise ConfigError(f"override '{item}': {_first_line(exc)}") from exc
    return cfg


def _is_open(node: DictConfig) -> bool:
    """A section that a registry builds (it has a `name`) accepts new keys; the registry checks
    them against the entry's options when it builds the object.
    """
    return "name" in node


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def validate(cfg: DictConfig, schema: type) -> DictConfig:
    """Check `cfg` against a dataclass `schema` (types and key names); returns the typed config.
    The schema's `config_prepare(cfg)` hook, if any, runs first.
    """
    prepare = getattr(schema, "config_prepare", None)
    if prepare is not None:
        cfg = prepare(cfg)
    try:
        return OmegaConf.merge(OmegaConf.structured(schema), cfg)  # type: ignore[return-value]
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or getattr(exc, "key", None) or ""
        parent = ".".join(str(key).split(".")[:-1])
        known = _schema_keys(schema, parent)
        leaf = str(key).split(".")[-1]
        hint = did_you_mean(leaf, known) if known else ""
        raise ConfigError(f"config key '{key}': {_first_line(exc)}.{hint}") from exc


def _schema_keys(schema: type, dotted: str) -> list[str]:
    node: Any = schema
    for part in [p for p in dotted.split(".") if p]:
        fields = (
            {f.name: f for f in dataclasses.fields(node)} if dataclasses.is_dataclass(node) else {}
        )
        if part not in fields:
            return []
        node = fields[part].type if not isinstance(fields[part].type, str) else None
        if node is None:
            return []
    return [f.name for f in dataclasses.fields(node)] if dataclasses.is_dataclass(node) else []


def load_config(
    source: str | Path | dict[str, Any], overrides: Sequence[str] = (), schema: type | None = None
) -> DictConfig:
    """Load a preset (name or path, or a config already read, e.g. a run's saved one),
    validate it against `schema`, then apply overrides (those of the schema's `config_first`
    keys first, see the module docstring).
    """
    cfg = OmegaConf.create(source) if isinstance(source, dict) else load_preset(source)
    if schema is not None:
        cfg = validate(cfg, schema)
    first = tuple(getattr(schema, "config_first", ()))
    early = [o for o in overrides if o.split("=", 1)[0].lstrip("+").strip() in first]
    late = [o for o in overrides if o not in early]
    shortcut = getattr(schema, "config_shortcut", None)
    for group in (early, late) if early else (late,):
        cfg = apply_overrides(cfg, group, shortcut)
        if schema is not None:
            cfg = validate(cfg, schema)
    return cfg


def save_config(cfg: DictConfig | dict[str, Any], path: str | Path) -> None:
    """Write the resolved config as YAML (what every run directory keeps)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(OmegaConf.create(cfg) if isinstance(cfg, dict) else cfg, path, resolve=True)


def to_dict(cfg: Any) -> Any:
    """A plain Python dict/list view of a config node."""
    return OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else cfg
