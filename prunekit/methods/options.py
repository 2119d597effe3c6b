"""Method options declared once: each config field carries its help text (and, where the flag
is not the field name, its flag) as dataclass field metadata. The command line is generated
from these; defaults are stated by the field itself."""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError

_MISSING = dataclasses.MISSING


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


@dataclass
class MethodConfig:
    """Base of every method config: plain data, validated on construction."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def require(ok: bool, template: str) -> None:
    """Raise a ConfigError naming options as {field} placeholders unless `ok`."""
    if not ok:
        raise ConfigError(template)
