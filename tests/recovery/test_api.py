"""prunekit.recover end to end: sparsity and 2:4 kept, width and depth outputs reload."""
import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from prunekit.api import prune
from prunekit.methods import MagnitudeConfig, SearchConfig
from prunekit.models.adapter import ModelAdapter
from prunekit.recovery import RecoveryConfig, recover
from prunekit.recovery.output import work_dir

from tests.helpers.models import VOCAB, plain_model


TINY = dict(seqlen=32, eval_every=2, save_every=2, warmup_steps=0)


DATA = "wikitext2:validation"


def _ids(n=2, length=24, seed=1):
    return torch.randint(3, VOCAB, (n, length), generator=torch.Generator().manual_seed(seed))


def test_sparse_recovery_end_to_end_keeps_sparsity_and_2_4(tokenizer, data_dir, tmp_path):
    model = plain_model("llama")
    prune(model, MagnitudeConfig(pattern="2:4"), progress=False)
    zeros = {n: lin.weight == 0 for n, lin in ModelAdapter(model).all_linears()}
    before = {n: lin.weight.clone() for n, lin in ModelAdapter(model).all_linears()}
    res = recover(model, RecoveryConfig(steps=3, lr=5e-3, **TINY), data=DATA, tokenizer=tokenizer,
                  data_dir=data_dir, progress=False)
    assert res.merge == "masked" and res.report["recovery"]["masked_training_linears"] == 3 * 7
    assert res.validation_loss_merged == pytest.approx(res.history["validation"][-1]["loss"], abs=1e-5)
    assert res.nm_valid["2:4"] == {"before": True, "after": True}
    assert res.sparsity_after == res.sparsity_before
    for n, lin in ModelAdapter(res.model).all_linears():
        assert torch.equal(lin.weight == 0, zeros[n])
        assert not torch.equal(lin.weight, before[n])                       # the kept entries did change
    assert [h["step"] for h in res.history["train"]] == [1, 2, 3]
    assert res.tokens_seen == 3 * 2 * 2 * 32                               # steps x batch x accum x seqlen


def test_recovered_width_output_reloads_with_its_remote_code(tokenizer, data_dir, tmp_path):
    from prunekit.export.save import save_checkpoint

    model = plain_model("llama")
    res = prune(model, SearchConfig(keep=0.7, generations=1, population=4, mutants=2, crossovers=1, randoms=1,
                                    top_k=2, band=0.05, fitness_seqlen=32), _ids(4, 64, seed=0), progress=False)
    width = tmp_path / "width"
    save_checkpoint(res.model, tokenizer, {"model": {"source": "tiny-dense"}, "method": {"name": "search"}}, width)
    assert list(width.glob("modeling_*.py"))
    out = tmp_path / "recovered"
    rec = recover(str(width), RecoveryConfig(steps=2, lr=5e-3, **TINY), data=DATA, output=str(out),
                  data_dir=data_dir, trust_remote_code=True, progress=False)
    assert list(out.glob("modeling_*.py"))
    assert not work_dir(out).exists() and not (out / "checkpoints").exists()
    reloaded = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True).eval()
    original = AutoModelForCausalLM.from_pretrained(width, trust_remote_code=True).eval()
    assert type(reloaded).__name__ == "PrunedLlamaForCausalLM"
    ids = _ids()
    with torch.no_grad():
        assert torch.allclose(reloaded(ids).logits, rec.model(ids).logits, atol=1e-6)
        assert not torch.allclose(reloaded(ids).logits, original(ids).logits, atol=1e-4)
    report = json.loads((out / "prunekit_report.json").read_text())
    assert report["model"]["source"] == "tiny-dense" and report["method"]["name"] == "search"
    assert report["recovery"]["tokens_seen"] == 2 * 2 * 2 * 32
    assert (out / "recovery_loss.png").stat().st_size > 1000


def test_recovered_depth_output_of_opt_saves_and_reloads(tokenizer, data_dir, tmp_path):
    from prunekit.export.save import save_checkpoint
    from prunekit.methods import ShortGPTConfig

    model = plain_model("opt", layers=4)
    res = prune(model, ShortGPTConfig(remove_layers=1), _ids(4, 32, seed=0), progress=False)
    depth = tmp_path / "depth"
    save_checkpoint(res.model, tokenizer, {"model": {"source": "tiny-opt"}, "method": {"name": "shortgpt"}}, depth)
    out = tmp_path / "recovered"
    rec = recover(str(depth), RecoveryConfig(steps=2, lr=5e-3, **TINY), data=DATA, output=str(out),
                  data_dir=data_dir, progress=False)
    reloaded = AutoModelForCausalLM.from_pretrained(out).eval()
    assert reloaded.config.num_hidden_layers == 3 and rec.report["model"]["num_layers"] == 3
    assert rec.report["recovery"]["targets"] == list(ModelAdapter(reloaded).linear_names())
    with torch.no_grad():
        assert torch.allclose(reloaded(_ids()).logits, rec.model(_ids()).logits, atol=1e-6)
