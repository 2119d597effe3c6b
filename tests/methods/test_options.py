"""One option system: every config is built from names and values by `from_dict` (Python values
or the strings of the command line and YAML) and written by `to_dict` with a format version; the
command line, recipes and recovery all build their configs through it."""
from __future__ import annotations

import ast
import dataclasses
import json
import typing
from pathlib import Path

import numpy as np
import pytest

import prunekit
from prunekit import (ConfigError, PPLConfig, SLMConfig, SearchConfig, ShortGPTConfig, SparseGPTConfig, SparseLLMConfig,
                      WandaConfig)
from prunekit.cli import flag_name as _flag_name, flag_name, main
from prunekit.methods.options import (CONFIG_VERSION, DampedConfig, FitnessOptions, MethodConfig, VERSION_KEY, _conform,
                                      from_text)
from prunekit.methods.registry import all_methods
from prunekit.recovery import RecoveryConfig
from prunekit.workflows.recipe import RecipeError, load_recipe

from tests import support_matrix as sm
from tests.helpers import toy_random_method as toy


BAD_CONFIGS = [
    (lambda: WandaConfig(sparsity="0.5"), "sparsity", "must be a number"),
    (lambda: ShortGPTConfig(remove_layers=2.5), "remove_layers", "must be an integer"),
    (lambda: ShortGPTConfig(remove_layers=True), "remove_layers", "must be an integer"),
    (lambda: SparseGPTConfig(sparsity=0.5, blocksize=64.0), "blocksize", "must be an integer"),
    (lambda: SparseLLMConfig(sparsity=0.5, iterations="2"), "iterations", "must be an integer"),
    (lambda: PPLConfig(remove_layers=1, plus_heuristic="no"), "plus_heuristic", "must be true or false"),
    (lambda: SLMConfig(remove_layers=1, merge=None), "merge", "must be a string (got NoneType None)"),
    (lambda: SearchConfig(keep="0.8"), "keep", "must be a number"),
    (lambda: toy.RandomMaskConfig(sparsity=0.5, mask_seed=1.5), "mask_seed", "must be an integer"),
    (lambda: RecoveryConfig(steps=2.0), "steps", "must be an integer"),
]


@pytest.mark.parametrize("make,field,words", BAD_CONFIGS, ids=[b[1] + "-" + str(i) for i, b in enumerate(BAD_CONFIGS)])
def test_wrong_field_type_is_a_config_error_at_construction(make, field, words):
    with pytest.raises(ConfigError) as err:
        make()
    assert err.value.fields == [field]
    assert str(err.value).startswith(f"{field} {words}"), str(err.value)
    assert err.value.render(_flag_name).startswith("--" + field.replace("_", "-") + " "), \
        err.value.render(_flag_name)


def test_numbers_are_stored_as_the_annotated_type():
    assert type(WandaConfig(sparsity=0).sparsity) is float          # an int is a fine float
    assert type(WandaConfig(sparsity=np.float32(0.5)).sparsity) is float
    assert type(ShortGPTConfig(remove_layers=np.int64(2)).remove_layers) is int
    assert json.dumps(SparseGPTConfig(sparsity=np.float32(0.5), blocksize=np.int64(64)).to_dict())
    assert RecoveryConfig(lora_alpha=16).lora_alpha == 16.0


def test_every_default_fits_its_annotation():
    """The check is only as good as the annotations: every registered config's defaults (and
    RecoveryConfig's) must fit them, None only where Optional."""
    classes = [cls.config_class for cls in all_methods().values()] + [RecoveryConfig]
    for cfg in classes:
        hints = typing.get_type_hints(cfg)
        for f in dataclasses.fields(cfg):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            assert _conform(default, hints[f.name])[0], (cfg.__name__, f.name, default, hints[f.name])


METHODS = list(all_methods())


def _round_trip(cfg):
    cls = type(cfg)
    written = cfg.to_dict()
    assert written[VERSION_KEY] == CONFIG_VERSION
    assert cls.from_dict(written) == cfg
    assert cls.from_dict(json.loads(json.dumps(written))) == cfg      # as a report stores it


@pytest.mark.parametrize("name", METHODS)
def test_default_config_round_trips(name):
    cls = all_methods()[name].config_class
    try:
        cfg = cls()
    except ConfigError:         # a method with a required option (e.g. a sparsity) has no default config
        pytest.skip(f"{name} has no default config")
    _round_trip(cfg)


