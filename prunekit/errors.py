"""The exception types the CLI turns into a single line and exit code 2."""
from __future__ import annotations

import string


class PrunekitError(Exception):
    """Bad input or an unmet precondition, phrased for the user."""


class _Names(dict):
    def __missing__(self, key):
        return key


class ConfigError(PrunekitError):
    """A bad option value. The message names options as `{field}` placeholders: a Python user
    reads the field name (`remove_layers`), the command line reads its flag (`--remove-layers`)."""

    def __init__(self, template: str):
        self.template = template
        self.fields = [f for _, f, _, _ in string.Formatter().parse(template) if f]
        super().__init__(self.render())

    def render(self, name_of=None) -> str:
        names = _Names({f: (name_of(f) if name_of else f) for f in self.fields})
        return self.template.format_map(names)
