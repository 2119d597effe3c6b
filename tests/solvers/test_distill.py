"""Distillation losses against direct computation: the KL written out as a sum over the
vocabulary, the temperature scaling, and the top-k approximation's error against its closed form."""
import math

import pytest
import torch

from prunekit.solvers.distill import (kd_per_token, lm_per_token, next_token_targets, normalised_error,
                                      teacher_summary, topk_error)


def _logits(seed, shape=(2, 5, 11), scale=3.0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * scale


def _direct_kl(t, s, T):
    """T^2 sum_v p_v (log p_v - log q_v), one position at a time in float64 with math.log."""
    out = torch.zeros(t.shape[:-1], dtype=torch.float64)
    for idx in torch.cartesian_prod(*[torch.arange(n) for n in t.shape[:-1]]):
        zt, zs = t[tuple(idx)].double() / T, s[tuple(idx)].double() / T
        p, q = torch.softmax(zt, 0), torch.softmax(zs, 0)
        out[tuple(idx)] = T * T * sum(float(p[v]) * (math.log(p[v]) - math.log(q[v])) for v in range(len(p)))
    return out


@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_kd_equals_the_kl_written_out(temperature):
    t, s = _logits(0), _logits(1)
    got = kd_per_token(teacher_summary(t, temperature), s, temperature)
    assert torch.allclose(got.double(), _direct_kl(t, s, temperature), atol=1e-5)


def test_kd_of_a_model_with_itself_is_zero_and_positive_otherwise():
    t = _logits(2)
    assert kd_per_token(teacher_summary(t, 1.0), t, 1.0).abs().max() < 1e-6
    assert (kd_per_token(teacher_summary(t, 1.0), _logits(3), 1.0) > 1e-3).all()


@pytest.mark.parametrize("k", [1, 3, 7])
def test_topk_kd_error_is_the_tail_divergence_and_never_negative(k):
    t, s = _logits(4), _logits(5)
    full = kd_per_token(teacher_summary(t, 2.0), s, 2.0)
    approx = kd_per_token(teacher_summary(t, 2.0, topk=k), s, 2.0)
    gap, closed_form = topk_error(t, s, 2.0, k)
    assert torch.allclose(full - approx, gap)
    assert torch.allclose(gap, closed_form, atol=1e-5)          # the stated bound holds with equality
    assert (gap >= -1e-6).all() and (gap.max() > 1e-4)


def test_topk_covering_the_vocabulary_is_exact():
    t, s = _logits(6), _logits(7)
    assert torch.allclose(kd_per_token(teacher_summary(t, 1.0, topk=11), s, 1.0),
                          kd_per_token(teacher_summary(t, 1.0), s, 1.0))


def test_lm_term_is_the_shifted_cross_entropy_on_targets_only():
    logits = _logits(8, (1, 4, 6))
    labels = torch.tensor([[1, 2, -100, 4]])
    per = lm_per_token(logits, labels)
    mask = next_token_targets(labels)
    assert mask.tolist() == [[True, False, True, False]]
    lp = torch.log_softmax(logits[0].double(), -1)
    assert per[0, 0].item() == pytest.approx(-lp[0, 2].item(), abs=1e-6)
    assert per[0, 2].item() == pytest.approx(-lp[2, 4].item(), abs=1e-6)
    assert per[0, 1] == 0 and per[0, 3] == 0


def test_normalised_error():
    y = torch.tensor([[3.0, 4.0]])
    assert normalised_error(y + torch.tensor([[0.0, 1.0]]), y).item() == pytest.approx(1 / 25)


def test_kd_gradient_is_autograds_and_exactly_zero_at_the_teacher():
    from prunekit.solvers.divergence import kl_exact
    t, s = _logits(9), _logits(10).requires_grad_(True)
    kd_per_token(teacher_summary(t, 2.0), s, 2.0).sum().backward()
    ref = _logits(10).requires_grad_(True)
    (4.0 * kl_exact(teacher_summary(t, 2.0), ref / 2.0)).sum().backward()
    assert torch.allclose(s.grad, ref.grad, atol=1e-6)
    same = t.clone().requires_grad_(True)
    kd_per_token(teacher_summary(t, 1.0), same, 1.0).sum().backward()
    assert torch.count_nonzero(same.grad) == 0
