"""The method contract. Every method (sparsity, depth, width, and whatever comes next) is one
class registered with `@register_method(name, ConfigClass)` and called one way by
`prunekit.prune`: `Method(config, adapter)`, `check()`, then `run(job)` returning the pruned model
(the same object for methods that edit in place, a new one for methods that build a smaller
model). What the rest of prunekit needs to know is declared on the class: its default
calibration (or None: it needs no data), whether it returns a new model, its report section
(`summary()`), its summary lines, its figures and how a comparison describes it."""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn as nn

from ..engine import BlockInputs, BlockStack, LayerwiseEngine
from ..models.adapter import ModelAdapter
from ..stats import sparsity_stats


@dataclass(frozen=True)
class CalibrationDefaults:
    """What a method is calibrated on unless the user says otherwise."""
    nsamples: int
    seqlen: int


class Blocks:
    """Where a method's blocks come from and where they go: here, the model's own blocks in memory,
    so every hook does nothing. Streaming gives a subclass that reads each block from the checkpoint
    when it is loaded and writes it to the output when it is released; a method drives itself over
    either and never knows which."""
    start: int = 0            # the first block still to visit (later on a resumed run)

    def capture(self, engine: LayerwiseEngine, input_ids: torch.Tensor) -> BlockInputs:
        """Block 0's inputs and every block's arguments (on a resumed run, the inputs of `start`)."""
        return engine.capture(input_ids)

    def load(self, index: int) -> None:
        """Block `index` is about to be used."""

    def release(self, index: int, inputs: BlockInputs | None = None) -> None:
        """Block `index` is final; `inputs.hidden` are its outputs (None without calibration)."""

    def stack(self, adapter: ModelAdapter, input_ids: torch.Tensor, device: str) -> BlockStack:
        """Calibration forwards through any block list, for methods that score whole candidates."""
        return BlockStack(adapter, input_ids, device)

    def saved_plan(self) -> list[list[int]] | None:
        """A depth plan an interrupted run already chose (streaming's resume), or None."""
        return None

    def apply_plan(self, state) -> None:
        """Make the decoder the plan's blocks: here, the model becomes physically smaller."""
        state.install()


@dataclass
class Job:
    """What one run of a method gets besides its config and the model."""
    input_ids: torch.Tensor | None    # calibration windows [nsamples, seqlen], None without calibration
    device: str = "cpu"
    progress: bool = True
    blocks: Blocks = field(default_factory=Blocks)
    batch: int | None = None          # windows per forward call; None: models/plumbing.py windows_per_call's rule


class Method:
    name: ClassVar[str] = ""                      # set by register_method
    config_class: ClassVar[type] = object         # set by register_method
    calibration: ClassVar[CalibrationDefaults | None] = CalibrationDefaults(nsamples=128, seqlen=2048)
    returns_new_model: ClassVar[bool] = False
    streamable: ClassVar[bool] = False            # can run block by block from a checkpoint on disk (--stream)
    # what a recipe checks before its first stage runs: a method that merges blocks' weights needs
    # blocks of one shape, which a method that sets per-block widths may not leave
    needs_alike_blocks: ClassVar[bool] = False
    varies_block_widths: ClassVar[bool] = False
    # attributes a run interrupted between blocks must carry over to its resumption (state/restore)
    carried: ClassVar[tuple[str, ...]] = ("events", "details")

    def __init__(self, config, adapter: ModelAdapter):
        self.config = config
        self.adapter = adapter
        self.events: list[str] = []     # notable things (retries, fallbacks) for the report
        self.details: dict = {}         # method-specific facts for the report

    @classmethod
    def needs_calibration(cls) -> bool:
        return cls.calibration is not None

    @classmethod
    def builds_new_model(cls, config) -> bool | None:
        """Whether a run with `config` returns a new model rather than the one it was given (None:
        it depends on what the run finds)."""
        return cls.returns_new_model

    @classmethod
    def cannot_stream(cls, config) -> str | None:
        """Why a run with `config` cannot go block by block from a checkpoint (--stream), or None."""
        return None if cls.streamable else f"method {cls.name} cannot stream"

    def check(self) -> None:
        """Reject impossible settings before anything is touched."""

    def state(self) -> dict:
        """What this run has accumulated that a resumed run must start from (counters, histories)."""
        return {k: copy.deepcopy(getattr(self, k)) for k in self.carried if hasattr(self, k)}

    def restore(self, state: dict) -> None:
        for k, v in state.items():
            setattr(self, k, v)

    def run(self, job: Job) -> nn.Module:
        """Prune; return the pruned model."""
        raise NotImplementedError

    def pruned_blocks(self) -> list[int]:
        """The decoder blocks this run changes (all of them unless the method is told otherwise)."""
        return list(range(self.adapter.num_layers))

    def summary(self) -> dict:
        """The method's report section (merged into report["method"])."""
        return self.details

    def sparsity(self, model: nn.Module) -> dict:
        """Zero fractions of the pruned model's block linears, for the report."""
        same = model is self.adapter.model      # pruned in place: the method's own adapter describes it
        return sparsity_stats(self.adapter if same else ModelAdapter(model))

    # What a finished report says about this method: usable without the model, from the JSON.
    @classmethod
    def summary_lines(cls, report: dict) -> list[str]:
        return [f"  method        {report['method']['name']}"]

    @classmethod
    def figures(cls, report: dict, folder: Path) -> list[str]:
        """Write the method's PNGs into `folder`; returns their file names."""
        return []

    @classmethod
    def describe(cls, report: dict) -> dict:
        """For comparison pages: method label, what was pruned, and the x of the quality plot."""
        sp = (report.get("sparsity") or {}).get("overall", 0.0)
        return {"method": report["method"]["name"], "what": "-", "x": sp}


@torch.no_grad()
def apply_mask(linear: nn.Linear, keep: torch.Tensor) -> None:
    linear.weight.masked_fill_(~keep.to(linear.weight.device), 0)
