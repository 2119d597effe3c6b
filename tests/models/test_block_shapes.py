"""Block shapes: blocks_alike compares the kept dimensions, not only the widths."""
import torch

from prunekit.api import prune
from prunekit.methods import SearchConfig
from prunekit.models.adapter import ModelAdapter
from prunekit.models.block_shapes import blocks_alike, full_width

from tests.helpers.models import VOCAB, plain_model


def _ids(n=4, length=48, seed=0):
    return torch.randint(0, VOCAB, (n, length), generator=torch.Generator().manual_seed(seed))


def test_blocks_alike_sees_kept_dims_not_only_widths():
    model = plain_model("llama", layers=3)
    assert blocks_alike(ModelAdapter(model)) and full_width(ModelAdapter(model))
    width = prune(model, SearchConfig(keep=0.7, generations=0, band=0.05, fitness_seqlen=32), _ids(),
                  progress=False).model
    a = ModelAdapter(width)
    index = [b.self_attn.rope_index for b in a.layers]
    shapes_equal = all(i.shape == index[0].shape for i in index)
    assert blocks_alike(a) == (shapes_equal and all(torch.equal(i, index[0]) for i in index)
                               and len({a.role(b, "down").in_features for b in a.layers}) == 1)
