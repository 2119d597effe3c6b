"""Whether a model's block linears satisfy the common N:M patterns (checked before and after
recovery: a masked merge must leave them as they were)."""
from __future__ import annotations

from ..models.adapter import ModelAdapter
from ..solvers.lora_merge import nm_valid

PATTERNS = ((2, 4), (4, 8), (1, 4))


def nm_validity(adapter: ModelAdapter) -> dict[str, bool]:
    linears = [lin.weight for _, lin in adapter.all_linears()]
    return {f"{n}:{m}": all(nm_valid(w, n, m) for w in linears) for n, m in PATTERNS}
