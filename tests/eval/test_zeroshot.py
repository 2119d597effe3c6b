"""Zero-shot evaluation: lm-eval against a direct log-likelihood computation, the local task files
against the hub schemas, the average's standard error."""
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from prunekit.eval.zeroshot import LOCAL_TASKS, _read_jsonl, zero_shot

from tests.helpers.models import plain_model


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


@pytest.mark.slow
def test_lm_eval_zero_shot_equals_direct_loglikelihood_choice(tokenizer, data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNEKIT_CACHE", str(tmp_path / "cache"))
    model = plain_model("llama")
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


def test_zero_shot_average_stderr_combines_lm_evals_per_task_errors():
    from lm_eval.api.metrics import mean_stderr
    from prunekit.eval.zeroshot import average_stderr
    hits = {"boolq": [1, 0, 0, 1, 1], "hellaswag": [0, 0, 1, 0, 0, 0, 1, 1], "piqa": [1, 1, 1, 0]}
    result = {"tasks": {t: {"acc": sum(h) / len(h), "acc_norm": sum(h) / len(h), "examples": len(h),
                            "metric": "acc_norm" if t == "hellaswag" else "acc"} for t, h in hits.items()}}
    per_task = [mean_stderr(h) for h in hits.values()]      # lm-eval's own standard error of each accuracy
    assert average_stderr(result) == pytest.approx(sum(s * s for s in per_task) ** 0.5 / 3, rel=1e-12)
