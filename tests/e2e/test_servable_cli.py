"""Servable outputs through the command line: a sublayer prune writes the DeciLM layout with its
shipped code and says which engines load it; `prunekit export --for llama.cpp` pads what llama.cpp
cannot run, changes no output, and refuses prunekit's own layout in one line."""
import json

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from prunekit.cli import main
from prunekit.models.serving import llamacpp_obstacles

from tests.helpers.models import plain_model


def _source(tmp_path, tiny_model_dir):
    src = tmp_path / "src"
    plain_model("llama", seed=1, layers=6).save_pretrained(src)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(src)
    return src


def test_sublayer_prune_then_llamacpp_export(tiny_model_dir, tmp_path, data_dir, capsys):
    src = _source(tmp_path, tiny_model_dir)
    out = tmp_path / "sub"
    assert main(["prune", "--model", str(src), "--method", "sleb", "--unit", "sublayer", "--remove-layers", "4",
                 "--calib", "wikitext2:validation", "--nsamples", "3", "--seqlen", "32", "--data-dir", data_dir,
                 "--eval", "none", "--output", str(out)]) == 0
    summary = capsys.readouterr().out
    assert "sublayers     left out:" in summary and "serves in     vLLM (DeciLMForCausalLM)" in summary
    report = json.loads((out / "prunekit_report.json").read_text())
    assert report["model"]["serving"]["layout"] == "Nemotron-NAS (DeciLM)"
    assert (out / "modeling_decilm.py").is_file()
    assert main(["eval", "--model", str(out), "--eval", "wikitext2", "--eval-windows", "1", "--data-dir", data_dir]) == 2
    assert "--trust-remote-code" in capsys.readouterr().err
    model = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True)
    config = json.loads((out / "config.json").read_text())
    obstacles = llamacpp_obstacles(config)
    assert obstacles      # the tiny model's 128-wide MLPs are off llama.cpp's grid
    padded = tmp_path / "gguf-ready"
    assert main(["export", "--model", str(out), "--for", "llama.cpp", "--output", str(padded),
                 "--trust-remote-code"]) == 0
    said = capsys.readouterr().out
    assert "zero parameters added" in said and "MLP 128 -> 256" in said
    copy = AutoModelForCausalLM.from_pretrained(padded, trust_remote_code=True)
    assert llamacpp_obstacles(json.loads((padded / "config.json").read_text())) == []
    ids = torch.randint(3, 300, (2, 20), generator=torch.Generator().manual_seed(0))
    assert torch.allclose(copy(ids).logits, model(ids).logits, atol=1e-5)
    assert json.loads((padded / "prunekit_report.json").read_text())["export"]["written"] is True


def test_export_refuses_prunekits_own_layout_and_says_when_nothing_is_needed(tiny_model_dir, tmp_path, data_dir,
                                                                            capsys):
    src = _source(tmp_path, tiny_model_dir)
    width = tmp_path / "width"
    assert main(["prune", "--model", str(src), "--method", "search-llm", "--keep", "0.7", "--generations", "0",
                 "--reform", "none", "--fitness-seqlen", "16", "--calib", "wikitext2:validation", "--nsamples", "3",
                 "--seqlen", "32", "--data-dir", data_dir, "--eval", "none", "--output", str(width)]) == 0
    assert "transformers (trust_remote_code) [prunekit layout]" in capsys.readouterr().out
    assert main(["export", "--model", str(width), "--for", "llama.cpp", "--output", str(tmp_path / "x"),
                 "--trust-remote-code"]) == 2
    err = capsys.readouterr().err
    assert "prunekit's own layout" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()
    assert main(["export", "--model", str(src), "--for", "llama.cpp", "--output", str(tmp_path / "y")]) == 0
    assert "takes it as it is" in capsys.readouterr().out and not (tmp_path / "y").exists()


def test_a_recipe_chains_sublayer_removal_sparsity_and_recovery(tiny_model_dir, tmp_path, data_dir, capsys):
    """The DeciLM output is a valid input of the next stages: Wanda on the blocks that remain
    (a left-out sublayer has no linears to prune), then LoRA recovery; the zeros survive and
    the final folder still states its blocks."""
    import yaml
    src = _source(tmp_path, tiny_model_dir)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"stages": [
        {"method": "ppl", "unit": "sublayer", "remove_layers": 3, "plus_heuristic": False,
         "calibration": {"calib": "wikitext2:validation", "nsamples": 3, "seqlen": 32}},
        {"method": "wanda", "sparsity": 0.5, "calibration": {"calib": "wikitext2:validation", "nsamples": 3,
                                                           "seqlen": 32}},
        {"method": "recover", "steps": 2, "seqlen": 32, "data": "c4"}]}))
    out = tmp_path / "chain"
    assert main(["prune", "--recipe", str(recipe), "--model", str(src), "--data-dir", data_dir, "--eval", "none",
                 "--output", str(out)]) == 0
    assert "serves in     vLLM (DeciLMForCausalLM)" in capsys.readouterr().out
    model = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True)
    config = json.loads((out / "config.json").read_text())
    assert sum(b["attention"]["no_op"] + b["ffn"]["no_op"] for b in config["block_configs"]) + \
        2 * (6 - len(config["block_configs"])) == 3
    for name, p in model.named_parameters():
        if ".layers." in name and name.endswith("proj.weight"):
            assert float((p == 0).float().mean()) >= 0.5, name     # Wanda's zeros kept through recovery
