"""LoRA adapters on the decoder-block linears (through peft), and their merge back.

The target names come from the model adapter, so no module path is spelled here. The zero
pattern of every targeted weight is recorded before training; the merge masks the update with
it (prunekit.solvers.lora_merge), so a sparse model keeps every zero.
"""
from __future__ import annotations

import types

import torch
import torch.nn.functional as F

from ..models.adapter import ModelAdapter
from ..solvers.lora_merge import masked_delta, masked_lora_merge

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


def _masked_forward(self, x, *args, **kwargs):
    result = self.base_layer(x, *args, **kwargs)
    if self.disable_adapters or self.merged:
        return result
    a, b = self.lora_A[ADAPTER].weight, self.lora_B[ADAPTER].weight
    x = self.lora_dropout[ADAPTER](x.to(a.dtype))
    return result + F.linear(x, masked_delta(a, b, self.scaling[ADAPTER], self.prunekit_keep)).to(result.dtype)


# Below this fraction of zeros a linear is not a pruned one (a dequantised checkpoint has a few
# stray exact zeros): its adapter trains the usual way and only the merge keeps its zeros.
MASKED_TRAINING_MIN_ZEROS = 0.01


def mask_adapters(peft_model, masks: dict[str, torch.Tensor], min_zeros: float = MASKED_TRAINING_MIN_ZEROS) -> int:
    """Make every LoRA layer whose weight has at least `min_zeros` zeros compute
    x (W + keep * s B A)^T instead of x W^T + s x A^T B^T, so training optimises the model the
    masked merge will save. The dense update is formed once per forward (memory of one weight
    per adapted linear). Returns the number of masked layers."""
    count = 0
    for name, layer in lora_layers(peft_model).items():
        if name in masks and 1.0 - masks[name].float().mean().item() >= min_zeros:
            # a non-persistent buffer moves with the model (to the GPU) and is never saved
            layer.register_buffer("prunekit_keep", masks[name], persistent=False)
            layer.forward = types.MethodType(_masked_forward, layer)
            count += 1
    return count


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
