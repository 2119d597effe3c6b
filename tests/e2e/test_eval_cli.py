"""The eval and compare commands: KL, saving the report to the model, mixed protocols flagged, plots."""
import json

from prunekit.cli import main


def test_eval_cli_kl_and_save_to_model(tiny_model_dir, tmp_path, data_dir, capsys):
    out = tmp_path / "pruned"
    assert main(["prune", "--model", str(tiny_model_dir), "--method", "magnitude", "--sparsity", "0.5",
                 "--eval", "none", "--output", str(out)]) == 0
    assert main(["eval", "--model", str(out), "--eval", "kl", "--kl-data", "wikitext2:validation", "--kl-nsamples", "2",
                 "--kl-seqlen", "16", "--data-dir", data_dir, "--save-to-model"]) == 0
    assert "KL to dense" in capsys.readouterr().out
    report = json.loads((out / "prunekit_report.json").read_text())
    assert report["kl"]["dense"] == str(tiny_model_dir) and report["kl"]["tokens"] == 32
    assert report["kl"]["kl"] > 0 and 0 <= report["kl"]["top1_agreement"] <= 1
    assert report["method"]["name"] == "magnitude"          # the prune report is kept, the KL added
    assert main(["eval", "--model", str(tiny_model_dir), "--eval", "kl", "--data-dir", data_dir]) == 2
    assert "needs --dense" in capsys.readouterr().err
    assert main(["eval", "--model", str(tiny_model_dir), "--eval", "none", "--tasks", "boolq,nope"]) == 2
    assert "unknown zero-shot task(s) nope" in capsys.readouterr().err


def test_compare_flags_mixed_protocols_and_writes_plots(tiny_model_dir, tmp_path, data_dir, capsys):
    runs = []
    for name, sp, windows in (("a", "0.3", "1"), ("b", "0.6", "1"), ("c", "0.6", "2")):
        out = tmp_path / name
        assert main(["prune", "--model", str(tiny_model_dir), "--method", "magnitude", "--sparsity", sp, "--eval",
                     "wikitext2", "--eval-seqlen", "64", "--eval-windows", windows, "--data-dir", data_dir,
                     "--output", str(out)]) == 0
        runs.append(str(out))
    page = tmp_path / "docs" / "cmp.md"
    assert main(["compare", *runs, "--output", str(page)]) == 0
    assert "Mixed protocols for wikitext2" in capsys.readouterr().out
    text = page.read_text()
    header = next(line for line in text.splitlines() if line.startswith("| run"))
    assert "ppl wikitext2 [wt2-64/1]" in header and "ppl wikitext2 [wt2-64/2]" in header
    rows = {line.split(" | ")[0][2:]: line.split(" | ") for line in text.splitlines() if line.startswith("| a ")
            or line.startswith("| b ") or line.startswith("| c ")}
    reports = {n: json.loads((tmp_path / n / "prunekit_report.json").read_text()) for n in "abc"}
    assert rows["a"][4] == f"{reports['a']['eval']['wikitext2']['ppl']:.2f}" and rows["a"][5].strip(" |") == ""
    assert rows["c"][4] == "" and rows["c"][5].strip(" |") == f"{reports['c']['eval']['wikitext2']['ppl']:.2f}"
    assert (tmp_path / "docs" / "cmp-quality.png").stat().st_size > 1000
    assert main(["compare", str(tmp_path / "nope"), "--output", str(tmp_path / "x.md")]) == 2
    assert not (tmp_path / "x.md").exists()
