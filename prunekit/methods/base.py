"""The method contract. Every method (sparsity, depth, width, and whatever comes next) is one
class registered with `@register_method(name, ConfigClass)` and called one way by
`prunekit.prune`: `Method(config, adapter)`, `check()`, then `run(job)` returning the pruned model
(the same object for methods that edit in place, a new one for methods that build a smaller
model). What the rest of prunekit needs to know is declared on the class: its default
calibration (or None: it needs no data), whether it returns a new model, its report section
(`summary()`), its summary lines, its figures and how a comparison describes it."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn as nn

from ..models.adapter import ModelAdapter
from ..stats import sparsity_stats


@dataclass(frozen=True)
class CalibrationDefaults:
    """What a method is calibrated on unless the user says otherwise."""
    nsamples: int
    seqlen: int


@dataclass
class Job:
    """What one run of a method gets besides its config and the model."""
    input_ids: torch.Tensor | None    # calibration windows [nsamples, seqlen], None without calibration
    device: str = "cpu"
    progress: bool = True


class Method:
    name: ClassVar[str] = ""                      # set by register_method
    config_class: ClassVar[type] = object         # set by register_method
    calibration: ClassVar[CalibrationDefaults | None] = CalibrationDefaults(nsamples=128, seqlen=2048)
    returns_new_model: ClassVar[bool] = False
    streamable: ClassVar[bool] = False            # can run block by block from a checkpoint on disk (--stream)
    # what a recipe checks before any work (issue 15): a method that merges blocks' weights needs
    # blocks of one shape, which a method that sets per-block widths may not leave
    needs_alike_blocks: ClassVar[bool] = False
    varies_block_widths: ClassVar[bool] = False

    def __init__(self, config, adapter: ModelAdapter):
        self.config = config
        self.adapter = adapter
        self.events: list[str] = []     # notable things (retries, fallbacks) for the report
        self.details: dict = {}         # method-specific facts for the report

    @classmethod
    def needs_calibration(cls) -> bool:
        return cls.calibration is not None

    def check(self) -> None:
        """Reject impossible settings before anything is touched."""

    def run(self, job: Job) -> nn.Module:
        """Prune; return the pruned model."""
        raise NotImplementedError

    def summary(self) -> dict:
        """The method's report section (merged into report["method"])."""
        return self.details

    def sparsity(self, model: nn.Module) -> dict:
        """Zero fractions of the pruned model's block linears, for the report."""
        return sparsity_stats(ModelAdapter(model))

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
