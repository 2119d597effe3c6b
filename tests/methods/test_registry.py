"""The method contract: a method added in one new module is registered, shows its own option in
--help, runs through the command line and the Python API alike, and reports like the others."""
import json
import os
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM

import prunekit
from prunekit.cli import main
from prunekit.errors import ConfigError, PrunekitError
from prunekit.methods.registry import all_methods, method_for, method_named
from prunekit.models.adapter import ModelAdapter

from tests.helpers import ROOT, toy_random_method as toy
from tests.helpers.models import plain_model


def test_toy_method_is_registered_by_its_config_type():
    assert method_named("random-mask") is toy.RandomMask
    assert method_for(toy.RandomMaskConfig(sparsity=0.5)) is toy.RandomMask
    assert toy.RandomMask.name == "random-mask" and not toy.RandomMask.needs_calibration()


def test_toy_method_option_in_help(capsys):
    with pytest.raises(SystemExit):
        main(["prune", "--help"])
    out = capsys.readouterr().out
    start = out.index("\nrandom-mask options:")
    rest = out[start + 1:]
    ends = [rest.index(m) for m in ("\n\n" + n for n in ("magnitude", "slm", "search", "laco", "ppl")) if m in rest]
    group = rest[:min(ends)] if ends else rest
    assert "--mask-seed" in group and "seed of the random scores (default: 0)" in " ".join(group.split())
    assert out.count("--mask-seed") == 2          # the usage line and its one group


def test_toy_method_cli_equals_python_api(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "rnd"
    assert main(["prune", "--model", str(tiny_model_dir), "--method", "random-mask", "--sparsity", "0.5",
                 "--mask-seed", "3", "--eval", "none", "--output", str(out)]) == 0
    assert "random-mask sparsity 0.5" in capsys.readouterr().out
    saved = AutoModelForCausalLM.from_pretrained(out)
    report = json.loads((out / "prunekit_report.json").read_text())
    assert report["method"]["name"] == "random-mask" and report["method"]["config"]["mask_seed"] == 3

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    result = prunekit.prune(model, toy.RandomMaskConfig(sparsity=0.5, mask_seed=3), progress=False)
    for (name, a), (_, b) in zip(ModelAdapter(model).all_linears(), ModelAdapter(saved).all_linears()):
        assert torch.equal(a.weight, b.weight), name
        assert int((a.weight == 0).sum()) == a.weight.numel() // 2          # exact count per linear
    assert result.sparsity["overall"] == pytest.approx(0.5)

    report2 = prunekit.prune_model(str(tiny_model_dir), toy.RandomMaskConfig(sparsity=0.5, mask_seed=3), evals="none",
                                   output=str(tmp_path / "rnd2"), progress=False)
    assert report2["method"]["config"] == report["method"]["config"]
    assert (tmp_path / "rnd2" / "model.safetensors").read_bytes() == (out / "model.safetensors").read_bytes()


def test_config_errors_name_the_field_in_python_and_the_flag_on_the_command_line(tiny_model_dir, tmp_path, capsys):
    with pytest.raises(ConfigError, match=r"^mask_seed must be at least 0$"):
        toy.RandomMaskConfig(sparsity=0.5, mask_seed=-1)
    with pytest.raises(ConfigError, match=r"^give remove_layers or ratio, not both$"):
        prunekit.ShortGPTConfig(remove_layers=2, ratio=0.2)
    assert main(["prune", "--model", str(tiny_model_dir), "--method", "shortgpt", "--remove-layers", "2",
                 "--ratio", "0.2", "--output", str(tmp_path / "x")]) == 2
    assert capsys.readouterr().err.strip() == "prunekit prune: error: give --remove-layers or --ratio, not both"
    assert main(["prune", "--model", str(tiny_model_dir), "--method", "search", "--keep", "0.5",
                 "--search-seed", "-1", "--top-k", "0", "--output", str(tmp_path / "x")]) == 2
    assert "--top-k must be at least 1" in capsys.readouterr().err


def test_plugin_module_named_in_the_environment_reaches_the_real_command_line():
    env = {**os.environ, "PRUNEKIT_PLUGINS": "tests.helpers.toy_random_method", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "prunekit.cli", "prune", "--help"], capture_output=True, text=True,
                         env=env, cwd=ROOT, timeout=300)
    assert out.returncode == 0 and "--mask-seed" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "prunekit.cli", "prune", "--help"], capture_output=True, text=True,
                         env={**env, "PRUNEKIT_PLUGINS": "no_such_module_here"}, cwd=ROOT, timeout=300)
    assert bad.returncode != 0 and "PRUNEKIT_PLUGINS names no_such_module_here" in bad.stderr


def test_every_method_declares_the_contract():
    for name, cls in all_methods().items():
        assert cls.name == name and cls.config_class is not object
        cfg_fields = cls.config_class.__dataclass_fields__.values()
        assert all(f.metadata.get("help") for f in cfg_fields), name       # every option documented
        assert callable(cls.summary_lines) and callable(cls.figures) and callable(cls.describe)


def test_a_method_that_breaks_its_return_contract_is_caught():
    class Liar(toy.RandomMask):
        returns_new_model = True
    cfg_cls = type("LiarConfig", (toy.RandomMaskConfig,), {})
    from dataclasses import dataclass
    cfg_cls = dataclass(cfg_cls)
    prunekit.register_method("liar-for-test", cfg_cls)(Liar)
    with pytest.raises(PrunekitError, match="broke its contract"):
        prunekit.prune(plain_model("llama"), cfg_cls(sparsity=0.5), progress=False)
