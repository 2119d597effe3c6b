"""`prunekit export --for llama.cpp`: a copy of an output that llama.cpp's converter and its DECI
graph run as they are. The Nemotron-NAS (DeciLM) layout can state shapes llama.cpp does not
reproduce (models/serving.py says which); here they are padded with zeros, which changes no
output (models/decilm.py, `padded`), and the copy is checked against the model before it is
written."""
from __future__ import annotations

import torch

from ..errors import PrunekitError
from ..export.save import read_report, save_checkpoint
from ..models import decilm
from ..models.adapter import ModelAdapter
from ..models.loading import load_model
from ..models.paths import check_output_apart
from ..models.serving import DECILM, PRUNEKIT_LAYOUTS, STANDARD
from .preflight import check_remote_code, check_writable

TARGETS = ("llama.cpp",)


def export_model(model: str, output: str, target: str = "llama.cpp", overwrite: bool = False,
                 trust_remote_code: bool = False) -> dict:
    """Write the llama.cpp-bound copy of `model` to `output`; returns what was done
    ({"written": bool, "changes": [...], "params_added": int, "note": str})."""
    if target not in TARGETS:
        raise PrunekitError(f"unknown export target {target}: choose {', '.join(TARGETS)}")
    check_output_apart(output, model=model)
    check_remote_code(model, trust_remote_code)
    check_writable(output)
    loaded, tok, _ = load_model(model, "auto", trust_remote_code)
    model_type = loaded.config.model_type
    if model_type in PRUNEKIT_LAYOUTS:
        raise PrunekitError(f"{model} is in prunekit's own layout (within-head widths), which llama.cpp cannot "
                            f"read: prune with --attention kv-groups or keep for a servable width")
    if model_type in STANDARD:
        return {"written": False, "changes": [], "params_added": 0,
                "note": f"a standard {loaded.config.architectures[0]}: llama.cpp's converter takes it as it is"}
    if model_type != DECILM:
        raise PrunekitError(f"{model} is a {model_type} model, not a layout prunekit exports")
    adapter = ModelAdapter(loaded)
    shapes, changes = decilm.llamacpp_shapes(adapter)
    if not changes:
        return {"written": False, "changes": [], "params_added": 0,
                "note": "llama.cpp's converter takes it as it is (MLP widths on its grid, every block with an MLP)"}
    copy = decilm.padded(adapter, shapes)
    _check_same(loaded, copy)
    added = sum(p.numel() for p in copy.parameters()) - sum(p.numel() for p in loaded.parameters())
    result = {"written": True, "target": target, "changes": changes, "params_added": added,
              "note": f"{len(changes)} changes, {added:,} zero parameters added"}
    report = read_report(model) or {}
    report["export"] = {**result, "source": str(model)}
    save_checkpoint(copy, tok, report, output, overwrite)
    return result


@torch.no_grad()
def _check_same(model, copy) -> None:
    """The padded copy must compute the model's logits: a copy that does not is never written."""
    ids = torch.randint(0, model.config.vocab_size, (1, 16), generator=torch.Generator().manual_seed(0))
    a, b = model(ids).logits.float(), copy(ids).logits.float()
    if not torch.allclose(a, b, atol=1e-3 * max(1.0, float(a.abs().max()))):
        raise PrunekitError(f"the padded copy differs from the model (max |Δlogit| {float((a - b).abs().max()):.3g}); "
                            f"nothing was written")
