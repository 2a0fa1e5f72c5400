"""One tiny registry, used by every part that a config names (backbones, maskers, heads, ...).

Example:
    >>> from medmim.registry import Registry
    >>> MASKERS = Registry("masker")
    >>> @MASKERS.register("random")
    ... class RandomMasker:
    ...     def __init__(self, ratio: float = 0.7): self.ratio = ratio
    >>> MASKERS.build({"name": "random", "ratio": 0.5}).ratio
    0.5
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

from medmim.errors import ConfigError, did_you_mean

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to classes or factory functions of one kind.

    Args:
        kind: what is registered ("backbone", "masker", ...), used in error messages.
    """

    def __init__(self, kind: str, package: str | None = None) -> None:
        self.kind = kind
        self.package = package
        self._entries: dict[str, Callable[..., T]] = {}

    def _load(self) -> None:
        """Import the package whose modules register entries here (once, on first lookup)."""
        if self.package is not None:
            package, self.package = self.package, None
            import_submodules(package)

    def register(self, name: str | None = None) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator that registers a class or function under `name` (default: its own name)."""

        def deco(obj: Callable[..., T]) -> Callable[..., T]:
            key = name or obj.__name__
            if key in self._entries and self._entries[key] is not obj:
                raise ConfigError(f"{self.kind} '{key}' is registered twice")
            self._entries[key] = obj
            return obj

        return deco

    def get(self, name: str) -> Callable[..., T]:
        """The entry called `name`, or a ConfigError listing the known names."""
        self._load()
        if name not in self._entries:
            raise ConfigError(
                f"unknown {self.kind} '{name}'.{did_you_mean(name, self._entries)}"
                f" Known: {', '.join(sorted(self._entries)) or '(none)'}"
            )
        return self._entries[name]

    def names(self) -> list[str]:
        """All registered names, sorted."""
        self._load()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._entries

    def build(self, spec: str | Mapping[str, Any], **extra: Any) -> T:
        """Build an entry from `{"name": ..., **kwargs}` (or a bare name) plus `extra` kwargs.

        Unknown keyword arguments raise a ConfigError with a did-you-mean hint, so a typo in a
        YAML preset or a `key=value` override never passes silently.
        """
        if isinstance(spec, str):
            spec = {"name": spec}
        kwargs = {k: v for k, v in dict(spec).items() if k != "name"}
        if "name" not in spec:
            raise ConfigError(f"a {self.kind} config needs a 'name' (one of {self.names()})")
        factory = self.get(str(spec["name"]))
        kwargs.update(extra)
        check_kwargs(factory, kwargs, f"{self.kind} '{spec['name']}'")
        return factory(**kwargs)


def accepted_options(factory: Callable[..., Any]) -> list[str] | None:
    """The keyword options `factory` takes, or None when it takes any.

    A class whose `__init__` passes `**kwargs` on to its parent's (`super().__init__(...,
    **kwargs)`) takes the parent's keyword parameters too; positional-only parameters are not
    options.
    """
    if isinstance(factory, type):
        owners = [c.__init__ for c in factory.__mro__ if "__init__" in vars(c)]
    else:
        owners = [factory]
    names: list[str] = []
    for owner in owners:
        try:
            params = inspect.signature(owner).parameters
        except (TypeError, ValueError):  # builtins without a signature
            return None
        keyword = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        names += [
            n for n, p in params.items() if p.kind in keyword and n != "self" and n not in names
        ]
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            return names
    return None


def check_kwargs(factory: Callable[..., Any], kwargs: Mapping[str, Any], what: str) -> None:
    """Raise ConfigError when `kwargs` holds a name that `factory` does not accept.

    A factory's `moved_options` ({old option: new config key}) turns an option that moved
    elsewhere into an error naming its new key.
    """
    moved = getattr(factory, "moved_options", {})
    for key in kwargs:
        if key in moved:
            raise ConfigError(
                f"{what}: option '{key}' moved to '{moved[key]}'; set {moved[key]}=... instead"
            )
    accepted = accepted_options(factory)
    if accepted is None:
        return
    for key in kwargs:
        if key not in accepted:
            raise ConfigError(
                f"{what} has no option '{key}'.{did_you_mean(key, accepted)}"
                f" Options: {', '.join(accepted)}"
            )


def import_submodules(package: str) -> None:
    """Import every module of `package` so that their `@REGISTRY.register` decorators run.

    A registry calls this for its package on first lookup, so a new file registers itself
    without anyone editing a list, and importing one module never imports its siblings.
    """
    module = importlib.import_module(package)
    for info in pkgutil.iter_modules(module.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package}.{info.name}")


BACKBONES: Registry[Any] = Registry("backbone", "medmim.models")
MASKERS: Registry[Any] = Registry("masker", "medmim.masking")
HEADS: Registry[Any] = Registry("head", "medmim.heads")
LOSSES: Registry[Any] = Registry("loss", "medmim.losses")
METHODS: Registry[Any] = Registry("method", "medmim.methods")
DECODERS: Registry[Any] = Registry("decoder", "medmim.models")
