"""The GPU path's own rules on a real CUDA device (skipped without one; benchmarks/gpu/run.sh
runs this file): activations resident on the device equal offloaded ones, the batch chosen from
free memory equals one window at a time within float rounding, a streamed block is read straight
onto the device."""
import pytest
import torch

import prunekit
from prunekit.engine import BlockVisitor, LayerwiseEngine
from prunekit.models.adapter import ModelAdapter
from prunekit.models.plumbing import free_device_memory, windows_per_call

from tests.helpers.models import VOCAB, WINDOW, tiny_model

pytestmark = [pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
              pytest.mark.usefixtures("exact_matmul")]


def _ids(n=6):
    return torch.randint(3, VOCAB, (n, WINDOW), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("family", ["llama", "gemma3", "qwen2", "phi3", "opt"])
def test_resident_equals_offloaded_and_batched_equals_one_window(family):
    model = tiny_model(family)
    ids = _ids()
    resident = LayerwiseEngine(ModelAdapter(model), "cuda", progress=False)            # the rule: fits, stays
    offloaded = LayerwiseEngine(ModelAdapter(model), "cuda", offload_device="cpu", progress=False, batch=1)
    a = resident.run(ids, BlockVisitor()).hidden
    b = offloaded.run(ids, BlockVisitor()).hidden
    assert resident.resident and a.device.type == "cuda"
    assert not offloaded.resident and b.device.type == "cpu"
    assert torch.allclose(a.cpu(), b, atol=1e-4), (a.cpu() - b).abs().max()
    assert all(p.device.type == "cpu" for p in model.parameters())


def test_default_batch_on_cuda_comes_from_free_memory():
    assert free_device_memory("cuda") > 0
    assert windows_per_call("cuda", 1 << 20, n=100) > 1
    assert windows_per_call("cpu", 1 << 20, n=100) == 1


def test_wanda_on_cuda_batched_equals_cpu_one_window():
    ids = _ids(8)
    a, b = tiny_model("llama"), tiny_model("llama")
    prunekit.prune(a, prunekit.WandaConfig(sparsity=0.5), ids, device="cuda", progress=False)      # rule's batch
    prunekit.prune(b, prunekit.WandaConfig(sparsity=0.5), ids, device="cpu", progress=False)
    flips = sum(int(((la.weight == 0) != (lb.weight == 0)).sum())
                for (_, la), (_, lb) in zip(ModelAdapter(a).all_linears(), ModelAdapter(b).all_linears()))
    total = sum(lin.weight.numel() for _, lin in ModelAdapter(a).all_linears())
    assert flips <= 1e-3 * total


def test_streamed_block_is_read_onto_the_device(tmp_path):
    from prunekit.streaming.checkpoint import StreamedModel
    model = tiny_model("llama")
    model.save_pretrained(tmp_path)
    sm = StreamedModel(str(tmp_path))
    block = sm.load("model.layers.0", "cuda")
    assert all(p.device.type == "cuda" for p in block.parameters())
    ref = model.model.layers[0].state_dict()
    for k, v in block.state_dict().items():
        assert torch.equal(v.cpu(), ref[k])
