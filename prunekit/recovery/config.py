"""RecoveryConfig: every option of a recovery run, with the help text the CLI shows.

The reference recipe is the Shortened-LLM / SLM one (r 8, alpha 16, dropout 0.05, all seven
block projections, lr 1e-4, AdamW, warm-up, cutoff length 256); the step count and batch are
sized for a CPU run instead of the papers' two epochs of Alpaca at effective batch 64.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import PrunekitError
from ..methods.options import MethodConfig, option

DEFAULT_STEPS = 50
LOSSES = ("lm", "kd", "kd+lm")
LOCAL = ("off", "first", "only")
CHANGED = "blocks:changed"


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
    loss: str = option("lm", "training loss: lm (next-token cross-entropy on the data), kd (T^2 KL(teacher || "
                             "student) of the next-token distributions at every target position) or kd+lm "
                             "(kd-weight x kd + (1 - kd-weight) x lm); default lm", choices=LOSSES)
    temperature: float = option(1.0, "kd: softmax temperature T of both models' logits; the KL is scaled by "
                                     "T^2 (default 1)")
    kd_weight: float = option(0.5, "kd+lm: weight of the kd term, the lm term gets 1 - it (default 0.5)")
    teacher: str | None = option(None, "kd, --local and --train blocks:changed: the dense teacher (folder, alias or hub id); default the "
                                       "dense model the input's prunekit_report.json lineage starts from")
    kd_topk: int = option(0, "kd: keep the teacher's k most likely tokens and its tail mass instead of the whole "
                             "vocabulary; the teacher then runs once before training and is released (0: whole "
                             "vocabulary, teacher online; the error is the tail's own divergence weighted by its "
                             "mass, never negative; docs/methods.md)")
    train: str = option("lora", "what is trained: lora (adapters merged after), full (every decoder-block "
                                "weight; zeros kept by masked updates), blocks:LIST (full training of the "
                                "listed blocks only, e.g. blocks:3,4,10-12) or blocks:changed (the blocks that "
                                "differ from the dense blocks they stand for, e.g. those before a removed span; "
                                "needs the teacher)")
    local: str = option("off", "local distillation of every changed block to the dense span it replaces "
                               "(Puzzle's BLD): off, first (then the global run) or only (default off)", choices=LOCAL)
    local_steps: int = option(32, "--local: optimiser steps per block (default 32)")
    local_windows: int = option(16, "--local: calibration windows of --seqlen tokens, the first training "
                                    "windows (default 16)")
    local_lr: float = option(1e-4, "--local: AdamW learning rate of the block weights (default 1e-4)")
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
        self._check_distillation()
        if not (self.device in ("cpu", "cuda") or self.device.startswith("cuda:")):
            raise PrunekitError(f"unknown device '{self.device}': use cpu or cuda")

    def _check_distillation(self) -> None:
        if self.loss not in LOSSES:
            raise PrunekitError(f"unknown --loss '{self.loss}': use {', '.join(LOSSES)}")
        if self.local not in LOCAL:
            raise PrunekitError(f"unknown --local '{self.local}': use {', '.join(LOCAL)}")
        if not self.temperature > 0:
            raise PrunekitError(f"--temperature must be positive (got {self.temperature:g})")
        if not 0 <= self.kd_weight <= 1:
            raise PrunekitError(f"--kd-weight {self.kd_weight:g} is outside [0, 1]")
        if self.kd_topk < 0:
            raise PrunekitError(f"--kd-topk must be at least 0 (got {self.kd_topk})")
        for name in ("local_steps", "local_windows"):
            if getattr(self, name) < 1:
                raise PrunekitError(f"--{name.replace('_', '-')} must be at least 1 (got {getattr(self, name)})")
        if not self.local_lr > 0:
            raise PrunekitError(f"--local-lr must be positive (got {self.local_lr:g})")
        self.trained_blocks(None)        # a malformed --train fails here
        if self.teacher and not self.needs_teacher:
            raise PrunekitError("--teacher is used by --loss kd or kd+lm, --local and --train blocks:changed; "
                                "this run has none of them")
        if self.keep_adapter and self.train != "lora":
            raise PrunekitError("--keep-adapter saves a LoRA adapter: it needs --train lora")

    @property
    def needs_teacher(self) -> bool:
        return self.loss != "lm" or self.local != "off" or self.train == CHANGED

    @property
    def full_training(self) -> bool:
        return self.train != "lora"

    def trained_blocks(self, num_layers: int | None) -> list[int] | None:
        """The blocks --train trains in full: None for lora, all for full, the list for blocks:LIST
        (checked against `num_layers` when given)."""
        if self.train == "lora":
            return None
        if self.train == "full":
            return list(range(num_layers)) if num_layers is not None else []
        if self.train == CHANGED:
            return []           # resolved against the teacher (recovery/local.changed_blocks)
        if not self.train.startswith("blocks:"):
            raise PrunekitError(f"unknown --train '{self.train}': use lora, full or blocks:LIST (e.g. blocks:3,4,10-12)")
        picked = []
        for part in (p.strip() for p in self.train[len("blocks:"):].split(",") if p.strip()):
            lo, _, hi = part.partition("-")
            if not lo.isdigit() or (hi and not hi.isdigit()):
                raise PrunekitError(f"--train {self.train}: '{part}' is not a block index or a range like 3-5")
            picked += range(int(lo), int(hi or lo) + 1)
        if not picked:
            raise PrunekitError(f"--train {self.train} names no block")
        if num_layers is not None and max(picked) >= num_layers:
            raise PrunekitError(f"--train {self.train}: the model has blocks 0-{num_layers - 1}")
        return sorted(set(picked))

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
