"""The streamed block source of the one runner: a method runs over it exactly as over a model in
memory (`methods.base.Blocks`), while each block is read from the checkpoint when loaded and, once
final, written to the output shards and freed. Every finished block is a durable unit of the run
state, with what the next one needs to resume (the activations, the random state, the method's
carried state)."""
from __future__ import annotations

from functools import partial
from typing import Callable

import torch

from ..engine import BlockInputs, LayerwiseEngine
from ..methods.base import Blocks
from ..models.adapter import ModelAdapter
from .checkpoint import StreamedModel
from .runstate import RunState
from .stack import StreamedStack
from .writer import Lazy, ShardWriter


class StreamedBlocks(Blocks):
    def __init__(self, sm: StreamedModel, adapter: ModelAdapter, run: RunState, writer: ShardWriter, method,
                 on_unit: Callable[[int], None] | None = None):
        self.sm, self.adapter, self.run, self.writer, self.method = sm, adapter, run, writer, method
        self.on_unit = on_unit
        self.layers_path = adapter.spec.layers_path
        self.results = run.results.setdefault("sparsity", {})     # [zeros, numel] per written linear
        self.pruned = set(method.pruned_blocks())
        self.output_layers = adapter.num_layers                  # fewer once a depth plan is applied
        self.start = run.finished
        self.payload = run.payload()

    def resume(self) -> None:
        """Put back what the interrupted run had reached: the random state and the method's state."""
        if self.payload is not None:
            torch.set_rng_state(self.payload["rng"])
            self.method.restore(self.payload["method"])
        elif "method" in self.run.results:                      # a depth plan chosen before the kill
            self.method.restore(self.run.results["method"])

    def path(self, i: int) -> str:
        return f"{self.layers_path}.{i}"

    # the layer-wise engine's hooks
    def capture(self, engine: LayerwiseEngine, input_ids: torch.Tensor) -> BlockInputs:
        """Block 0's inputs and every block's arguments; the embeddings are freed at once, since a
        layer-wise pass never needs them again. A resumed run takes its activations from disk."""
        paths = [self.sm.module_path(m) for m in self.adapter.pre_block_modules()]
        for p in paths:
            self.sm.load(p)
        self.device = engine.device      # blocks are then read straight onto it
        try:
            inputs = engine.capture(input_ids)
        finally:
            for p in paths:
                self.sm.release(p)
        if self.payload is not None:
            inputs.hidden = self.payload["hidden"]
        return inputs

    def load(self, index: int) -> None:
        self.sm.load(self.path(index), getattr(self, "device", None))   # the engine's device once it captured

    def release(self, index: int, inputs: BlockInputs | None = None) -> None:
        block = self.adapter.layers[index]
        if index in self.pruned:
            self._record_sparsity(index, block)
        self._write_block(index, block.state_dict())
        self.sm.release(self.path(index))
        hidden = None if inputs is None else inputs.hidden
        self.finish_unit(index + 1, {"hidden": hidden, "rng": torch.get_rng_state(), "method": self.method.state()})

    # the depth methods' hooks
    def stack(self, adapter: ModelAdapter, input_ids: torch.Tensor, device: str) -> StreamedStack:
        for m in adapter.pre_block_modules() + adapter.post_block_modules():    # scoring needs the head
            self.sm.load(self.sm.module_path(m))
        return StreamedStack(adapter, input_ids, device, self.load, lambda i: self.sm.release(self.path(i)))

    def saved_plan(self) -> list[list[int]] | None:
        kept = self.run.results.get("kept")
        return None if kept is None else [[i] for i in kept]

    def apply_plan(self, state) -> None:
        """Copy the kept blocks from the checkpoint to the output under their new indices, one unit
        each; a left-out sublayer's tensors stay behind (the output is then in the DeciLM layout)."""
        kept = [g[0] for g in state.groups]
        if "kept" not in self.run.results:
            self.run.results["kept"], self.run.results["method"] = kept, self.method.state()
            if state.skipped():
                self.run.results["parts"] = [sorted(p) for p in state.parts]
                self.run.results["shapes"] = [[s.kv_heads, s.mlp] for s in state.shapes()]
            self.run.save(0, self.writer.state())
        parts = self.run.results.get("parts")
        for new in range(self.run.finished, len(kept)):
            j = kept[new]
            names = self.sm.state_names(self.path(j))
            if parts is not None:
                gone = [p for part in ("attention", "mlp") if part not in parts[new]
                        for p in self.adapter.sublayer_prefixes(part)]
                names = [n for n in names if not n.startswith(tuple(gone))]
            tensors = {local: self.sm.read_state(f"{self.path(j)}.{local}") for local in names}
            for name in self.adapter.linear_names():
                if f"{name}.weight" not in tensors:     # a left-out sublayer's
                    continue
                w = tensors[f"{name}.weight"]
                self.results[f"layers.{new}.{name}"] = [w.numel() - int(torch.count_nonzero(w)), w.numel()]
            self._write_block(new, tensors)
            self.finish_unit(new + 1)
        self.output_layers = len(kept)

    # units
    def _record_sparsity(self, i: int, block) -> None:
        for name, lin in self.adapter.block_linears(block).items():
            w = lin.weight
            self.results[f"layers.{i}.{name}"] = [w.numel() - int(torch.count_nonzero(w)), w.numel()]

    def _write_block(self, new_index: int, tensors: dict) -> None:
        prefix = f"{self.path(new_index)}."
        self.writer.add(f"block-{new_index:05d}", {prefix + k: v.detach().cpu() for k, v in tensors.items()})

    def finish_unit(self, finished: int, payload=None) -> None:
        self.run.save(finished, self.writer.state(), payload)
        self.writer.collect_garbage()
        if self.on_unit is not None:
            self.on_unit(finished - 1)

    def write_rest(self) -> None:
        """The last unit: the non-block tensors (embeddings, final norm, head; a tied head once),
        copied from the checkpoint one tensor at a time after the loaded ones are freed."""
        if self.run.finished != self.output_layers:
            return
        block_prefix = self.layers_path + "."
        # named before the release, which unties the twins: a tied head must be named once
        rest = {}
        for n, p in self.sm.model.named_parameters():
            if not n.startswith(block_prefix) and not any(t in rest for t in self.sm.twins.get(n, ())):
                rest[n] = Lazy(tuple(p.shape), self.sm.dtype, partial(self.sm.read, n))
        for n in self.sm.buffer_keys:
            if not n.startswith(block_prefix):
                rest[n] = self.sm.read_state(n)
        for m in self.adapter.pre_block_modules() + self.adapter.post_block_modules():
            self.sm.release(self.sm.module_path(m))
        self.writer.add("rest", rest)
        self.finish_unit(self.output_layers + 1)
