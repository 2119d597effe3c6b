"""LoRA on tiny models: the masked merge keeps every zero and equals PEFT's merge on the kept
entries, stray zeros, the dense merge computes what the adapted model computed."""
import copy

import pytest
import torch

from prunekit.api import prune
from prunekit.methods import MagnitudeConfig
from prunekit.models.adapter import ModelAdapter
from prunekit.recovery import RecoveryConfig, recover
from prunekit.recovery.lora import attach_lora, lora_layers, mask_adapters, merge_lora, zero_patterns
from prunekit.solvers.lora_merge import nm_valid
from prunekit.stats import sparsity_stats

from tests.helpers.models import VOCAB, plain_model


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


@pytest.mark.parametrize("family,pattern", [("llama", None), ("qwen2", "2:4"), ("opt", "2:4")])
def test_merge_keeps_every_zero_and_equals_peft_merge_on_kept_entries(family, pattern):
    model = plain_model(family)
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
    model = plain_model("llama")
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


def test_dense_merge_computes_what_the_adapted_model_computed(tokenizer, data_dir):
    # one epoch over 12 windows: 3 held out (the minimum of a quarter), 9 trained on, each seen once
    res = recover(plain_model("qwen2"), RecoveryConfig(epochs=1, max_examples=12, lr=5e-3, **TINY), data=DATA,
                  tokenizer=tokenizer, data_dir=data_dir, progress=False)
    assert res.merge == "dense"
    assert res.data["train_examples"] == 9 and res.data["validation_examples"] == 3
    assert res.tokens_seen == 9 * 32
    last = res.history["validation"][-1]
    assert last["step"] == res.steps
    assert res.validation_loss_merged == pytest.approx(last["loss"], abs=1e-5)
    assert res.history["validation"][0]["step"] == 0
