"""The method registry, filled where each method lives: `@register_method("name", ConfigClass)`
beside the class. Keyed by the config type, so `prunekit.prune(model, config)` finds the method
from the config alone. Every module under `prunekit.methods` is imported on first use; methods
from other packages register through the `prunekit.methods` entry-point group or the
comma-separated module names in $PRUNEKIT_PLUGINS."""
from __future__ import annotations

import importlib
import os
import pkgutil

from ..errors import PrunekitError

_BY_CONFIG: dict[type, type] = {}
_BY_NAME: dict[str, type] = {}
_discovered = False


def register_method(name: str, config_class: type):
    """Class decorator: make `cls` the method named `name`, configured by `config_class`."""
    def decorate(cls):
        if name in _BY_NAME and _BY_NAME[name] is not cls:
            raise PrunekitError(f"method name '{name}' is registered twice ({_BY_NAME[name].__qualname__}, {cls.__qualname__})")
        cls.name, cls.config_class = name, config_class
        _BY_NAME[name] = cls
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


def all_methods() -> dict[str, type]:
    """name -> method class, in registration order."""
    discover()
    return dict(_BY_NAME)


def method_for(config) -> type:
    discover()
    try:
        return _BY_CONFIG[type(config)]
    except KeyError:
        raise PrunekitError(f"no method takes a {type(config).__name__}") from None


def method_class(name: str | None) -> type | None:
    """The method registered as `name`, or None: a report may name a method not installed here."""
    return all_methods().get(name)


def method_named(name: str) -> type:
    methods = all_methods()
    if name not in methods:
        raise PrunekitError(f"unknown method '{name}': choose from {', '.join(methods)}")
    return methods[name]
