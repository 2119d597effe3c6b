"""Recovery by distillation: self-distillation is a fixed point, kd lowers the KL to the teacher,
zeros and 2:4 survive full and LoRA training, refusals, resume, and local distillation."""
import copy

import pytest
import torch

from prunekit.api import prune
from prunekit.errors import PrunekitError
from prunekit.methods import MagnitudeConfig
from prunekit.models.adapter import ModelAdapter
from prunekit.recovery import RecoveryConfig, recover
from prunekit.recovery.local import dense_spans

from tests.helpers.models import plain_model

TINY = dict(seqlen=32, eval_every=2, save_every=2, warmup_steps=0, lora_dropout=0.0)
DATA = "wikitext2:validation"


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("train", ["lora", "full"])
def test_a_model_distilled_from_itself_has_zero_loss_and_does_not_change(tokenizer, data_dir, train):
    model = plain_model("llama")
    teacher = copy.deepcopy(model)
    before = _state(model)
    res = recover(model, RecoveryConfig(steps=2, lr=1e-2, loss="kd", train=train, **TINY), data=DATA,
                  tokenizer=tokenizer, data_dir=data_dir, teacher=teacher, progress=False)
    assert all(abs(h["loss"]) < 1e-6 and abs(h["kd"]) < 1e-6 for h in res.history["train"])
    assert all(h["agreement"] == 1.0 for h in res.history["validation"])
    after = res.model.state_dict()
    for k, v in before.items():
        assert torch.allclose(after[k], v, atol=1e-6), k


def test_the_model_itself_is_refused_as_teacher(tokenizer, data_dir):
    model = plain_model("llama")
    with pytest.raises(PrunekitError, match="itself"):
        recover(model, RecoveryConfig(steps=1, loss="kd", **TINY), data=DATA, tokenizer=tokenizer,
                data_dir=data_dir, teacher=model, progress=False)


def test_a_teacher_of_another_vocabulary_is_refused(tokenizer, data_dir):
    other = plain_model("llama")
    other.resize_token_embeddings(500)
    with pytest.raises(PrunekitError, match="vocabulary"):
        recover(plain_model("llama"), RecoveryConfig(steps=1, loss="kd", **TINY), data=DATA, tokenizer=tokenizer,
                data_dir=data_dir, teacher=other, progress=False)


def test_kd_without_a_teacher_or_lineage_is_refused(tokenizer, data_dir):
    with pytest.raises(PrunekitError, match="--teacher"):
        recover(plain_model("llama"), RecoveryConfig(steps=1, loss="kd", **TINY), data=DATA, tokenizer=tokenizer,
                data_dir=data_dir, progress=False)


@pytest.mark.parametrize("train,loss", [("full", "kd"), ("lora", "kd"), ("lora", "kd+lm")])
def test_2_4_zeros_are_kept_and_the_kl_to_the_teacher_falls(tokenizer, data_dir, train, loss):
    teacher = plain_model("llama")
    model = copy.deepcopy(teacher)
    prune(model, MagnitudeConfig(pattern="2:4"), progress=False)
    zeros = {n: lin.weight == 0 for n, lin in ModelAdapter(model).all_linears()}
    res = recover(model, RecoveryConfig(steps=4, lr=5e-3, loss=loss, train=train, **TINY), data=DATA,
                  tokenizer=tokenizer, data_dir=data_dir, teacher=teacher, progress=False)
    assert res.nm_valid["2:4"] == {"before": True, "after": True}
    for n, lin in ModelAdapter(res.model).all_linears():
        assert torch.equal(lin.weight == 0, zeros[n]), n
    val = res.history["validation"]
    if loss == "kd":
        assert val[-1]["kd"] < val[0]["kd"]
    else:           # the logged loss is the stated mix of the logged terms
        for h in res.history["train"] + val:
            assert h["loss"] == pytest.approx(0.5 * h["kd"] + 0.5 * h["lm"], rel=1e-4)
    rec = res.report["recovery"]
    assert rec["loss"] == loss and rec["teacher_s"] > 0 and 0 < rec["teacher_share"] < 1


def test_blocks_list_trains_only_those_blocks(tokenizer, data_dir):
    model = plain_model("llama")
    before = _state(model)
    res = recover(model, RecoveryConfig(steps=2, lr=1e-2, train="blocks:1", **TINY), data=DATA,
                  tokenizer=tokenizer, data_dir=data_dir, progress=False)
    after = res.model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(".layers.1." in k for k in changed)
    with pytest.raises(PrunekitError, match="blocks 0-2"):
        recover(plain_model("llama"), RecoveryConfig(steps=1, train="blocks:3", **TINY), data=DATA,
                tokenizer=tokenizer, data_dir=data_dir, progress=False)


