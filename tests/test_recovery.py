"""LoRA recovery on tiny models: training lowers the loss, the masked merge keeps every zero and
equals W + s*B@A on the kept entries, evaluation data is refused, Alpaca prompts are masked, a
width output reloads with its remote code, and a resumed run equals an uninterrupted one."""
import copy
import json
import shutil

import pytest
import torch
from transformers import AutoModelForCausalLM, TrainerCallback

from prunekit.api import prune
from prunekit.cli import main
from prunekit.errors import PrunekitError
from prunekit.methods import MagnitudeConfig, SearchConfig
from prunekit.models.adapter import ModelAdapter
from prunekit.recovery import RecoveryConfig, recover
from prunekit.recovery.data import IGNORE, alpaca_example, alpaca_prompt, build_training_data
from prunekit.recovery.lora import attach_lora, lora_layers, mask_adapters, merge_lora, zero_patterns
from prunekit.recovery.output import work_dir
from prunekit.recovery.train import pad_collator
from prunekit.solvers.lora_merge import masked_lora_merge, nm_valid
from prunekit.stats import sparsity_stats

from .conftest import VOCAB, make_tiny_model

TINY = dict(seqlen=32, eval_every=2, save_every=2, warmup_steps=0)
DATA = "wikitext2:validation"


def _ids(n=2, length=24, seed=1):
    return torch.randint(3, VOCAB, (n, length), generator=torch.Generator().manual_seed(seed))


