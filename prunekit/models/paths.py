"""Where a model spec lives on this machine, and the checks that keep an output apart from the
models it is made from or compared with."""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import ConfigError
from .loading import resolve_model_source


def _local_path(spec: str) -> Path | None:
    """Where a model spec lives on this machine (its folder, or its .gguf file); None for a hub id."""
    source = resolve_model_source(spec)
    if source.kind == "hub":
        return None
    return Path(source.gguf or source.path).expanduser().resolve()


def check_output_apart(output: str | os.PathLike, **inputs: str | None) -> None:
    """Refuse an output folder that is an input (keyword: the option naming it, e.g. model=...),
    lies inside one or contains one: publishing it replaces that folder, so the input would be
    deleted, and a report naming it as its source would point at the output itself."""
    out = Path(output).expanduser().resolve()
    for option, spec in inputs.items():
        where = _local_path(spec) if spec else None
        if where is None:
            continue
        if out == where:
            relation = "is"
        elif where in out.parents:
            relation = "lies inside"
        elif out in where.parents:
            relation = "contains"
        else:
            continue
        raise ConfigError(f"output {_braced(output)} {relation} the {{{option}}} {_braced(spec)}: writing it would "
                          f"destroy that input; choose an output folder apart from it")


def check_not_itself(model: str, option: str, reference: str | None) -> None:
    """Refuse a reference model (the dense model of a KL or a speed ratio) that is the model itself:
    the comparison would be trivially perfect (KL 0, agreement 1, ratio 1) and say nothing."""
    if reference and _local_path(model) is not None and _local_path(model) == _local_path(reference):
        raise ConfigError(f"the {{{option}}} {_braced(reference)} is the model itself ({_braced(model)}): a comparison "
                          f"with itself is trivially perfect; name the dense model")


def _braced(text) -> str:
    """A path inside a ConfigError template: its braces are text, not placeholders."""
    return str(text).replace("{", "{{").replace("}", "}}")
