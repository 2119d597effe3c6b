"""The recover command: its report, evaluation data refused, the adapter kept alone."""
import copy
import json

import torch
from transformers import AutoModelForCausalLM

from prunekit.cli import main
from prunekit.recovery import RecoveryConfig, recover
from prunekit.recovery.output import work_dir

from tests.helpers.models import VOCAB


TINY = dict(seqlen=32, eval_every=2, save_every=2, warmup_steps=0)


DATA = "wikitext2:validation"


def _ids(n=2, length=24, seed=1):
    return torch.randint(3, VOCAB, (n, length), generator=torch.Generator().manual_seed(seed))


def test_cli_recover_writes_report_and_refuses_evaluation_data(tiny_model_dir, data_dir, tmp_path, capsys,
                                                              monkeypatch):
    monkeypatch.setenv("PRUNEKIT_PROGRESS_SECONDS", "0")      # off a terminal: a log line per step
    out = tmp_path / "rec"
    assert main(["recover", "--model", str(tiny_model_dir), "--data", DATA, "--steps", "2", "--seqlen", "32",
                 "--eval-every", "1", "--lora-r", "4", "--targets", "q_proj,v_proj", "--no-keep-zeros",
                 "--eval", "wikitext2", "--eval-seqlen", "64", "--eval-windows", "1", "--data-dir", data_dir,
                 "--output", str(out)]) == 0
    captured = capsys.readouterr()
    text = captured.out
    assert "prunekit recover:" in text and "ppl wikitext2" in text
    steps = [e.split()[3] for e in captured.err.splitlines() if e.startswith("prunekit: recover: step ")]
    assert steps == ["1/2", "2/2"], captured.err
    report = json.loads((out / "prunekit_report.json").read_text())
    rec = report["recovery"]
    assert rec["config"]["lora_r"] == 4 and rec["config"]["keep_zeros"] is False
    assert rec["targets"] == ["self_attn.q_proj", "self_attn.v_proj"]
    # layers x r x (in + out) of q_proj and v_proj (2 KV heads of 16 dims)
    assert rec["trainable_params"] == 3 * 4 * ((64 + 64) + (64 + 32))
    assert [h["step"] for h in rec["history"]["validation"]] == [0, 1, 2]
    assert report["eval"]["wikitext2"]["protocol"] == "wt2-64/1"
    assert not work_dir(out).exists()
    assert main(["recover", "--model", str(tiny_model_dir), "--data", "wikitext2:test", "--data-dir", data_dir,
                 "--output", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert "evaluation set" in err and len(err.strip().splitlines()) == 1
    assert main(["recover", "--model", str(tiny_model_dir), "--targets", "nope", "--data", DATA, "--eval", "none",
                 "--data-dir", data_dir, "--output", str(tmp_path / "bad2")]) == 2
    assert "target 'nope'" in capsys.readouterr().err


def test_keep_adapter_saves_the_adapter_alone_and_it_reloads_on_the_base(tiny_model_dir, data_dir, tmp_path):
    from peft import PeftModel

    out = tmp_path / "adapter"
    res = recover(str(tiny_model_dir), RecoveryConfig(steps=2, lr=5e-3, keep_adapter=True, **TINY), data=DATA,
                  output=str(out), data_dir=data_dir, progress=False)
    assert res.merge == "adapter kept" and res.validation_loss_merged is None
    assert (out / "adapter_config.json").is_file() and not (out / "model.safetensors").exists()
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    plain = copy.deepcopy(base)
    reloaded = PeftModel.from_pretrained(base, out).eval()
    ids = _ids()
    with torch.no_grad():
        assert torch.allclose(reloaded(ids).logits, res.model(ids).logits, atol=1e-6)
        assert not torch.allclose(reloaded(ids).logits, plain(ids).logits, atol=1e-4)
    report = json.loads((out / "prunekit_report.json").read_text())
    assert report["recovery"]["merge"] == "adapter kept"
    assert report["model"]["params_total"] == sum(p.numel() for p in plain.parameters())
