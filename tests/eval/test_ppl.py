"""Perplexity against its direct computation, and the protocol labels."""
import math

import pytest
import torch
import torch.nn.functional as F

from prunekit.eval.ppl import eval_tokens, perplexity, perplexity_of_ids

from tests.helpers.models import VOCAB, plain_model


def test_perplexity_equals_direct_computation():
    model = plain_model("llama")
    ids = torch.randint(3, VOCAB, (100,))
    res = perplexity_of_ids(model, ids, seqlen=32, progress=False)
    assert res["windows"] == 3 and res["windows_total"] == 3     # floor(100/32), tail dropped
    nlls = []
    with torch.no_grad():
        for w in range(3):
            x = ids[w * 32:(w + 1) * 32]
            logits = model(x.unsqueeze(0)).logits[0]
            nlls.append(F.cross_entropy(logits[:-1], x[1:]).item())
    assert res["ppl"] == pytest.approx(math.exp(sum(nlls) / 3), rel=1e-5)
    assert perplexity_of_ids(model, ids, seqlen=32, windows=1, progress=False)["ppl"] == pytest.approx(math.exp(nlls[0]), rel=1e-5)


def test_protocol_labels(tokenizer, data_dir):
    model = plain_model("llama")
    res = perplexity(model, tokenizer, "wikitext2", seqlen=64, windows=2, data_dir=data_dir, progress=False)
    assert res["protocol"] == "wt2-64/2" and res["join"] == "\n\n" and res["split"] == "test"
    c4 = eval_tokens("c4", tokenizer, 64, data_dir)
    assert c4.ids.numel() == 256 * 64 and c4.info["documents"] == 1100 and "not comparable" in c4.info["note"]
