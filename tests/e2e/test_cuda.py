"""The compute-device path: blocks move to CUDA one at a time and back; results match the CPU.
Skipped where no GPU is present (CI has none)."""
import pytest
import torch

import prunekit
from prunekit.engine import BlockVisitor, LayerwiseEngine
from prunekit.models.adapter import ModelAdapter

from tests.helpers.models import VOCAB, plain_model

pytestmark = [pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
              pytest.mark.usefixtures("exact_matmul")]


def test_engine_on_cuda_equals_cpu_forward(family):
    model = plain_model(family)
    ids = torch.randint(3, VOCAB, (2, 20))
    engine = LayerwiseEngine(ModelAdapter(model), device="cuda", progress=False)
    logits = engine.head(engine.run(ids, BlockVisitor()).hidden).cpu()
    with torch.no_grad():
        ref = model(ids).logits
    assert torch.allclose(logits, ref, atol=1e-4)
    assert all(p.device.type == "cpu" for p in model.parameters())      # everything went back


@pytest.mark.parametrize("cfg", [prunekit.WandaConfig(pattern="2:4"), prunekit.SparseGPTConfig(sparsity=0.5),
                                 prunekit.SparseLLMConfig(pattern="2:4", iterations=1)], ids=lambda c: type(c).__name__)
def test_pruning_on_cuda_matches_cpu(family, cfg):
    ids = torch.randint(3, VOCAB, (4, 32), generator=torch.Generator().manual_seed(0))
    a, b = plain_model(family), plain_model(family)
    ra = prunekit.prune(a, cfg, ids, device="cuda", progress=False)
    rb = prunekit.prune(b, cfg, ids, device="cpu", progress=False)
    assert ra.sparsity["overall"] == rb.sparsity["overall"]
    x = torch.randint(3, VOCAB, (1, 24))
    with torch.no_grad():
        la, lb = a(x).logits, b(x).logits
    # masks may differ where float sums differ at the last bit; the functions must still agree closely
    assert (la - lb).abs().max() < 0.05 * lb.abs().max()
    assert all(p.device.type == "cpu" for p in a.parameters())


def test_perplexity_on_cuda_equals_cpu():
    from prunekit.eval.ppl import perplexity_of_ids
    model = plain_model("llama")
    ids = torch.randint(3, VOCAB, (200,))
    g = perplexity_of_ids(model, ids, 64, device="cuda", progress=False)["ppl"]
    c = perplexity_of_ids(model, ids, 64, device="cpu", progress=False)["ppl"]
    assert g == pytest.approx(c, rel=1e-4)


def test_sparsellm_iterations_on_cuda_track_cpu(family):
    """Alternating re-pruning amplifies last-bit differences into some flipped mask entries, so
    compare what must agree: exact sparsity and the FFN error history, within a tolerance."""
    ids = torch.randint(3, VOCAB, (4, 32), generator=torch.Generator().manual_seed(0))
    cfg = prunekit.SparseLLMConfig(sparsity=0.7, iterations=3)
    ra = prunekit.prune(plain_model(family), cfg, ids, device="cuda", progress=False)
    rb = prunekit.prune(plain_model(family), cfg, ids, device="cpu", progress=False)
    assert ra.sparsity["overall"] == rb.sparsity["overall"]
    for k, errs in rb.details["ffn_relative_error"].items():
        assert ra.details["ffn_relative_error"][k][0] == pytest.approx(errs[0], rel=1e-3)
        assert ra.details["ffn_relative_error"][k][-1] == pytest.approx(errs[-1], rel=0.25)


@pytest.mark.parametrize("cfg", [prunekit.WandaConfig(sparsity=0.5), prunekit.SparseGPTConfig(pattern="2:4")],
                         ids=lambda c: type(c).__name__)
def test_streaming_to_cuda_matches_streaming_on_cpu(cfg, tokenizer, tmp_path):
    """--stream --device cuda: blocks go from the safetensors shards to the GPU one at a time; the
    written checkpoint must match the CPU-streamed one up to last-bit mask flips."""
    from transformers import AutoModelForCausalLM

    from prunekit.stats import sparsity_stats
    from prunekit.streaming import stream_prune

    src = tmp_path / "src"
    plain_model("llama").save_pretrained(src)
    tokenizer.save_pretrained(src)
    ids = torch.randint(3, VOCAB, (4, 32), generator=torch.Generator().manual_seed(0))
    ra = stream_prune(str(src), cfg, ids, tmp_path / "gpu", device="cuda", progress=False)
    rb = stream_prune(str(src), cfg, ids, tmp_path / "cpu", device="cpu", progress=False)
    a = AutoModelForCausalLM.from_pretrained(tmp_path / "gpu").eval()
    b = AutoModelForCausalLM.from_pretrained(tmp_path / "cpu").eval()
    assert ra.sparsity["overall"] == rb.sparsity["overall"] == sparsity_stats(ModelAdapter(a))["overall"]
    x = torch.randint(3, VOCAB, (1, 24))
    with torch.no_grad():
        la, lb = a(x).logits, b(x).logits
    assert (la - lb).abs().max() < 0.05 * lb.abs().max()


def test_streamed_perplexity_on_cuda_equals_cpu(tokenizer, tmp_path):
    from prunekit.streaming import stream_perplexity

    src = tmp_path / "src"
    plain_model("llama").save_pretrained(src)
    tokenizer.save_pretrained(src)
    ids = torch.randint(3, VOCAB, (200,), generator=torch.Generator().manual_seed(1))
    g = stream_perplexity(str(src), ids, 64, device="cuda", progress=False)["ppl"]
    c = stream_perplexity(str(src), ids, 64, device="cpu", progress=False)["ppl"]
    assert g == pytest.approx(c, rel=1e-4)
