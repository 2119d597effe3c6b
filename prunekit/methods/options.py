"""Options declared once: each config field carries its help text (and, where the flag is not
the field name, its flag) as dataclass field metadata. The command line is generated from these;
defaults are stated by the field itself. `MethodConfig.from_dict` is the one way a config is built
from names and values (the command line's, a recipe's, a report's), `to_dict` the one way it is
written; shared option groups (`DampedConfig`, `FitnessOptions`) are mixins here."""
from __future__ import annotations

import dataclasses
import functools
import numbers
import os
import types
import typing
from dataclasses import dataclass
from collections.abc import Mapping
from typing import Any

from ..errors import ConfigError
from ..scoring.executors import EXECUTORS

_MISSING = dataclasses.MISSING
CONFIG_VERSION = 1          # written by to_dict() as VERSION_KEY; a dict without it is a version-0 report
VERSION_KEY = "_version"


def option(default: Any = None, help: str = "", *, flag: str | None = None, choices=None,
           default_text: str | None = None, cli: bool = True) -> Any:
    """A config field with its documentation. `default_text` replaces the stated default where the
    field's own default (None) means "chosen later" (per family, from the model, ...)."""
    meta = {"help": help, "flag": flag, "choices": choices, "default_text": default_text, "cli": cli}
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def flag_of(field: dataclasses.Field) -> str:
    return field.metadata.get("flag") or "--" + field.name.replace("_", "-")


def default_text(field: dataclasses.Field) -> str:
    text = field.metadata.get("default_text")
    if text is not None:
        return text
    value = field.default if field.default is not _MISSING else None
    if isinstance(value, bool):
        return "on" if value else "off"
    return "none" if value is None else str(value)


def value_type(config_cls, field: dataclasses.Field) -> type:
    """bool, int, float or str: the field's annotation with Optional removed."""
    hint = typing.get_type_hints(config_cls)[field.name]
    args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    return args[0] if args[0] in (bool, int, float) else str


def cli_fields(config_cls) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(config_cls) if f.metadata.get("cli", True) and f.metadata.get("help")]


def declaring_class(config_cls, name: str):
    """The class in `config_cls`'s hierarchy that declares field `name` (its option group)."""
    for klass in reversed(config_cls.__mro__):
        if name in getattr(klass, "__dataclass_fields__", {}) and name in klass.__dict__.get("__annotations__", {}):
            return klass
    return config_cls


@functools.lru_cache(maxsize=None)
def _hints(config_cls) -> dict:
    return typing.get_type_hints(config_cls)


_WORDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _conform(value, hint) -> tuple[bool, Any, str]:
    """(whether `value` fits the annotation `hint`, the value as stored, what the hint asks for).
    A bool is not an int; an int (any integral or real number) is taken for a float and stored as
    one; None only where the hint is Optional; a path is taken for a str; lists and tuples as
    annotated, element by element."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        arms = [a for a in args if a is not type(None)]
        if value is None and len(arms) < len(args):
            return True, None, ""
        for arm in arms:
            ok, fixed, _ = _conform(value, arm)
            if ok:
                return True, fixed, ""
        words = [_conform(None, a)[2] for a in arms] + (["None"] if len(arms) < len(args) else [])
        return False, value, " or ".join(words)
    if hint is Any:
        return True, value, "anything"
    if origin is typing.Literal:
        return value in args, value, "one of " + ", ".join(map(repr, args))
    if origin in (list, tuple) or hint in (list, tuple):
        kind = origin or hint
        if not isinstance(value, (list, tuple)):
            return False, value, f"a {kind.__name__}"
        if kind is tuple and args and args[-1] is not Ellipsis:      # tuple[X, Y]: fixed length
            if len(value) != len(args):
                return False, value, f"a tuple of {len(args)} items"
            elems = list(args)
        else:
            elems = [args[0] if args else Any] * len(value)
        items = []
        for item, elem in zip(value, elems):
            ok, fixed, word = _conform(item, elem)
            if not ok:
                return False, value, f"a {kind.__name__} of items that are each {word}"
            items.append(fixed)
        return True, kind(items), f"a {kind.__name__}"
    if hint is bool:
        return isinstance(value, bool), value, _WORDS[bool]
    if hint is int:
        ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
        return ok, int(value) if ok else value, _WORDS[int]
    if hint is float:
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
        return ok, float(value) if ok else value, _WORDS[float]
    if hint is str:
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        return isinstance(value, str), value, _WORDS[str]
    if isinstance(hint, type):
        return isinstance(value, hint), value, f"a {hint.__name__}"
    return True, value, str(hint)       # an annotation this check does not know: not refused


def _shown(value) -> str:
    text = repr(value)
    text = text if len(text) <= 60 else text[:57] + "..."
    return f"{type(value).__name__} {text}".replace("{", "{{").replace("}", "}}")


def check_types(config) -> None:
    """Refuse, with a ConfigError naming the field, a value that does not fit the field's
    annotation (see _conform); numbers are stored as the annotated type (1 for a float field is
    kept as 1.0, a path for a str field as its string)."""
    if not dataclasses.is_dataclass(config):
        return
    hints = _hints(type(config))
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        ok, fixed, want = _conform(value, hints[f.name])
        if not ok:
            raise ConfigError(f"{{{f.name}}} must be {want} (got {_shown(value)})")
        if fixed is not value:
            object.__setattr__(config, f.name, fixed)


def _types_first(post_init):
    @functools.wraps(post_init)
    def wrapper(self):
        check_types(self)
        post_init(self)
    wrapper.checks_types = True
    return wrapper


_TRUE, _FALSE, _NONE = ("true", "on", "yes", "1"), ("false", "off", "no", "0"), ("none", "null", "")


def from_text(text: str, hint) -> Any:
    """A command-line or YAML string as the annotation `hint` asks for: bool from true/false,
    on/off, yes/no, 1/0; int and float parsed; None from none/null/"" where the hint is Optional
    and not a str. A string that does not parse is returned as it is, so that check_types names
    what the field wanted."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        arms = [a for a in args if a is not type(None)]
        if str in arms:
            return text
        if len(arms) < len(args) and text.strip().lower() in _NONE:
            return None
        for arm in arms:
            value = from_text(text, arm)
            if value is not text:
                return value
        return text
    word = text.strip().lower()
    if hint is bool:
        return True if word in _TRUE else False if word in _FALSE else text
    for kind in (int, float):
        if hint is kind:
            try:
                return kind(text.strip())
            except ValueError:
                return text
    return text


