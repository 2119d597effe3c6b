"""LoRA adapters on the decoder-block linears (through peft), and their merge back.

The target names come from the model adapter, so no module path is spelled here. The zero
pattern of every targeted weight is recorded before training; the merge masks the update with
it (prunekit.solvers.lora_merge), so a sparse model keeps every zero.
"""
from __future__ import annotations

import torch

from ..models.adapter import ModelAdapter
from ..solvers.lora_merge import masked_lora_merge

ADAPTER = "default"


def attach_lora(model, config, target_names: list[str]):
    """peft's LoRA on the named block linears of every block. Returns the PeftModel (it wraps
    `model`, whose linears are replaced in place)."""
    from peft import LoraConfig, get_peft_model

    adapter = ModelAdapter(model)
    # full module names: peft matches them exactly, so lm_head and anything outside the blocks stay untouched
    prefix = adapter.spec.layers_path
    modules = [f"{prefix}.{i}.{name}" for i in range(adapter.num_layers) for name in target_names]
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=modules, bias="none", task_type="CAUSAL_LM")
    return get_peft_model(model, lora)


def zero_patterns(model, target_names: list[str]) -> dict[str, torch.Tensor]:
    """weight != 0 of every targeted linear that has at least one zero, by its full module name
    (linears without zeros need no mask)."""
    adapter = ModelAdapter(model)
    prefix = adapter.spec.layers_path
    masks = {}
    for i, block in enumerate(adapter.layers):
        for name, lin in adapter.block_linears(block).items():
            if name in target_names:
                keep = lin.weight.detach() != 0
                if not bool(keep.all()):
                    masks[f"{prefix}.{i}.{name}"] = keep.cpu()
    return masks


def lora_layers(peft_model) -> dict:
    """Full module name (relative to the wrapped model) -> peft LoRA layer."""
    from peft.tuners.lora import LoraLayer

    base = peft_model.get_base_model()
    return {name: mod for name, mod in base.named_modules() if isinstance(mod, LoraLayer)}


@torch.no_grad()
def merge_lora(peft_model, masks: dict[str, torch.Tensor] | None):
    """Write W + mask * (s * B @ A) into every adapted linear and return the plain model
    (peft's unload() removes the adapter modules without merging them a second time)."""
    for name, layer in lora_layers(peft_model).items():
        weight = layer.get_base_layer().weight
        keep = masks.get(name) if masks else None
        weight.copy_(masked_lora_merge(weight, layer.lora_A[ADAPTER].weight, layer.lora_B[ADAPTER].weight,
                                       layer.scaling[ADAPTER], keep))
    return peft_model.unload()