def _depth_report(groups, before):
    return {"command": "prune", "model": {"source": "dense", "num_layers": len(groups)},
            "method": {"name": "shortgpt", "depth": {"groups": groups}},
            "lineage": [{"stage": 1, "method": "shortgpt", "input": "dense", "layers_before": before,
                         "layers_after": len(groups), "method_section": {"depth": {"groups": groups}}}]}


def test_dense_spans_compose_over_stages():
    one = _depth_report([[1], [2], [4], [5]], 6)        # blocks 0 and 3 removed
    assert dense_spans(one, 4, 6) == [(0, 2), (2, 4), (4, 5), (5, 6)]
    two = dict(one)
    two["lineage"] = one["lineage"] + [{"stage": 2, "method": "slm", "layers_before": 4, "layers_after": 2,
                                        "method_section": {"depth": {"groups": [[0, 1], [3]]}}}]
    assert dense_spans(two, 2, 6) == [(0, 5), (5, 6)]
    with pytest.raises(PrunekitError, match="lineage"):
        dense_spans(one, 3, 6)


def test_local_distillation_lowers_every_changed_blocks_error(tokenizer, data_dir):
    teacher = plain_model("llama", layers=4)
    model = copy.deepcopy(teacher)
    del ModelAdapter(model).layers[2]                     # block 2 removed: block 1 now stands for 1-2
    model.config.num_hidden_layers = 3
    prune(model, MagnitudeConfig(sparsity=0.5), progress=False)
    zeros = {n: lin.weight == 0 for n, lin in ModelAdapter(model).all_linears()}
    prior = _depth_report([[0], [1], [3]], 4)
    res = recover(model, RecoveryConfig(local="only", local_steps=20, local_windows=4, local_lr=1e-3, **TINY),
                  data=DATA, tokenizer=tokenizer, data_dir=data_dir, teacher=teacher, progress=False,
                  report=prior)
    local = res.report["recovery"]["local"]
    assert local["changed_blocks"] == [0, 1, 2]
    assert [r["dense_span"] for r in local["blocks"]] == [[0, 1], [1, 3], [3, 4]]
    assert all(r["error_after"] < r["error_before"] for r in local["blocks"])
    for n, lin in ModelAdapter(res.model).all_linears():
        assert torch.equal(lin.weight == 0, zeros[n]), n


class _Kill:
    def __new__(cls, at):
        from transformers import TrainerCallback

        class Kill(TrainerCallback):
            def on_step_end(self, args, state, control, **kw):
                if state.global_step == at:
                    raise KeyboardInterrupt
        return Kill()


@pytest.mark.slow
@pytest.mark.parametrize("extra", [dict(train="full", loss="kd"), dict(train="lora", loss="kd+lm", local="first")])
def test_a_killed_distillation_resumes_byte_for_byte(tokenizer, data_dir, tmp_path, extra):
    from prunekit.recovery.local import LOCAL_FILE
    from prunekit.recovery.output import work_dir

    teacher = plain_model("llama")
    cfg = dict(steps=5, lr=5e-3, local_steps=3, local_windows=2, **TINY, **extra)

    def student():
        model = copy.deepcopy(teacher)
        prune(model, MagnitudeConfig(pattern="2:4"), progress=False)
        return model

    whole = recover(student(), RecoveryConfig(**cfg), data=DATA, tokenizer=tokenizer, data_dir=data_dir,
                    output=str(tmp_path / "whole"), teacher=teacher, progress=False)
    out = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        recover(student(), RecoveryConfig(**cfg), data=DATA, tokenizer=tokenizer, data_dir=data_dir,
                output=str(out), teacher=teacher, progress=False, callbacks=[_Kill(3)])
    assert (work_dir(out) / LOCAL_FILE).is_file() == (extra.get("local") == "first")
    resumed = recover(student(), RecoveryConfig(**cfg, resume=True), data=DATA, tokenizer=tokenizer,
                      data_dir=data_dir, output=str(out), teacher=teacher, progress=False)
    rec = resumed.report["recovery"]
    assert rec["resumed_from"] == "checkpoint-2"
    if extra.get("local"):
        assert rec["local"]["reused"] and rec["local"]["blocks"] == whole.report["recovery"]["local"]["blocks"]
    a, b = whole.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert [h["loss"] for h in resumed.history["train"]] == [h["loss"] for h in whole.history["train"]]


