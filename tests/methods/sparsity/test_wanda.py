"""Wanda: its choice in block 0 equals a brute-force scoring of the dense block-0 inputs; it needs
calibration; it prunes Phi-3's fused matrices per output row."""
import pytest
import torch

import prunekit
from prunekit import WandaConfig
from prunekit.errors import PrunekitError
from prunekit.models.adapter import ModelAdapter

from tests.helpers.models import VOCAB, WINDOW, plain_model, tiny_model


def _window_ids(n=4, length=WINDOW, seed=0):
    return torch.randint(3, 300, (n, length), generator=torch.Generator().manual_seed(seed))


def test_wanda_prunes_phi3_fused_matrices_per_output_row():
    model = tiny_model("phi3")
    prunekit.prune(model, prunekit.WandaConfig(sparsity=0.5), _window_ids(), progress=False)
    block = ModelAdapter(model).layers[0]
    for lin in (block.self_attn.qkv_proj, block.mlp.gate_up_proj):
        per_row = (lin.weight == 0).sum(dim=1)
        assert torch.equal(per_row, torch.full_like(per_row, lin.in_features // 2))


def _calib(n=4, L=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, VOCAB, (n, L), generator=g)


def test_wanda_block0_matches_brute_force(family):
    model = plain_model(family)
    dense = plain_model(family)
    ids = _calib(3, 20)
    adapter = ModelAdapter(dense)
    # inputs of every block-0 linear in the dense model, collected directly
    xs = {}
    hooks = [lin.register_forward_hook(lambda m, i, o, n=name: xs.setdefault(n, []).append(i[0].reshape(-1, i[0].shape[-1])))
             for name, lin in adapter.block_linears(adapter.layers[0]).items()]
    with torch.no_grad():
        for row in ids:
            dense(row.unsqueeze(0))
    for h in hooks:
        h.remove()
    prunekit.prune(model, WandaConfig(sparsity=0.5), ids, progress=False)
    pruned0 = ModelAdapter(model).block_linears(ModelAdapter(model).layers[0])
    for name, lin in adapter.block_linears(adapter.layers[0]).items():
        x = torch.cat(xs[name])
        score = lin.weight.abs() * x.pow(2).sum(0).sqrt()
        keep_expected = torch.zeros_like(score, dtype=torch.bool)
        k = round(0.5 * score.shape[1])
        keep_expected.scatter_(1, score.argsort(dim=1, descending=True)[:, :k], True)
        assert torch.equal(pruned0[name].weight != 0, keep_expected), name
        assert torch.equal(pruned0[name].weight[keep_expected], lin.weight[keep_expected])   # no update


def test_wanda_needs_calibration():
    with pytest.raises(PrunekitError, match="needs calibration"):
        prunekit.prune(plain_model("llama"), WandaConfig(sparsity=0.5), None, progress=False)
