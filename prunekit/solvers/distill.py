"""Distillation losses: the math only (no model, no trainer).

Logit distillation (Hinton et al. 2015; Minitron, arXiv 2407.14679). At every position whose
label is not ignored, with temperature T, teacher logits z_t and student logits z_s:

    p = softmax(z_t / T),  q = softmax(z_s / T)
    KD = T^2 * KL(p || q) = T^2 * sum_v p_v (log p_v - log q_v)

KL(teacher || student), the forward direction: the student is pushed to put mass everywhere the
teacher does. The T^2 factor keeps the gradient's scale independent of T (the gradient of
KL at temperature T shrinks as 1/T^2), so --kd-weight means the same at every temperature.

Top-k teacher (`k` > 0): the teacher keeps its k most likely tokens and the tail mass; the
student is coarsened the same way (solvers/divergence.py), and KD_k is the exact KL of the two
(k + 1)-outcome distributions. 0 <= KD - KD_k = T^2 * p_tail * KL(p_tail-conditional ||
q_tail-conditional): the error is the divergence inside the tail, weighted by the tail's mass,
so it vanishes as the teacher's tail mass does (`topk_error`).

Local distillation (Puzzle's blockwise local distillation, arXiv 2411.19146): a block is trained
to map the dense model's hidden state at the start of its span to the dense hidden state at the
end; the loss is the normalised squared error ||f(x) - y||^2 / ||y||^2.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .divergence import kl_topk, topk_summary


def teacher_summary(teacher_logits: torch.Tensor, temperature: float, topk: int = 0):
    """What the loss needs of the teacher: its log-probabilities at `temperature` ([..., V]), or
    with `topk` > 0 the top-k summary (top log-probs, their ids, log tail mass)."""
    scaled = teacher_logits.float() / temperature
    if 0 < topk < scaled.shape[-1]:
        return topk_summary(scaled, topk)
    return F.log_softmax(scaled, dim=-1)


class _ExactKD(torch.autograd.Function):
    """T^2 KL(p || q) with its gradient written as T (q - p): autograd's own gradient through
    log_softmax is q sum(p) - p, which is not exactly zero where q = p (sum(p) is 1 only up to
    rounding), and AdamW turns any such residue into a full-size step. Written this way, a
    student equal to its teacher gets a gradient of exactly zero."""

    @staticmethod
    def forward(ctx, student_logits, teacher_logp, temperature):
        lq = F.log_softmax(student_logits.float() / temperature, dim=-1)
        lp = teacher_logp.float()
        p = lp.exp()
        ctx.save_for_backward(lq, p)
        ctx.temperature = temperature
        ctx.dtype = student_logits.dtype
        return temperature ** 2 * (p * (lp - lq)).sum(-1)

    @staticmethod
    def backward(ctx, grad):
        lq, p = ctx.saved_tensors
        return (ctx.temperature * (lq.exp() - p) * grad.unsqueeze(-1)).to(ctx.dtype), None, None


def kd_per_token(teacher, student_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 KL(p || q) at every position, from teacher_summary's output and the student's logits."""
    if not isinstance(teacher, tuple):
        return _ExactKD.apply(student_logits, teacher, temperature)
    return temperature ** 2 * kl_topk(*teacher, student_logits.float() / temperature)


def topk_error(teacher_logits: torch.Tensor, student_logits: torch.Tensor, temperature: float, topk: int):
    """(KD - KD_k, T^2 p_tail KL(tail-conditionals)) per position: the top-k error and its closed
    form, which are equal (the chain rule of KL over the partition {top k, tail})."""
    lp = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    lq = F.log_softmax(student_logits.float() / temperature, dim=-1)
    full = kd_per_token(lp, student_logits, temperature)
    summary = topk_summary(teacher_logits.float() / temperature, topk)
    approx = kd_per_token(summary, student_logits, temperature)
    tail = torch.ones_like(lp, dtype=torch.bool).scatter(-1, summary[1], False)
    p_tail, q_tail = summary[2], lq.masked_fill(~tail, float("-inf")).logsumexp(-1)
    cp = (lp - p_tail.unsqueeze(-1)).masked_fill(~tail, float("-inf"))      # log p(v | tail)
    cq = (lq - q_tail.unsqueeze(-1)).masked_fill(~tail, float("-inf"))
    inside = torch.where(tail, cp.exp() * (cp - cq), torch.zeros_like(cp)).sum(-1)
    return full - approx, temperature ** 2 * p_tail.exp() * inside


IGNORE = -100      # the label causal LMs skip (transformers' convention)


def next_token_targets(labels: torch.Tensor) -> torch.Tensor:
    """The positions whose next token is a target: logits at t predict labels at t + 1."""
    mask = torch.zeros_like(labels, dtype=torch.bool)
    mask[:, :-1] = labels[:, 1:] != IGNORE
    return mask


def lm_per_token(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the next token at every position (0 where ignored), as causal LMs shift."""
    shifted = torch.full_like(labels, IGNORE)
    shifted[:, :-1] = labels[:, 1:]
    return F.cross_entropy(logits.float().transpose(1, 2), shifted, ignore_index=IGNORE, reduction="none")


def normalised_error(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """||output - target||^2 / ||target||^2 (a scalar)."""
    return (output.float() - target.float()).pow(2).sum() / target.float().pow(2).sum().clamp_min(1e-12)
