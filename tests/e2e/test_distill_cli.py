"""`prunekit recover --loss kd`: the teacher read from the pruned folder's lineage, the summary,
the plot's teacher panel, a DeciLM (sublayer) output, and the one-line refusals."""
import json

from transformers import AutoModelForCausalLM

from prunekit.cli import main

DATA = "wikitext2:validation"
FAST = ["--data", DATA, "--steps", "2", "--seqlen", "32", "--eval-every", "1", "--warmup-steps", "0",
        "--eval", "none"]


def _prune(model_dir, data_dir, out, *flags):
    assert main(["prune", "--model", str(model_dir), *flags, "--calib", DATA, "--nsamples", "2", "--seqlen", "32",
                 "--eval", "none", "--data-dir", data_dir, "--output", str(out)]) == 0


def test_kd_recovery_of_a_sublayer_output_takes_its_teacher_from_the_lineage(tiny_model_dir, data_dir, tmp_path,
                                                                            capsys):
    pruned = tmp_path / "sub"
    _prune(tiny_model_dir, data_dir, pruned, "--method", "shortgpt", "--unit", "sublayer", "--remove-layers", "2")
    capsys.readouterr()
    out = tmp_path / "rec"
    assert main(["recover", "--model", str(pruned), *FAST, "--loss", "kd", "--train", "full", "--local", "first",
                 "--local-steps", "2", "--local-windows", "2", "--trust-remote-code", "--data-dir", data_dir,
                 "--output", str(out)]) == 0
    text = capsys.readouterr().out
    assert "distill       kd, T 1 from " + str(tiny_model_dir) in text and "online, on every batch" in text
    assert "local         " in text and "top-1 agreement" in text
    rec = json.loads((out / "prunekit_report.json").read_text())
    r = rec["recovery"]
    assert r["teacher"] == str(tiny_model_dir) and r["train"] == "full" and r["loss"] == "kd"
    assert [h["step"] for h in r["history"]["validation"]] == [0, 1, 2]
    assert rec["lineage"][-1]["method"] == "recover"
    assert (out / "recovery_loss.png").stat().st_size > 10_000
    before = AutoModelForCausalLM.from_pretrained(pruned, trust_remote_code=True)
    after = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True)
    assert type(after).__name__ == type(before).__name__
    assert after.config.to_dict().get("block_configs") == before.config.to_dict().get("block_configs")


def test_distillation_refusals_are_one_line(tiny_model_dir, data_dir, tmp_path, capsys):
    def refused(*flags, model=tiny_model_dir):
        code = main(["recover", "--model", str(model), *FAST, *flags, "--data-dir", data_dir,
                     "--output", str(tmp_path / "x")])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1, err
        return err[0]

    assert "--teacher" in refused("--loss", "kd")                       # a dense folder has no lineage
    assert "itself" in refused("--loss", "kd", "--teacher", str(tiny_model_dir))
    assert "evaluation set" in refused("--loss", "kd", "--data", "wikitext2:test")
    assert "blocks:LIST" in refused("--train", "layers")
    assert "has none of them" in refused("--teacher", str(tiny_model_dir))
    assert "--kd-weight" in refused("--loss", "kd+lm", "--kd-weight", "1.5")
