"""Streamed evaluation: perplexity, KL and counts equal the in-memory ones."""
import pytest
import torch

import prunekit
from prunekit.eval.kl import kl_to_dense
from prunekit.stats import param_counts, sparsity_stats
from prunekit.streaming import StreamedModel, stream_counts, stream_kl, stream_perplexity

from tests.helpers.checkpoints import pruned_pair as _pruned_pair, save_folder as _save
from tests.helpers.models import VOCAB, plain_model


def test_streamed_perplexity_equals_in_memory(tokenizer, tmp_path):
    from prunekit.eval.ppl import perplexity_of_ids

    src = _save(plain_model("opt"), tokenizer, tmp_path / "src")
    ids = torch.randint(3, VOCAB, (5 * 32 + 7,), generator=torch.Generator().manual_seed(3))
    model, _, _ = prunekit.load_model(str(src))
    ref = perplexity_of_ids(model, ids, seqlen=32, progress=False)
    got = stream_perplexity(str(src), ids, seqlen=32, chunk_windows=2, progress=False)
    assert got["windows"] == ref["windows"] == 5
    assert got["ppl"] == pytest.approx(ref["ppl"], rel=1e-6)


@pytest.mark.parametrize("family", ["llama", "opt"])
def test_streamed_kl_equals_in_memory(family, tokenizer, tmp_path):
    dense, pruned = _pruned_pair(tokenizer, tmp_path, family)
    ids = torch.randint(3, VOCAB, (5, 24), generator=torch.Generator().manual_seed(1))
    ref = kl_to_dense(pruned, dense, ids, progress=False)
    got = stream_kl(str(tmp_path / "pruned"), str(tmp_path / "dense"), ids, chunk_windows=2, progress=False)
    assert ref["kl"] > 0.01 and got["tokens"] == ref["tokens"] == 5 * 24
    assert got["kl"] == pytest.approx(ref["kl"], rel=1e-5)
    assert got["top1_agreement"] == ref["top1_agreement"]
    same = stream_kl(str(tmp_path / "dense"), str(tmp_path / "dense"), ids, progress=False)
    assert same["kl"] == 0.0 and same["top1_agreement"] == 1.0


@pytest.mark.parametrize("family", ["llama", "opt"])     # OPT ties its head to the embeddings
def test_stream_counts_equal_the_loaded_models(family, tokenizer, tmp_path):
    _, pruned = _pruned_pair(tokenizer, tmp_path, family)
    params, sparsity = stream_counts(StreamedModel(str(tmp_path / "pruned")))
    assert params == param_counts(pruned)
    assert sparsity == sparsity_stats(prunekit.ModelAdapter(pruned))