@pytest.mark.parametrize("name", METHODS)
def test_non_default_config_round_trips(name):
    cfg = sm.example(name)
    if cfg is None:
        pytest.skip(f"{name} declares no example config")
    assert cfg != _defaults_or_none(type(cfg))
    _round_trip(cfg)


def _defaults_or_none(cls):
    try:
        return cls()
    except ConfigError:
        return None


def test_recovery_config_round_trips():
    _round_trip(RecoveryConfig())
    _round_trip(RecoveryConfig(epochs=1.5, lora_r=4, keep_zeros=False, targets="q_proj,v_proj", val_windows=8))


def test_strings_convert_to_the_annotated_types():
    cfg = prunekit.SearchConfig.from_dict({"keep": "0.7", "generations": "3", "search_depth": "on", "band": "5e-2",
                                           "stages": "32:8,64:4"})
    assert cfg == prunekit.SearchConfig(keep=0.7, generations=3, search_depth=True, band=0.05, stages="32:8,64:4")
    assert prunekit.PPLConfig.from_dict({"remove_layers": "1", "plus_heuristic": "off"}).plus_heuristic is False
    assert prunekit.PPLConfig.from_dict({"remove_layers": "1", "plus_heuristic": "false"}).plus_heuristic is False
    slm = prunekit.SLMConfig.from_dict({"remove_layers": "none", "ratio": "0.25"})
    assert slm.remove_layers is None and slm.ratio == 0.25
    nm = prunekit.MagnitudeConfig.from_dict({"pattern": "2:4"})            # an N:M string stays a string
    assert nm.pattern == "2:4" and nm.sparsity == 0.5
    assert prunekit.SparseLLMConfig.from_dict({"sparsity": "0.5", "plain_blocks": "none"}).plain_blocks == "none"
    assert prunekit.SearchConfig.from_dict({"rho": 2}).rho == 2.0     # an int for a float, as check_types
    assert RecoveryConfig.from_dict({"steps": "3", "keep_zeros": "no", "epochs": None}).steps == 3


def test_from_text_leaves_what_does_not_parse():
    assert from_text("most", float) == "most" and from_text("maybe", bool) == "maybe"
    assert from_text("none", int | None) is None and from_text("none", str | None) == "none"
    assert from_text("4", int | None) == 4


def test_cli_builds_the_same_config_as_from_dict(monkeypatch):
    seen = []
    monkeypatch.setattr("prunekit.workflows.prune_model", lambda model, config, **kw: seen.append(config) or 1 / 0)
    with pytest.raises(ZeroDivisionError):
        main(["prune", "--model", "m", "--method", "search", "--keep", "0.7", "--generations", "3",
              "--search-depth", "--band", "5e-2", "--search-seed", "4"])
    assert seen == [prunekit.SearchConfig.from_dict({"keep": "0.7", "generations": "3", "search_depth": "on",
                                                     "band": "5e-2", "seed": "4"})]
    with pytest.raises(ZeroDivisionError):
        main(["prune", "--model", "m", "--method", "ppl", "--remove-layers", "1", "--plus-heuristic", "off"])
    assert seen[-1] == prunekit.PPLConfig(remove_layers=1, plus_heuristic=False)


def test_unknown_key_and_bad_value_name_the_field():
    with pytest.raises(ConfigError) as e:
        prunekit.WandaConfig.from_dict({"sparsity": 0.5, "alpha": 1.0}, owner="method wanda")
    assert e.value.fields[0] == "alpha"
    assert str(e.value) == "alpha does not apply to method wanda; it takes sparsity, pattern, layers"
    assert e.value.render(flag_name).startswith("--alpha does not apply to method wanda; it takes --sparsity")
    with pytest.raises(ConfigError) as e:
        prunekit.SearchConfig.from_dict({"keep": "most"})
    assert e.value.fields == ["keep"] and str(e.value) == "keep must be a number (got str 'most')"
    with pytest.raises(ConfigError) as e:
        prunekit.SearchConfig.from_dict({"search_depth": "maybe"})
    assert e.value.fields == ["search_depth"] and str(e.value).startswith("search_depth must be true or false")
    with pytest.raises(ConfigError, match=r"^'a b' does not apply to SearchConfig"):   # not a {field}: quoted
        prunekit.SearchConfig.from_dict({"a b": 1})
    with pytest.raises(ConfigError, match="must be a mapping"):
        prunekit.SearchConfig.from_dict(["keep", 0.5])


