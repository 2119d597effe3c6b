"""RecoveryConfig: every option of a LoRA recovery run, with the help text the CLI shows.

The reference recipe is the Shortened-LLM / SLM one (r 8, alpha 16, dropout 0.05, all seven
block projections, lr 1e-4, AdamW, warm-up, cutoff length 256); the step count and batch are
sized for a CPU run instead of the papers' two epochs of Alpaca at effective batch 64.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..errors import PrunekitError
from ..methods.options import check_types

DEFAULT_STEPS = 50


def _opt(default, help, flag=None):
    meta = {"help": help}
    if flag:
        meta["flag"] = flag
    return field(default=default, metadata=meta)


@dataclass
class RecoveryConfig:
    steps: int | None = _opt(None, f"optimiser steps (default {DEFAULT_STEPS} when --epochs is not given)", "--steps")
    epochs: float | None = _opt(None, "passes over the training data instead of a step count", "--epochs")
    batch_size: int = _opt(2, "examples per micro-batch (default 2)", "--batch-size")
    grad_accum: int = _opt(2, "micro-batches per optimiser step (default 2; the papers: 16 of 4 examples)",
                           "--grad-accum")
    seqlen: int = _opt(256, "tokens per training window, the cutoff length of Alpaca examples (default 256)",
                       "--seqlen")
    lr: float = _opt(1e-4, "peak learning rate of AdamW (default 1e-4)", "--lr")
    warmup_steps: int = _opt(5, "linear warm-up steps before the linear decay (default 5; the papers use 100)",
                             "--warmup-steps")
    lora_r: int = _opt(8, "LoRA rank r (default 8)", "--lora-r")
    lora_alpha: float = _opt(16.0, "LoRA alpha; the update is scaled by alpha / r (default 16)", "--lora-alpha")
    lora_dropout: float = _opt(0.05, "dropout on the LoRA input (default 0.05)", "--lora-dropout")
    targets: str = _opt("all", "block linears that get adapters: 'all' (the seven projections of Llama-like "
                               "models, six of OPT) or a comma-separated list of their names, e.g. q_proj,v_proj",
                        "--targets")
    seed: int = _opt(0, "seed of the adapters' initialisation, the data order and the held-out slice (default 0)",
                     "--seed")
    val_fraction: float = _opt(0.05, "fraction of the training examples held out for the validation loss "
                                     "(default 0.05; at least 4 and at most 64 examples)", "--val-fraction")
    val_windows: int | None = _opt(None, "hold out exactly this many examples instead of --val-fraction",
                                   "--val-windows")
    max_examples: int | None = _opt(None, "training examples to prepare (default: what --steps needs, all for "
                                          "--epochs)", "--max-examples")
    eval_every: int = _opt(10, "optimiser steps between validation losses (default 10)", "--eval-every")
    save_every: int = _opt(10, "optimiser steps between checkpoints that --resume can continue from (default 10)",
                           "--save-every")
    keep_zeros: bool = _opt(True, "mask the merged update with the weights' zero pattern so that an unstructured "
                                  "or N:M sparse model stays exactly as sparse (default on)", "--keep-zeros")
    masked_training: bool = _opt(True, "with --keep-zeros, train the adapters of linears whose zero fraction is "
                                       "at least 0.01 through the same mask the merge applies, so the trained "
                                       "model is the saved one (default on; off trains a dense update and masks "
                                       "it only at the merge)", "--masked-training")
    keep_adapter: bool = _opt(False, "save the LoRA adapter alone (peft format) instead of merging it",
                              "--keep-adapter")
    resume: bool = _opt(False, "continue an interrupted run from its last checkpoint", "--resume")
    device: str = _opt("cpu", "cpu or cuda (default cpu)", "--device")

    def __post_init__(self):
        check_types(self)       # a ConfigError naming the field for a value of the wrong type
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

    def to_dict(self) -> dict:
        return asdict(self)
