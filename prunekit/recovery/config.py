"""RecoveryConfig: every option of a LoRA recovery run, with the help text the CLI shows.

The reference recipe is the Shortened-LLM / SLM one (r 8, alpha 16, dropout 0.05, all seven
block projections, lr 1e-4, AdamW, warm-up, cutoff length 256); the step count and batch are
sized for a CPU run instead of the papers' two epochs of Alpaca at effective batch 64.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import PrunekitError
from ..methods.options import MethodConfig, option

DEFAULT_STEPS = 50


@dataclass
class RecoveryConfig(MethodConfig):
    """Options of `prunekit recover` and of a recipe's recover stage; each help text states its
    default itself (the recover command shows it as it is)."""
    steps: int | None = option(None, f"optimiser steps (default {DEFAULT_STEPS} when --epochs is not given)")
    epochs: float | None = option(None, "passes over the training data instead of a step count")
    batch_size: int = option(2, "examples per micro-batch (default 2)")
    grad_accum: int = option(2, "micro-batches per optimiser step (default 2; the papers: 16 of 4 examples)")
    seqlen: int = option(256, "tokens per training window, the cutoff length of Alpaca examples (default 256)")
    lr: float = option(1e-4, "peak learning rate of AdamW (default 1e-4)")
    warmup_steps: int = option(5, "linear warm-up steps before the linear decay (default 5; the papers use 100)")
    lora_r: int = option(8, "LoRA rank r (default 8)")
    lora_alpha: float = option(16.0, "LoRA alpha; the update is scaled by alpha / r (default 16)")
    lora_dropout: float = option(0.05, "dropout on the LoRA input (default 0.05)")
    targets: str = option("all", "block linears that get adapters: 'all' (the seven projections of Llama-like "
                                 "models, six of OPT) or a comma-separated list of their names, e.g. q_proj,v_proj")
    seed: int = option(0, "seed of the adapters' initialisation, the data order and the held-out slice (default 0)")
    val_fraction: float = option(0.05, "fraction of the training examples held out for the validation loss "
                                       "(default 0.05; at least 4 and at most 64 examples)")
    val_windows: int | None = option(None, "hold out exactly this many examples instead of --val-fraction")
    max_examples: int | None = option(None, "training examples to prepare (default: what --steps needs, all for "
                                            "--epochs)")
    eval_every: int = option(10, "optimiser steps between validation losses (default 10)")
    save_every: int = option(10, "optimiser steps between checkpoints that --resume can continue from (default 10)")
    keep_zeros: bool = option(True, "mask the merged update with the weights' zero pattern so that an unstructured "
                                    "or N:M sparse model stays exactly as sparse (default on)")
    masked_training: bool = option(True, "with --keep-zeros, train the adapters of linears whose zero fraction is "
                                         "at least 0.01 through the same mask the merge applies, so the trained "
                                         "model is the saved one (default on; off trains a dense update and masks "
                                         "it only at the merge)")
    keep_adapter: bool = option(False, "save the LoRA adapter alone (peft format) instead of merging it")
    resume: bool = option(False, "continue an interrupted run from its last checkpoint")
    device: str = option("cpu", "cpu or cuda (default cpu)", cli=False)   # the shared --device flag sets it

    def __post_init__(self):        # the field types are checked first (MethodConfig)
        if self.steps is not None and self.epochs is not None:
            raise PrunekitError("give --steps or --epochs, not both")
        if self.steps is None and self.epochs is None:
            self.steps = DEFAULT_STEPS
        for name in ("steps", "batch_size", "grad_accum", "lora_r", "eval_every", "save_every"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise PrunekitError(f"--{name.replace('_', '-')} must be at least 1 (got {value})")
        for name in ("val_windows", "max_examples"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise PrunekitError(f"--{name.replace('_', '-')} must be at least 1 (got {value})")
        if self.epochs is not None and self.epochs <= 0:
            raise PrunekitError(f"--epochs must be positive (got {self.epochs:g})")
        if self.seqlen < 2:
            raise PrunekitError(f"--seqlen must be at least 2 (got {self.seqlen})")
        if not self.lr > 0:
            raise PrunekitError(f"--lr must be positive (got {self.lr:g})")
        if self.warmup_steps < 0:
            raise PrunekitError(f"--warmup-steps must be at least 0 (got {self.warmup_steps})")
        if not 0 <= self.lora_dropout < 1:
            raise PrunekitError(f"--lora-dropout {self.lora_dropout:g} is outside [0, 1)")
        if not 0 < self.val_fraction < 1:
            raise PrunekitError(f"--val-fraction {self.val_fraction:g} is outside (0, 1)")
        if not (self.device in ("cpu", "cuda") or self.device.startswith("cuda:")):
            raise PrunekitError(f"unknown device '{self.device}': use cpu or cuda")

    @property
    def examples_per_step(self) -> int:
        return self.batch_size * self.grad_accum

    def target_names(self, linear_names: tuple) -> list[str]:
        """The adapter targets as the block-relative names the model adapter reports."""
        if self.targets in ("", "all"):
            return list(linear_names)
        by_short = {n.rsplit(".", 1)[-1]: n for n in linear_names}
        picked = []
        for name in (t.strip() for t in self.targets.split(",") if t.strip()):
            full = name if name in linear_names else by_short.get(name)
            if full is None:
                raise PrunekitError(f"target '{name}' is not a block linear of this model: choose from "
                                    f"{', '.join(by_short)}")
            if full not in picked:
                picked.append(full)
        return picked