def test_old_reports_without_a_version_load_and_newer_ones_are_refused():
    old = dataclasses.asdict(prunekit.WandaConfig(sparsity=0.5))          # what reports stored before the key
    assert VERSION_KEY not in old
    assert prunekit.WandaConfig.from_dict(old) == prunekit.WandaConfig(sparsity=0.5)
    with pytest.raises(ConfigError, match="format version 2"):
        prunekit.WandaConfig.from_dict({**old, VERSION_KEY: CONFIG_VERSION + 1})


def test_the_three_paths_go_through_from_dict(monkeypatch, tmp_path):
    calls = []
    original = MethodConfig.from_dict.__func__

    def spy(cls, values, **kw):
        calls.append((cls, dict(values)))
        return original(cls, values, **kw)

    monkeypatch.setattr(MethodConfig, "from_dict", classmethod(spy))
    monkeypatch.setattr("prunekit.workflows.prune_model", lambda *a, **kw: 1 / 0)
    monkeypatch.setattr("prunekit.workflows.recover.recover_model", lambda *a, **kw: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        main(["prune", "--model", "m", "--method", "wanda", "--sparsity", "0.5"])
    with pytest.raises(ZeroDivisionError):
        main(["recover", "--model", "m", "--output", str(tmp_path / "o"), "--lora-r", "4", "--no-keep-zeros"])
    load_recipe({"stages": [{"method": "wanda", "sparsity": "0.5"}, {"method": "recover", "lora_r": 4}]})
    assert calls == [(prunekit.WandaConfig, {"sparsity": 0.5}),
                     (RecoveryConfig, {"lora_r": 4, "keep_zeros": False, "device": "cpu"}),
                     (prunekit.WandaConfig, {"sparsity": "0.5"}),
                     (RecoveryConfig, {"lora_r": 4})]


def test_the_three_paths_give_the_same_error(capsys, tmp_path):
    with pytest.raises(ConfigError) as py:
        prunekit.WandaConfig.from_dict({"sparsity": 0.5, "alpha": 5.0}, owner="method wanda")
    assert main(["prune", "--model", "m", "--method", "wanda", "--sparsity", "0.5", "--alpha", "5"]) == 2
    assert capsys.readouterr().err.strip() == f"prunekit prune: error: {py.value.render(flag_name)}"
    with pytest.raises(RecipeError) as recipe:
        load_recipe({"stages": [{"method": "wanda", "sparsity": 0.5, "alpha": 5.0}]})
    assert str(recipe.value) == f"recipe stage 1 (wanda): {py.value}"
    # recovery: the command line and a recipe stage refuse a bad value alike
    assert main(["recover", "--model", "m", "--output", str(tmp_path / "o"), "--steps", "0"]) == 2
    line = capsys.readouterr().err.strip()
    with pytest.raises(RecipeError) as stage:
        load_recipe({"stages": [{"method": "recover", "steps": "0"}]})
    assert line == "prunekit recover: error: --steps must be at least 1 (got 0)"
    assert str(stage.value) == "recipe stage 1 (recover): --steps must be at least 1 (got 0)"


def test_recover_names_its_own_flags():
    assert flag_name("seed", (RecoveryConfig,)) == "--seed"          # not the search's --search-seed
    assert flag_name("seed") == "--search-seed"
    assert flag_name("evals") == "--eval"


def test_shared_option_groups_live_in_options():
    assert DampedConfig in prunekit.SearchConfig.__mro__ and DampedConfig in prunekit.SparseGPTConfig.__mro__
    assert FitnessOptions in prunekit.SearchConfig.__mro__ and FitnessOptions in prunekit.EvoDepthConfig.__mro__
    from prunekit.scoring.executors import EXECUTORS
    field = {f.name: f for f in dataclasses.fields(FitnessOptions)}["executor"]
    assert field.metadata["choices"] == tuple(EXECUTORS)
    assert all("help" in f.metadata for f in dataclasses.fields(RecoveryConfig))    # declared with option()


PACKAGE = Path(prunekit.__file__).parent


def _imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            yield node.level, node.module or "", [a.name for a in node.names]


def test_cli_is_a_leaf_and_takes_no_private_names():
    """Nothing below the command line imports it (but `python -m prunekit`); its modules import no
    private helpers."""
    for path in PACKAGE.rglob("*.py"):
        if path == PACKAGE / "__main__.py":
            continue
        inside = path.parent.name == "cli" and path.parent.parent == PACKAGE
        for level, module, names in _imports(path):
            if not inside:
                assert not (module == "cli" or module.startswith(("cli.", "prunekit.cli"))
                            or (level and module.endswith(".cli"))), f"{path} imports the cli"
            else:
                private = [n for n in names if n.startswith("_") and n != "__version__"]
                assert not private, f"{path} imports {private} from {module}"
