"""The masked LoRA merge: W + s*B@A on the kept entries, zero elsewhere."""
import pytest
import torch

from prunekit.solvers.lora_merge import masked_lora_merge, nm_valid


@pytest.mark.parametrize("keep_frac", [0.5, None])
def test_masked_merge_is_w_plus_lora_product_on_kept_entries_and_zero_elsewhere(keep_frac):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(8, 16, generator=g)
    if keep_frac is None:     # 2:4
        keep = torch.zeros(8, 16, dtype=torch.bool)
        idx = torch.rand(8, 4, 4, generator=g).topk(2, dim=-1).indices
        keep = keep.view(8, 4, 4).scatter_(-1, idx, True).view(8, 16)
    else:
        keep = torch.rand(8, 16, generator=g) < keep_frac
    w = w * keep
    a, b = torch.randn(4, 16, generator=g), torch.randn(8, 4, generator=g)
    merged = masked_lora_merge(w, a, b, 2.0, keep)
    direct = w.double() + 2.0 * (b.double() @ a.double())
    assert torch.equal(merged[~keep], torch.zeros_like(merged[~keep]))
    assert torch.allclose(merged[keep].double(), direct[keep], atol=1e-5)
    if keep_frac is None:
        assert nm_valid(merged, 2, 4) and not nm_valid(masked_lora_merge(w, a, b, 2.0), 2, 4)
