"""The method registry, filled where each method lives: `@register_method("name", ConfigClass)`
beside the class. Keyed by the config type, so `prunekit.prune(model, config)` finds the method
from the config alone. Every module under `prunekit.methods` is imported on first use; methods
from other packages register through the `prunekit.methods` entry-point group or the
comma-separated module names in $PRUNEKIT_PLUGINS.

A method has one canonical name (what reports record, what `all_methods()` lists) and may keep
older names as aliases (`aliases=("search",)`): the command line, recipes and reports written
under the old name still find it."""
from __future__ import annotations

import importlib
import os
import pkgutil

from ..errors import PrunekitError

_BY_CONFIG: dict[type, type] = {}
_BY_NAME: dict[str, type] = {}
_ALIASES: dict[str, str] = {}       # old name -> canonical name
_discovered = False


class MethodTable(dict):
    """Canonical name -> method class, in registration order; looking a name up (`in`, `[]`,
    `get`) also takes an alias, iterating lists the canonical names only."""

    def __contains__(self, name) -> bool:
        return dict.__contains__(self, _ALIASES.get(name, name))

    def __getitem__(self, name) -> type:
        return dict.__getitem__(self, _ALIASES.get(name, name))

    def get(self, name, default=None):
        return dict.get(self, _ALIASES.get(name, name), default)


def register_method(name: str, config_class: type, aliases: tuple[str, ...] = ()):
    """Class decorator: make `cls` the method named `name`, configured by `config_class`, also
    found by each of `aliases` (names it had before)."""
    def decorate(cls):
        for n in (name, *aliases):
            owner = _BY_NAME.get(_ALIASES.get(n, n))
            if owner is not None and owner is not cls:
                raise PrunekitError(f"method name '{n}' is registered twice ({owner.__qualname__}, {cls.__qualname__})")
        cls.name, cls.config_class, cls.aliases = name, config_class, tuple(aliases)
        _BY_NAME[name] = cls
        _ALIASES.update({a: name for a in aliases})
        _BY_CONFIG[config_class] = cls
        return cls
    return decorate


def discover() -> None:
    """Import every method module once, then the plugins."""
    global _discovered
    if _discovered:
        return
    _discovered = True
    from .. import methods as package
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        importlib.import_module(info.name)
    from importlib.metadata import entry_points
    for ep in entry_points(group="prunekit.methods"):
        ep.load()
    for name in filter(None, (s.strip() for s in os.environ.get("PRUNEKIT_PLUGINS", "").split(","))):
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise PrunekitError(f"PRUNEKIT_PLUGINS names {name}, which cannot be imported: {e}") from e


def all_methods() -> MethodTable:
    """Canonical name -> method class, in registration order (an alias looks up too)."""
    discover()
    return MethodTable(_BY_NAME)


def method_for(config) -> type:
    discover()
    try:
        return _BY_CONFIG[type(config)]
    except KeyError:
        raise PrunekitError(f"no method takes a {type(config).__name__}") from None


def method_class(name: str | None) -> type | None:
    """The method registered as `name` (or once named so), or None: a report may name a method
    not installed here."""
    return all_methods().get(name)


def method_named(name: str) -> type:
    """The method registered as `name` (or once named so); unknown names list the methods."""
    methods = all_methods()
    if name not in methods:
        raise PrunekitError(f"unknown method '{name}': choose from {', '.join(methods)}")
    return methods[name]
