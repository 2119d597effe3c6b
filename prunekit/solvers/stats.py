"""Calibration statistics of a linear layer's input, accumulated in float32."""
from __future__ import annotations

import torch


def _rows(inp: torch.Tensor) -> torch.Tensor:
    return inp.reshape(-1, inp.shape[-1]).float()


class InputSquaredNorm:
    """Per input feature, the sum over all calibration tokens of x_j^2 (Wanda's ||X_j||^2)."""

    def __init__(self, features: int, device=None):
        self.sum_sq = torch.zeros(features, dtype=torch.float32, device=device)
        self.tokens = 0

    def add_batch(self, inp: torch.Tensor) -> None:
        x = _rows(inp)
        self.sum_sq += (x * x).sum(0)
        self.tokens += x.shape[0]

    def norm(self) -> torch.Tensor:
        return self.sum_sq.sqrt()


class InputHessian:
    """H = (2 / n_tokens) X X^T over all calibration tokens (the OBS Hessian proxy).
    The scale does not matter to the solvers (their dampening is relative)."""

    def __init__(self, features: int, device=None):
        self.H = torch.zeros(features, features, dtype=torch.float32, device=device)
        self.tokens = 0

    def add_batch(self, inp: torch.Tensor) -> None:
        x = _rows(inp)
        n = x.shape[0]
        self.H *= self.tokens / (self.tokens + n)
        self.tokens += n
        x = x * (2.0 / self.tokens) ** 0.5
        self.H += x.T @ x

    def finite(self) -> bool:
        return bool(torch.isfinite(self.H).all())