def test_full_kd_with_a_topk_teacher_and_local_first_on_a_width_output_saves_and_reloads(tokenizer, data_dir,
                                                                                      tmp_path):
    from transformers import AutoModelForCausalLM

    from prunekit.export.save import save_checkpoint
    from prunekit.methods import SearchConfig

    teacher = plain_model("llama")
    model = copy.deepcopy(teacher)
    ids = torch.randint(3, 300, (4, 64), generator=torch.Generator().manual_seed(0))
    res = prune(model, SearchConfig(keep=0.7, generations=1, population=4, mutants=2, crossovers=1, randoms=1,
                                    top_k=2, band=0.05, fitness_seqlen=32), ids, progress=False)
    width = tmp_path / "width"
    save_checkpoint(res.model, tokenizer, {"model": {"source": "tiny-dense"}, "method": {"name": "search"}}, width)
    out = tmp_path / "recovered"
    rec = recover(str(width), RecoveryConfig(steps=3, lr=5e-3, loss="kd", kd_topk=16, train="full", local="first",
                                             local_steps=5, local_windows=2, local_lr=1e-3, **TINY),
                  data=DATA, output=str(out), data_dir=data_dir, trust_remote_code=True, teacher=teacher,
                  progress=False)
    r = rec.report["recovery"]
    assert r["local"]["changed_blocks"] == [0, 1, 2]                    # every block lost width
    assert all(b["error_after"] <= b["error_before"] for b in r["local"]["blocks"])
    assert r["config"]["kd_topk"] == 16 and r["history"]["validation"][-1]["kd"] >= 0
    reloaded = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True).eval()
    assert type(reloaded).__name__ == "PrunedLlamaForCausalLM"
    with torch.no_grad():
        assert torch.allclose(reloaded(ids[:1]).logits, rec.model(ids[:1]).logits, atol=1e-5)


def test_cached_topk_summaries_train_as_the_online_teacher_when_the_tail_is_one_token(tokenizer, data_dir):
    """k = V - 1 leaves one token in the tail, whose conditional is a point mass for both models:
    KD_k = KD exactly, so the cached run must follow the online full-vocabulary run."""
    from tests.helpers.models import VOCAB
    teacher = plain_model("llama")
    runs = {}
    for k in (0, VOCAB - 1):
        model = copy.deepcopy(teacher)
        prune(model, MagnitudeConfig(sparsity=0.5), progress=False)
        runs[k] = recover(model, RecoveryConfig(steps=3, lr=5e-3, loss="kd", kd_topk=k, **TINY), data=DATA,
                          tokenizer=tokenizer, data_dir=data_dir, teacher=teacher, progress=False)
    online, cached = runs[0], runs[VOCAB - 1]
    assert cached.report["recovery"]["teacher_mode"].startswith("top-k summaries cached")
    assert online.report["recovery"]["teacher_mode"].startswith("online")
    for a, b in zip(online.history["train"] + online.history["validation"],
                    cached.history["train"] + cached.history["validation"]):
        assert b["kd"] == pytest.approx(a["kd"], rel=1e-4, abs=1e-6) and b["agreement"] == a["agreement"]


def test_blocks_changed_trains_only_the_blocks_that_differ_from_their_dense_span(tokenizer, data_dir):
    teacher = plain_model("llama", layers=4)
    model = copy.deepcopy(teacher)
    del ModelAdapter(model).layers[2]                     # block 1 now stands for dense blocks 1-2
    model.config.num_hidden_layers = 3
    before = _state(model)
    res = recover(model, RecoveryConfig(steps=2, lr=1e-2, train="blocks:changed", **TINY), data=DATA,
                  tokenizer=tokenizer, data_dir=data_dir, teacher=teacher, report=_depth_report([[0], [1], [3]], 4),
                  progress=False)
    assert res.report["recovery"]["trained_blocks"] == [1]
    after = res.model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(".layers.1." in k for k in changed)
    with pytest.raises(PrunekitError, match="every block equals"):
        recover(copy.deepcopy(teacher), RecoveryConfig(steps=1, train="blocks:changed", **TINY), data=DATA,
                tokenizer=tokenizer, data_dir=data_dir, teacher=teacher, progress=False)
