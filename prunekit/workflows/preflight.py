"""Checks a workflow runs before any expensive work, so that a run never prunes for minutes and
then fails on something knowable at the start: window lengths against the model's positions,
an output folder that cannot be written, a model that needs --trust-remote-code."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from ..errors import ConfigError, PrunekitError

_POSITION_KEYS = ("max_position_embeddings", "n_positions", "n_ctx")


def model_positions(config) -> int | None:
    """How many positions the model can attend over, from its config (a PretrainedConfig or the
    dict of config.json); None when the config does not say."""
    get = config.get if isinstance(config, dict) else (lambda k: getattr(config, k, None))
    for key in _POSITION_KEYS:
        value = get(key)
        if isinstance(value, int) and value > 0:
            return value
    return None


def check_positions(config, **lengths: int | None) -> None:
    """Refuse every window length (workflow argument name -> tokens) longer than the model's
    positions: past them a model with learned positions fails with an IndexError and a rotary one
    silently evaluates beyond its context. Lengths that are None are not used by this run."""
    limit = model_positions(config)
    if limit is None:
        return
    for name, value in lengths.items():
        if value is not None and value > limit:
            raise ConfigError(f"{{{name}}} {value} is longer than the model's {limit} positions "
                              f"(max_position_embeddings); use at most {limit}")


def fit_window(config, value: int | None, default: int, room: int = 0) -> tuple[int, str | None]:
    """A window length: the one the caller gave (`value`; check_positions refuses it when too long),
    else `default`, shortened to the model's positions (less `room` for tokens that follow it) when
    it has fewer. Returns the length and, when the default was shortened, a note that says so (for
    the report and the summary)."""
    if value is not None:
        return value, None
    limit = model_positions(config)
    if limit is None or default + room <= limit:
        return default, None
    return max(1, limit - room), f"default {default} shortened to the model's {limit} positions"


def local_config(spec: str) -> dict | None:
    """config.json of a local checkpoint folder, or None (hub ids, GGUF files, aliases)."""
    p = Path(spec).expanduser() / "config.json"
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PrunekitError(f"{p}: not a readable config.json ({type(e).__name__})") from None


def check_remote_code(spec: str, trust_remote_code: bool) -> None:
    """A folder that ships its own modeling code (a width-pruned output) loads only with
    --trust-remote-code: say so instead of transformers' multi-line error."""
    config = local_config(spec)
    if config and config.get("auto_map") and not trust_remote_code:
        raise ConfigError(f"{spec} ships its own modeling code (a model with per-layer widths): "
                          "pass {trust_remote_code} to load it")


def check_writable(output: str | os.PathLike) -> None:
    """The output's nearest existing folder accepts new entries (tried, not guessed from the mode
    bits: root ignores them and read-only file systems do not show in them)."""
    p = Path(output).expanduser().absolute()
    parent = p.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise PrunekitError(f"cannot write output {output}: {parent} is a file, not a folder")
    try:
        Path(tempfile.mkdtemp(prefix=".prunekit-write-test-", dir=parent)).rmdir()
    except OSError as e:
        raise PrunekitError(f"cannot write output {output}: {parent} is not writable ({e.strerror})") from None
