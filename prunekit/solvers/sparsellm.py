"""SparseLLM's FFN updates (Bai et al. 2024, arXiv 2402.17946; docs/methods.md), as pure tensor math.

Row layout throughout: every matrix of activations is [tokens, features]; weights are
nn.Linear's [out, in]. The FFN objective for the gated form (SwiGLU, act = SiLU; GeGLU, act = GELU
with the tanh approximation, as Gemma computes it) is
    alpha*||z - X Wu^T||^2 + alpha*||s - X Wg^T||^2 + gamma*||p - act(s)*z||^2 + beta*||Y - p Wd^T||^2
and for the ReLU (OPT) form
    alpha*||z - (X W1^T + b1)||^2 + gamma*||p - ReLU(z)||^2 + beta*||Y - (p W2^T + b2)||^2.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def ridge_fit(A: torch.Tensor, B: torch.Tensor, ridge: float = 1e-3) -> torch.Tensor:
    """W [out, in] minimising ||B - A W^T||^2 + lam*||W||^2, lam = ridge * mean(diag(A^T A)).
    A linear solve of the normal equations: the stable stand-in for B^T A^+ (a pseudo-inverse)."""
    G = A.T @ A
    lam = ridge * torch.mean(torch.diag(G)).clamp_min(1e-12)
    G.diagonal().add_(lam)
    return torch.linalg.solve(G, A.T @ B).T


def hessian_of(A: torch.Tensor) -> torch.Tensor:
    """The OBS Hessian proxy 2 A^T A / n of a layer whose inputs are the rows of A."""
    return 2.0 * (A.T @ A) / A.shape[0]


def update_p(W_out: torch.Tensor, target: torch.Tensor, act: torch.Tensor, beta: float, gamma: float) -> torch.Tensor:
    """argmin_p beta*||target - p W_out^T||^2 + gamma*||p - act||^2, closed form per token:
    p = (beta * target W_out + gamma * act) (beta W_out^T W_out + gamma I)^-1."""
    f = W_out.shape[1]
    M = beta * (W_out.T @ W_out) + gamma * torch.eye(f, dtype=W_out.dtype, device=W_out.device)
    rhs = beta * (target @ W_out) + gamma * act
    return torch.linalg.solve(M, rhs.T).T          # M is symmetric


def update_z_relu(p: torch.Tensor, m: torch.Tensor, alpha: float, gamma: float) -> torch.Tensor:
    """Exact element-wise argmin_z gamma*(p - ReLU(z))^2 + alpha*(z - m)^2: the better of the
    minimiser on z >= 0 and the one on z <= 0 (ties go to the first)."""
    za = torch.clamp((gamma * p + alpha * m) / (gamma + alpha), min=0)
    zb = torch.clamp(m, max=0)
    cost = lambda z: gamma * (p - F.relu(z)) ** 2 + alpha * (z - m) ** 2
    return torch.where(cost(za) <= cost(zb), za, zb)


def update_z_swiglu(p: torch.Tensor, m_up: torch.Tensor, s: torch.Tensor, alpha: float, gamma: float,
                    act=F.silu) -> torch.Tensor:
    """Exact element-wise argmin_z alpha*(z - m_up)^2 + gamma*(p - act(s) z)^2 for fixed s."""
    a = act(s)
    return (alpha * m_up + gamma * a * p) / (alpha + gamma * a * a)


def silu_grad(s: torch.Tensor) -> torch.Tensor:
    sig = torch.sigmoid(s)
    return sig * (1 + s * (1 - sig))


def gelu_tanh(s: torch.Tensor) -> torch.Tensor:
    return F.gelu(s, approximate="tanh")


def gelu_tanh_grad(s: torch.Tensor) -> torch.Tensor:
    """d/ds of 0.5 s (1 + tanh(u)), u = sqrt(2/pi) (s + 0.044715 s^3)."""
    c = math.sqrt(2.0 / math.pi)
    t = torch.tanh(c * (s + 0.044715 * s ** 3))
    return 0.5 * (1 + t) + 0.5 * s * (1 - t * t) * c * (1 + 3 * 0.044715 * s * s)


# gated-FFN activation (config name) -> (act, act'): the forms the updates below are derived for
GATED_ACTIVATIONS = {"silu": (F.silu, silu_grad), "swish": (F.silu, silu_grad),
                     "gelu_pytorch_tanh": (gelu_tanh, gelu_tanh_grad)}


def s_objective(s, m_gate, z, p, alpha, gamma, act=F.silu):
    """Per element: alpha*(s - m_gate)^2 + gamma*(p - act(s) z)^2."""
    return alpha * (s - m_gate) ** 2 + gamma * (p - act(s) * z) ** 2


def update_s_swiglu(s: torch.Tensor, m_gate: torch.Tensor, z: torch.Tensor, p: torch.Tensor, alpha: float,
                    gamma: float, lr: float = 0.01, passes: int = 2, chunk: int = 1000,
                    safeguard: bool = True, act=F.silu, act_grad=silu_grad) -> torch.Tensor:
    """Gradient descent on alpha*||s - m_gate||^2 + gamma*||p - act(s) z||^2 (a sum of squares;
    no closed form): `passes` sweeps over token chunks, one step per chunk per sweep.

    The reference takes the plain step lr*grad. Its curvature in s is about
    2*alpha + 2*gamma*z^2*act'(s)^2, so where |z| is large (the massive activations of some
    blocks) a fixed lr overshoots and s grows without bound. With `safeguard`, each element's step
    is capped at the inverse of that curvature and kept only where it lowers the element's objective."""
    s = s.clone()
    for _ in range(passes):
        for a in range(0, s.shape[0], chunk):
            sc, zc, pc, mc = s[a:a + chunk], z[a:a + chunk], p[a:a + chunk], m_gate[a:a + chunk]
            d = act_grad(sc)
            grad = 2 * alpha * (sc - mc) + 2 * gamma * (act(sc) * zc - pc) * zc * d
            if not safeguard:
                s[a:a + chunk] = sc - lr * grad
                continue
            curvature = 2 * alpha + 2 * gamma * (zc * d) ** 2
            step = torch.minimum(torch.full_like(sc, lr), 1.0 / curvature)
            cand = sc - step * grad
            better = s_objective(cand, mc, zc, pc, alpha, gamma, act) <= s_objective(sc, mc, zc, pc, alpha, gamma, act)
            s[a:a + chunk] = torch.where(better, cand, sc)
    return s


def relative_error(Y: torch.Tensor, Y_hat: torch.Tensor) -> float:
    """||Y - Y_hat||^2 / ||Y||^2: the FFN reconstruction error recorded per iteration."""
    return float(((Y - Y_hat) ** 2).sum() / (Y ** 2).sum().clamp_min(1e-30))
