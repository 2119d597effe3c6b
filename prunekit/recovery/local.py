"""Local distillation (--local): every changed block is trained alone to reproduce what the dense
model computes over the span of dense blocks it stands for (Puzzle's blockwise local
distillation, arXiv 2411.19146; LLM-Streamline trains its replacement layer the same way).

The span of each block comes from the input's lineage: a depth stage's `groups` say which input
blocks each output block keeps or merges, and the blocks it removed after one belong to that
block's span (the removed blocks' work is what the block before the gap must now do). The span
maps compose over stages; width, sparsity and recovery stages keep the blocks. A block is
"changed" when its span is longer than one block or its weights differ from the dense block's.

Inputs are the dense model's own hidden states at the span's start, targets those at its end
(teacher forcing: every block learns from the dense activations, independently of the others),
both computed by the layer-wise engine on calibration windows; the block runs with the keyword
arguments the student model's own forward gives it. The loss is the normalised squared error
(solvers/distill.normalised_error). A block whose error did not fall keeps its old weights.
"""
from __future__ import annotations

import torch

from ..engine.block_training import train_block
from ..engine.sequential import LayerwiseEngine
from ..errors import PrunekitError
from ..models.adapter import ModelAdapter
from ..progress import steps
from ..reports.lineage import stages_of
from .full import trained_masks

LOCAL_FILE = "local_blocks.safetensors"      # in the run's working folder: what --resume reuses


def _groups(stage: dict, n_in: int) -> list[list[int]] | None:
    """A stage's output blocks as lists of its input blocks, None when it keeps every block."""
    section = stage.get("method_section") or {}
    groups = (section.get("depth") or {}).get("groups")
    if groups is not None:
        return [list(g) for g in groups]
    before, after = stage.get("layers_before"), stage.get("layers_after")
    if before is not None and after is not None and before != after:
        raise PrunekitError(f"--local: the {stage.get('method')} stage changed the block count ({before} -> "
                            f"{after}) without saying which blocks it kept")
    return None


def dense_spans(prior: dict | None, student_layers: int, dense_layers: int) -> list[tuple[int, int]]:
    """[start, end) of the dense blocks each student block stands for."""
    spans = [(i, i + 1) for i in range(dense_layers)]
    for stage in stages_of(prior):
        groups = _groups(stage, len(spans))
        if groups is None:
            continue
        starts = [g[0] for g in groups] + [len(spans)]
        spans = [(spans[0 if s == 0 else starts[s]][0], spans[starts[s + 1] - 1][1]) for s in range(len(groups))]
    if len(spans) != student_layers:
        raise PrunekitError(f"--local: the model has {student_layers} blocks but its lineage accounts for "
                            f"{len(spans)} of the teacher's {dense_layers}: pass the dense model it was pruned from")
    return spans


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(sa[k].shape == sb[k].shape and torch.equal(sa[k], sb[k]) for k in sa)


def changed_blocks(student, teacher, spans) -> list[int]:
    s_layers, t_layers = ModelAdapter(student).layers, ModelAdapter(teacher).layers
    return [s for s, (a, b) in enumerate(spans) if b - a > 1 or not _same_weights(s_layers[s], t_layers[a])]


def local_windows(data, count: int, seqlen: int) -> torch.Tensor:
    """`count` windows of `seqlen` tokens from the training examples, in order (packed windows are
    taken as they are; Alpaca examples are joined and cut)."""
    stream = [t for e in data.train for t in e["input_ids"]]
    n = min(count, len(stream) // seqlen)
    if n < 1:
        raise PrunekitError(f"--local: the training data holds fewer than {seqlen} tokens")
    return torch.tensor(stream[:n * seqlen]).view(n, seqlen)


@torch.no_grad()
def dense_states(teacher, ids: torch.Tensor, device, wanted: set[int]) -> dict[int, torch.Tensor]:
    """The dense hidden states [n, L, d] at the block boundaries in `wanted` (0: block 0's input,
    i: block i - 1's output), from one pass through the teacher's blocks."""
    engine = LayerwiseEngine(ModelAdapter(teacher), device, offload_device="cpu", progress=False)
    inputs = engine.capture(ids)
    states = {0: inputs.hidden.clone()} if 0 in wanted else {}
    for i, block in enumerate(ModelAdapter(teacher).layers[:max(wanted)]):
        home = next(block.parameters()).device
        out = engine.forward_block(block.to(engine.device), inputs, index=i)
        block.to(home)
        if i + 1 in wanted:
            states[i + 1] = out.clone()
        inputs.hidden = out
    return states


def distill_locally(student, teacher, data, config, masks: dict, prior: dict | None, device,
                    progress: bool = True) -> dict:
    """Train every changed block of `student` in place; returns the report section."""
    s_adapter, t_adapter = ModelAdapter(student), ModelAdapter(teacher)
    spans = dense_spans(prior, s_adapter.num_layers, t_adapter.num_layers)
    changed = changed_blocks(student, teacher, spans)
    if not changed:
        raise PrunekitError("--local: every block equals the dense block it stands for; nothing to distil")
    ids = local_windows(data, config.local_windows, config.seqlen)
    states = dense_states(teacher, ids, device, {i for s in changed for i in spans[s]})
    kwargs = LayerwiseEngine(s_adapter, device, offload_device="cpu", progress=False).capture(ids).kwargs
    student.to(device)
    rows = []
    for s in steps(changed, "local distillation", "block", enabled=progress):
        a, b = spans[s]
        block = s_adapter.layers[s]
        before, after = train_block(block, states[a], states[b], kwargs[s], trained_masks(student, [s], masks),
                                    device, steps=config.local_steps, lr=config.local_lr,
                                    batch=config.batch_size, seed=config.seed)
        rows.append({"block": s, "dense_span": [a, b], "error_before": before, "error_after": after,
                     "kept": after < before})
    return {"windows": int(ids.shape[0]), "seqlen": int(ids.shape[1]), "steps_per_block": config.local_steps,
            "lr": config.local_lr, "changed_blocks": changed, "blocks": rows,
            "tokens_per_block": config.local_steps * config.batch_size * config.seqlen}