def _named(key) -> str:
    """`key` as a {field} placeholder, or quoted literal text where it cannot be one."""
    key = str(key)
    return "{" + key + "}" if key.isidentifier() else repr(key).replace("{", "{{").replace("}", "}}")


@dataclass
class MethodConfig:
    """Base of every method config: plain data, validated on construction. Every field's value is
    checked against its annotation first (check_types), also in subclasses that define their own
    `__post_init__`: it is wrapped so that the type check runs before its own checks."""

    def __post_init__(self):
        check_types(self)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("__post_init__")
        if own is not None and not getattr(own, "checks_types", False):
            cls.__post_init__ = _types_first(own)

    @classmethod
    def from_dict(cls, values: Mapping, *, owner: str | None = None):
        """The config from field names and values, each a Python value or a string (the command
        line's, YAML's) converted to the field's annotated type (from_text). A ConfigError naming
        the field for a name the config does not take (`owner` says whose options these are,
        default the class name) or a value that does not fit; a dict written by to_dict, with its
        VERSION_KEY or without it (a report from before the key existed), loads back."""
        if not isinstance(values, Mapping):
            raise ConfigError(f"{owner or cls.__name__} options must be a mapping of names to values "
                              f"(got {_shown(values)})")
        values = dict(values)
        version = values.pop(VERSION_KEY, 0)
        if not isinstance(version, int) or isinstance(version, bool) or not 0 <= version <= CONFIG_VERSION:
            shown = repr(version).replace("{", "{{").replace("}", "}}")
            raise ConfigError(f"{owner or cls.__name__} options of format version {shown}: this "
                              f"prunekit reads versions up to {CONFIG_VERSION}")
        fields = [f.name for f in dataclasses.fields(cls) if f.init]
        for key in values:
            if key not in fields:
                raise ConfigError(f"{_named(key)} does not apply to {owner or cls.__name__}; it takes "
                                  + ", ".join(map(_named, fields)))
        hints = _hints(cls)
        return cls(**{k: from_text(v, hints[k]) if isinstance(v, str) else v for k, v in values.items()})

    def to_dict(self) -> dict:
        """Every field's value and the format version (VERSION_KEY), as from_dict reads them."""
        return {VERSION_KEY: CONFIG_VERSION, **dataclasses.asdict(self)}


@dataclass
class DampedConfig(MethodConfig):
    """Hessian dampening, shared by every method that inverts an input Hessian."""
    percdamp: float = option(0.01, "dampening added to the Hessian diagonal, relative to its mean")

    def __post_init__(self):
        require(self.percdamp > 0, "{percdamp} must be positive")


@dataclass
class FitnessOptions(MethodConfig):
    """Where and how candidate fitness is computed (evo-depth, evo-sparsity and the width search)."""
    kl_topk: int = option(512, "keep only the top-k dense log-probabilities plus the tail mass per token (0: the "
                               "full distribution; a k at least the vocabulary is exact)")
    executor: str = option("local", "where fitness runs: local (this process, or --workers processes) or ray "
                                    "(pip install prunekit[ray]; joins RAY_ADDRESS or starts a local cluster)",
                           choices=tuple(EXECUTORS))
    workers: int = option(1, "fitness workers (processes or Ray actors)")
    threads_per_worker: int = option(1, "torch threads in each worker")

    def check_fitness(self, fitness: str) -> None:
        from ..scoring.fitness import FITNESS_KINDS
        require(fitness in FITNESS_KINDS, f"{{fitness}} {fitness}: choose {' or '.join(FITNESS_KINDS)}")
        require(self.executor in EXECUTORS, f"{{executor}} {self.executor}: choose {' or '.join(EXECUTORS)}")
        for name in ("workers", "threads_per_worker"):
            require(getattr(self, name) >= 1, f"{{{name}}} must be at least 1")
        require(self.kl_topk >= 0, "{kl_topk} must be at least 0")


def require(ok: bool, template: str) -> None:
    """Raise a ConfigError naming options as {field} placeholders unless `ok`."""
    if not ok:
        raise ConfigError(template)