def _randomise_lora(peft_model, seed=0):
    """LoRA starts with B = 0 (no change); random A and B make the merge visible."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in lora_layers(peft_model).values():
            for w in (layer.lora_A["default"].weight, layer.lora_B["default"].weight):
                w.copy_(torch.randn(w.shape, generator=g) * 0.1)


def test_one_lora_step_lowers_the_loss_on_a_fixed_batch(tokenizer, tmp_path):
    from prunekit.recovery.data import TrainingData
    from prunekit.recovery.train import train_lora

    model = make_tiny_model("llama")
    ids = _ids(2, 32)
    batch = [{"input_ids": row.tolist(), "labels": row.tolist()} for row in ids]
    cfg = RecoveryConfig(steps=1, batch_size=2, grad_accum=1, lr=1e-2, lora_dropout=0.0, **TINY)
    targets = cfg.target_names(ModelAdapter(model).linear_names())
    torch.manual_seed(0)
    peft_model = attach_lora(model, cfg, targets)
    with torch.no_grad():
        before = peft_model(input_ids=ids, labels=ids).loss.item()
    train_lora(peft_model, tokenizer, TrainingData(batch, batch[:1]), cfg, tmp_path / "ck", progress=False)
    peft_model.eval()
    with torch.no_grad():
        after = peft_model(input_ids=ids, labels=ids).loss.item()
    assert after < before - 1e-3


@pytest.mark.parametrize("keep_frac", [0.5, None])
def test_masked_merge_is_w_plus_lora_product_on_kept_entries_and_zero_elsewhere(keep_frac):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(8, 16, generator=g)
    if keep_frac is None:     # 2:4
        keep = torch.zeros(8, 16, dtype=torch.bool)
        idx = torch.rand(8, 4, 4, generator=g).topk(2, dim=-1).indices
        keep = keep.view(8, 4, 4).scatter_(-1, idx, True).view(8, 16)
    else:
        keep = torch.rand(8, 16, generator=g) < keep_frac
    w = w * keep
    a, b = torch.randn(4, 16, generator=g), torch.randn(8, 4, generator=g)
    merged = masked_lora_merge(w, a, b, 2.0, keep)
    direct = w.double() + 2.0 * (b.double() @ a.double())
    assert torch.equal(merged[~keep], torch.zeros_like(merged[~keep]))
    assert torch.allclose(merged[keep].double(), direct[keep], atol=1e-5)
    if keep_frac is None:
        assert nm_valid(merged, 2, 4) and not nm_valid(masked_lora_merge(w, a, b, 2.0), 2, 4)


@pytest.mark.parametrize("family,pattern", [("llama", None), ("qwen2", "2:4"), ("opt", "2:4")])
def test_merge_keeps_every_zero_and_equals_peft_merge_on_kept_entries(family, pattern):
    model = make_tiny_model(family)
    prune(model, MagnitudeConfig(sparsity=None if pattern else 0.5, pattern=pattern), progress=False)
    cfg = RecoveryConfig(steps=1)
    targets = cfg.target_names(ModelAdapter(model).linear_names())
    masks = zero_patterns(model, targets)
    assert len(masks) == len(targets) * ModelAdapter(model).num_layers
    before = sparsity_stats(ModelAdapter(model))
    peft_model = attach_lora(model, cfg, targets)
    _randomise_lora(peft_model)
    reference = copy.deepcopy(peft_model).merge_and_unload()      # peft's own (dense) merge
    assert mask_adapters(peft_model, masks) == len(masks)
    peft_model.eval()                                              # no LoRA dropout
    with torch.no_grad():
        trained_view = peft_model(_ids()).logits                   # what masked training optimises
    merged = merge_lora(peft_model, masks)
    with torch.no_grad():
        assert torch.allclose(merged(_ids()).logits, trained_view, atol=1e-5)
    assert sparsity_stats(ModelAdapter(merged)) == before
    ref_linears = dict(ModelAdapter(reference).all_linears())
    prefix = ModelAdapter(merged).spec.layers_path
    for name, lin in ModelAdapter(merged).all_linears():
        keep = masks[f"{prefix}.{name[len('layers.'):]}"]
        assert torch.equal(lin.weight[keep], ref_linears[name].weight[keep])
        assert not torch.equal(lin.weight, ref_linears[name].weight)        # peft's merge filled the zeros
        if pattern:
            assert nm_valid(lin.weight, 2, 4)


def test_stray_zeros_are_kept_at_the_merge_but_do_not_switch_on_masked_training():
    model = make_tiny_model("llama")
    with torch.no_grad():
        ModelAdapter(model).layers[1].mlp.up_proj.weight[3, :5] = 0     # 5 of 8192 entries, as after dequantising
    cfg = RecoveryConfig(steps=1)
    targets = cfg.target_names(ModelAdapter(model).linear_names())
    masks = zero_patterns(model, targets)
    assert list(masks) == ["model.layers.1.mlp.up_proj"]
    peft_model = attach_lora(model, cfg, targets)
    assert mask_adapters(peft_model, masks) == 0
    _randomise_lora(peft_model)
    merged = merge_lora(peft_model, masks)
    assert int((ModelAdapter(merged).layers[1].mlp.up_proj.weight == 0).sum()) == 5


def test_sparse_recovery_end_to_end_keeps_sparsity_and_2_4(tokenizer, data_dir, tmp_path):
    model = make_tiny_model("llama")
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


def test_dense_merge_computes_what_the_adapted_model_computed(tokenizer, data_dir):
    # one epoch over 12 windows: 3 held out (the minimum of a quarter), 9 trained on, each seen once
    res = recover(make_tiny_model("qwen2"), RecoveryConfig(epochs=1, max_examples=12, lr=5e-3, **TINY), data=DATA,
                  tokenizer=tokenizer, data_dir=data_dir, progress=False)
    assert res.merge == "dense"
    assert res.data["train_examples"] == 9 and res.data["validation_examples"] == 3
    assert res.tokens_seen == 9 * 32
    last = res.history["validation"][-1]
    assert last["step"] == res.steps
    assert res.validation_loss_merged == pytest.approx(last["loss"], abs=1e-5)
    assert res.history["validation"][0]["step"] == 0


def test_evaluation_data_is_refused_by_name_and_by_file(tokenizer, data_dir, tmp_path):
    cfg = RecoveryConfig(steps=1, **TINY)
    for spec in ("wikitext2:test", "ptb:test", "c4:validation"):
        with pytest.raises(PrunekitError, match="evaluation set"):
            build_training_data(spec, tokenizer, cfg, data_dir)
    with pytest.raises(PrunekitError, match="evaluation"):
        build_training_data(f"{data_dir}/wikitext2/test.txt", tokenizer, cfg, data_dir)
    copy_of_test = tmp_path / "my_text.txt"
    shutil.copy(f"{data_dir}/wikitext2/test.txt", copy_of_test)
    with pytest.raises(PrunekitError, match="same content as the evaluation file"):
        build_training_data(str(copy_of_test), tokenizer, cfg, data_dir)
    task_copy = tmp_path / "rows.jsonl"
    shutil.copy(f"{data_dir}/tasks/piqa/validation.jsonl", task_copy)
    with pytest.raises(PrunekitError, match="same content"):
        build_training_data(str(task_copy), tokenizer, cfg, data_dir)
    allowed = tmp_path / "allowed.txt"
    shutil.copy(f"{data_dir}/wikitext2/validation.txt", allowed)
    assert build_training_data(str(allowed), tokenizer, cfg, data_dir).train
    with pytest.raises(PrunekitError, match="evaluation set"):     # before any model is loaded
        recover("no-such-model-folder/x", cfg, data="wikitext2:test", data_dir=data_dir)


def test_alpaca_prompt_tokens_are_masked_exactly(tokenizer, tmp_path, data_dir):
    rows = [{"instruction": "Name a colour.", "input": "", "output": "Blue is a colour."},
            {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"}]
    for row in rows:
        ex = alpaca_example(tokenizer, row, 512)
        prompt = tokenizer(alpaca_prompt(row))["input_ids"]
        n = len(prompt)
        assert ex["input_ids"][:n] == prompt
        assert ex["labels"][:n] == [IGNORE] * n
        assert ex["labels"][n:] == ex["input_ids"][n:] and IGNORE not in ex["labels"][n:]
        assert ex["input_ids"][-1] == tokenizer.eos_token_id
        assert tokenizer.decode(ex["input_ids"][n:-1]) == row["output"]
    assert "### Input:\n2 and 3" in alpaca_prompt(rows[1]) and "### Input" not in alpaca_prompt(rows[0])
    path = tmp_path / "alpaca.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows * 5) + "\n")
    data = build_training_data(str(path), tokenizer, RecoveryConfig(steps=2, **{**TINY, "seqlen": 512}), data_dir)
    assert data.info["format"] == "alpaca" and len(data.train) + len(data.validation) == 10
    lens = [len(tokenizer(alpaca_prompt(r))["input_ids"]) for r in rows]
    assert lens[0] + 2 < lens[1]
    short = build_training_data(str(path), tokenizer, RecoveryConfig(steps=2, **{**TINY, "seqlen": lens[0] + 2}),
                                data_dir)                 # rows whose prompt fills the cutoff teach nothing
    assert short.info["dropped_prompt_too_long"] == 5 and len(short.train) + len(short.validation) == 5
    with pytest.raises(PrunekitError, match="every Alpaca prompt"):
        build_training_data(str(path), tokenizer, RecoveryConfig(steps=2, **TINY), data_dir)
    batch = pad_collator(0)(data.train[:4])
    pad = batch["attention_mask"] == 0
    assert bool((batch["labels"][pad] == IGNORE).all())


def test_recovered_width_output_reloads_with_its_remote_code(tokenizer, data_dir, tmp_path):
    from prunekit.export.save import save_checkpoint

    model = make_tiny_model("llama")
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


class _Kill(TrainerCallback):
    def __init__(self, at):
        self.at = at

    def on_step_end(self, args, state, control, **kw):
        if state.global_step == self.at:
            raise KeyboardInterrupt


def test_resume_after_a_kill_equals_an_uninterrupted_run(tokenizer, data_dir, tmp_path):
    cfg = dict(steps=5, lr=5e-3, **TINY)
    full = recover(make_tiny_model("llama"), RecoveryConfig(**cfg), data=DATA, tokenizer=tokenizer,
                   data_dir=data_dir, output=str(tmp_path / "full"), progress=False)
    out = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        recover(make_tiny_model("llama"), RecoveryConfig(**cfg), data=DATA, tokenizer=tokenizer, data_dir=data_dir,
                output=str(out), progress=False, callbacks=[_Kill(3)])
    assert not out.exists() and (work_dir(out) / "checkpoints" / "checkpoint-2").is_dir()
    with pytest.raises(PrunekitError, match="--resume"):
        recover(make_tiny_model("llama"), RecoveryConfig(**cfg), data=DATA, tokenizer=tokenizer, data_dir=data_dir,
                output=str(out), progress=False)
    resumed = recover(make_tiny_model("llama"), RecoveryConfig(**cfg, resume=True), data=DATA, tokenizer=tokenizer,
                      data_dir=data_dir, output=str(out), progress=False)
    rec = resumed.report["recovery"]
    assert rec["resumed_from"] == "checkpoint-2"
    assert rec["tokens_seen"] == full.tokens_seen == 5 * 2 * 2 * 32 and rec["tokens_this_run"] == 3 * 2 * 2 * 32
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k                                  # exactly equal, not only close
    assert [h["loss"] for h in resumed.history["train"]] == [h["loss"] for h in full.history["train"]]
    assert not work_dir(out).exists()


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


def test_recovered_depth_output_of_opt_saves_and_reloads(tokenizer, data_dir, tmp_path):
    from prunekit.export.save import save_checkpoint
    from prunekit.methods import ShortGPTConfig

    model = make_tiny_model("opt", layers=4)
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
