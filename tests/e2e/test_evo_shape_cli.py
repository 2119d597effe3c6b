"""`prunekit prune --method evo-shape`: the summary, shape.json beside the output, the DeciLM
output reloaded and named servable, and the shape re-applied from that folder."""
import json

import torch
from transformers import AutoModelForCausalLM

from prunekit.cli import main

DATA = "wikitext2:validation"


def _prune(model, out, data_dir, *flags):
    return main(["prune", "--model", str(model), "--method", "evo-shape", *flags, "--width-multiple", "8",
                 "--mlp-widths", "0.5", "--stages", "64:2,128:1", "--generations", "2", "--offspring", "2",
                 "--calib", DATA, "--nsamples", "4", "--seqlen", "32", "--eval", "none", "--data-dir", data_dir,
                 "--output", str(out)])


def test_evo_shape_cli_writes_a_servable_decilm_model_and_its_shape(tiny_model_dir, data_dir, tmp_path, capsys):
    out = tmp_path / "shaped"
    assert _prune(tiny_model_dir, out, data_dir, "--keep", "0.6", "--library-dir", str(tmp_path / "lib")) == 0
    text = capsys.readouterr().out
    assert "evo-shape keep 0.6" in text and "KV heads/MLP width" in text and "serves in" in text
    shape = json.loads((out / "shape.json").read_text())
    report = json.loads((out / "prunekit_report.json").read_text())
    assert [[b["kv_heads"], b["mlp"]] for b in shape["blocks"]] == report["method"]["shape"]
    assert report["method"]["kept_params"] <= report["method"]["budget"]
    model = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True)
    assert model.config.model_type == "nemotron-nas"
    serving = report["model"]["serving"]
    assert serving["layout"] == "Nemotron-NAS (DeciLM)" and "vLLM (DeciLMForCausalLM)" in serving["engines"]
    again = tmp_path / "again"
    assert _prune(tiny_model_dir, again, data_dir, "--shape", str(out), "--library-dir", str(tmp_path / "lib2")) == 0
    capsys.readouterr()
    a = AutoModelForCausalLM.from_pretrained(again, trust_remote_code=True)
    ids = torch.randint(3, 300, (1, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(a(ids).logits, model(ids).logits)
    assert main(["prune", "--model", str(tiny_model_dir), "--method", "evo-shape", "--calib", DATA, "--eval", "none",
                 "--data-dir", data_dir, "--output", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "keep" in err[0]
