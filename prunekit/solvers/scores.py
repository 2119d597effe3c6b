"""Importance scores of single weights."""
from __future__ import annotations

import torch


def magnitude_score(weight: torch.Tensor) -> torch.Tensor:
    return weight.detach().float().abs()


def wanda_score(weight: torch.Tensor, input_norm: torch.Tensor) -> torch.Tensor:
    """S_ij = |W_ij| * ||X_j||_2 (Sun et al. 2023); rows are outputs (nn.Linear layout)."""
    return weight.detach().float().abs() * input_norm.float().reshape(1, -1)
