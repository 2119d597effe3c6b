"""KL to the dense model against its definition."""
import pytest
import torch

from prunekit.eval.kl import kl_and_agreement, kl_to_dense

from tests.helpers.models import VOCAB, plain_model


def test_kl_matches_definition_and_is_zero_for_identical_models():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 11, generator=g), torch.randn(5, 11, generator=g)
    kl, same = kl_and_agreement(a, b)
    p, q = a.softmax(-1).double(), b.softmax(-1).double()
    assert torch.allclose(kl.double(), (p * (p.log() - q.log())).sum(-1), atol=1e-5)
    assert torch.equal(same, a.argmax(-1) == b.argmax(-1))
    m1, m2 = plain_model("opt", seed=0), plain_model("opt", seed=1)
    ids = torch.randint(0, VOCAB, (2, 12), generator=g)
    same_model = kl_to_dense(m1, plain_model("opt", seed=0), ids, progress=False)
    assert same_model["kl"] == pytest.approx(0.0, abs=1e-6) and same_model["top1_agreement"] == 1.0
    other = kl_to_dense(m2, m1, ids, progress=False)
    with torch.no_grad():
        kl2, same2 = kl_and_agreement(m1(ids).logits, m2(ids).logits)
    assert other["kl"] == pytest.approx(kl2.mean().item(), rel=1e-5) and other["tokens"] == 24
    assert other["top1_agreement"] == pytest.approx(same2.double().mean().item())
