"""Evaluation suite: lm-eval zero-shot against a direct log-likelihood computation, KL to dense
against its definition, and the eval command's report."""
import json

import pytest
import torch
import torch.nn.functional as F

from prunekit.cli import main
from prunekit.eval.kl import kl_and_agreement, kl_to_dense
from prunekit.eval.zeroshot import LOCAL_TASKS, _read_jsonl, zero_shot
from pathlib import Path

from .conftest import VOCAB, make_tiny_model


def _loglik(model, tok, context, continuation):
    ctx = tok(context, add_special_tokens=False)["input_ids"]
    whole = tok(context + continuation, add_special_tokens=False)["input_ids"]
    cont = whole[len(ctx):]
    with torch.no_grad():
        logp = F.log_softmax(model(torch.tensor([whole])).logits[0].float(), -1)
    return sum(logp[len(ctx) - 1 + i, t].item() for i, t in enumerate(cont))


def _direct_accuracy(model, tok, docs, context_of, choices_of, gold_of):
    acc = norm = 0
    for d in docs:
        ctx, choices = context_of(d), choices_of(d)
        ll = [_loglik(model, tok, ctx, " " + c) for c in choices]
        acc += int(max(range(len(ll)), key=lambda i: ll[i]) == gold_of(d))
        normed = [v / len(c) for v, c in zip(ll, choices)]   # lm-eval normalises by the choice's characters
        norm += int(max(range(len(normed)), key=lambda i: normed[i]) == gold_of(d))
    return acc / len(docs), norm / len(docs)


def test_lm_eval_zero_shot_equals_direct_loglikelihood_choice(tokenizer, data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNEKIT_CACHE", str(tmp_path / "cache"))
    model = make_tiny_model("llama")
    n = 8
    res = zero_shot(model, tokenizer, ["piqa", "arc_easy"], data_dir=data_dir, limit=n, batch_size=4, progress=False)
    piqa = _read_jsonl(Path(data_dir) / LOCAL_TASKS["piqa"].file)[:n]
    acc, norm = _direct_accuracy(model, tokenizer, piqa, lambda d: f"Question: {d['goal']}\nAnswer:",
                                 lambda d: [d["sol1"], d["sol2"]], lambda d: int(d["label"]))
    assert res["tasks"]["piqa"]["acc"] == pytest.approx(acc) and res["tasks"]["piqa"]["acc_norm"] == pytest.approx(norm)
    arc = _read_jsonl(Path(data_dir) / LOCAL_TASKS["arc_easy"].file)[:n]
    labels = lambda d: [c["label"] for c in d["question"]["choices"]]
    acc, norm = _direct_accuracy(model, tokenizer, arc, lambda d: f"Question: {d['question']['stem']}\nAnswer:",
                                 lambda d: [c["text"] for c in d["question"]["choices"]],
                                 lambda d: labels(d).index(d["answerKey"]))
    assert res["tasks"]["arc_easy"]["acc"] == pytest.approx(acc) and res["tasks"]["arc_easy"]["acc_norm"] == pytest.approx(norm)
    assert res["tasks"]["piqa"]["examples"] == n
    # the papers' average: acc for both of these tasks
    assert res["average"] == pytest.approx((res["tasks"]["piqa"]["acc"] + res["tasks"]["arc_easy"]["acc"]) / 2)


def test_local_task_conversions_match_the_hub_schemas():
    boolq = LOCAL_TASKS["boolq"].convert({"question": "q", "passage": "t -- p", "idx": 0, "label": "false"})
    assert boolq["label"] == 0
    obqa = LOCAL_TASKS["openbookqa"].convert({"id": "7", "question": {"stem": "S", "choices": [
        {"text": "a", "label": "A"}, {"text": "b", "label": "B"}]}, "answerKey": "B"})
    assert obqa == {"id": "7", "question_stem": "S", "choices": {"text": ["a", "b"], "label": ["A", "B"]}, "answerKey": "B"}
    hs = LOCAL_TASKS["hellaswag"].convert({"ind": 3, "activity_label": "A", "ctx": "c d", "endings": ["x"] * 4, "label": 2})
    assert hs["label"] == "2" and hs["ctx_a"] == "c d" and hs["ctx_b"] == ""


def test_kl_matches_definition_and_is_zero_for_identical_models():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 11, generator=g), torch.randn(5, 11, generator=g)
    kl, same = kl_and_agreement(a, b)
    p, q = a.softmax(-1).double(), b.softmax(-1).double()
    assert torch.allclose(kl.double(), (p * (p.log() - q.log())).sum(-1), atol=1e-5)
    assert torch.equal(same, a.argmax(-1) == b.argmax(-1))
    m1, m2 = make_tiny_model("opt", seed=0), make_tiny_model("opt", seed=1)
    ids = torch.randint(0, VOCAB, (2, 12), generator=g)
    same_model = kl_to_dense(m1, make_tiny_model("opt", seed=0), ids, progress=False)
    assert same_model["kl"] == pytest.approx(0.0, abs=1e-6) and same_model["top1_agreement"] == 1.0
    other = kl_to_dense(m2, m1, ids, progress=False)
    with torch.no_grad():
        kl2, same2 = kl_and_agreement(m1(ids).logits, m2(ids).logits)
    assert other["kl"] == pytest.approx(kl2.mean().item(), rel=1e-5) and other["tokens"] == 24
    assert other["top1_agreement"] == pytest.approx(same2.double().mean().item())


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


def test_zero_shot_average_stderr_combines_lm_evals_per_task_errors():
    from lm_eval.api.metrics import mean_stderr
    from prunekit.eval.zeroshot import average_stderr
    hits = {"boolq": [1, 0, 0, 1, 1], "hellaswag": [0, 0, 1, 0, 0, 0, 1, 1], "piqa": [1, 1, 1, 0]}
    result = {"tasks": {t: {"acc": sum(h) / len(h), "acc_norm": sum(h) / len(h), "examples": len(h),
                            "metric": "acc_norm" if t == "hellaswag" else "acc"} for t, h in hits.items()}}
    per_task = [mean_stderr(h) for h in hits.values()]      # lm-eval's own standard error of each accuracy
    assert average_stderr(result) == pytest.approx(sum(s * s for s in per_task) ** 0.5 / 3, rel=1e-12)
