"""The SparseGPT method on tiny models; non-finite activations are reported."""
import pytest
import torch

import prunekit
from prunekit import SparseGPTConfig
from prunekit.errors import PrunekitError
from prunekit.models.adapter import ModelAdapter

from tests.helpers.models import VOCAB, plain_model


def test_sparsegpt_method_on_tiny_models(family):
    model = plain_model(family)
    ids = torch.randint(3, VOCAB, (4, 32), generator=torch.Generator().manual_seed(0))
    res = prunekit.prune(model, SparseGPTConfig(pattern="2:4"), ids, progress=False)
    for name, lin in ModelAdapter(model).all_linears():
        assert (torch.count_nonzero(lin.weight.reshape(lin.out_features, -1, 4), dim=-1) == 2).all(), name
    assert res.sparsity["overall"] == 0.5 and res.details["cholesky_retries"] == 0


def test_nonfinite_activations_are_reported():
    model = plain_model("llama")
    with torch.no_grad():
        ModelAdapter(model).layers[1].self_attn.o_proj.weight[0, 0] = float("inf")
    ids = torch.randint(3, VOCAB, (2, 16))
    with pytest.raises(PrunekitError, match="non-finite activations at the input of block 1"):
        prunekit.prune(model, SparseGPTConfig(sparsity=0.5), ids, progress=False)
