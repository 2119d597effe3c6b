"""Every benchmark of this repository as a declared experiment: its name (which is also the name of
its results file, `benchmarks/results/NAME.json`), the script that runs it, a one-line description,
the arguments of the run that BENCHMARKS.md reports, and the generators of the BENCHMARKS.md
tables derived from its results.

    python -m benchmarks list                 # each experiment, its description and exact command
    python -m benchmarks run NAME [ARGS...]   # run it (ARGS replace the recorded arguments)
    python -m benchmarks tables [--check]     # rewrite (or check) the generated tables of BENCHMARKS.md

The scripts keep their own logic and command lines; `run` calls the script as its own process
from `benchmarks/` and then adds a provenance record (command, git commit, package versions,
machine) to the results file under the key `_runs` (see `benchmarks/provenance.py`).
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Callable

from . import tables as T


@dataclass(frozen=True)
class Table:
    """A table of BENCHMARKS.md, between `<!-- table:NAME -->` and `<!-- /table:NAME -->`."""
    name: str
    make: Callable[[T.Results], str]


@dataclass(frozen=True)
class Experiment:
    name: str                  # also its results file: benchmarks/results/NAME.json
    script: str                # relative to benchmarks/, run with benchmarks/ as the working folder
    description: str           # one line
    args: tuple[str, ...] = ()     # the recorded run's arguments; `run NAME ARGS` replaces them
    pinned: tuple[str, ...] = ()   # always passed (e.g. the --name that makes the script write NAME.json)
    writes_results: bool = True    # the script writes results/NAME.json itself; else the runner keeps
    #                                its standard output there
    tables: tuple[Table, ...] = field(default_factory=tuple)
    env: tuple[tuple[str, str], ...] = ()   # extra environment of the recorded run

    def argv(self, args: list[str] | None = None) -> list[str]:
        """The script's arguments: the given ones (or the recorded ones), then the pinned ones."""
        return [*(self.args if args is None else args), *self.pinned]

    def command(self, args: list[str] | None = None) -> str:
        """The exact command `run` executes, from the repository root."""
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.env)
        prog = "bash" if self.script.endswith(".sh") else "python"
        return (f"cd benchmarks && {env + ' ' if env else ''}{prog} {self.script} "
                + " ".join(shlex.quote(a) for a in self.argv(args))).rstrip()


EXPERIMENTS: list[Experiment] = [
    Experiment("sparsity_baselines", "sparsity_baselines.py",
               "Magnitude and Wanda at 50%, 2:4 and 4:8 against dense (WikiText-2, prune time, peak RSS)",
               ("--nsamples", "32", "--seqlen", "2048", "--eval-windows", "16")),
    Experiment("sparsellm_vs_baselines_h100", "sparsellm_vs_baselines.py",
               "SparseLLM against SparseGPT and Wanda at 70-90% and 1:4 over all blocks, 128 x 2048 calibration (GPU)",
               ("--model", "SmolLM2-135M-Instruct.Q4_1.gguf", "--device", "cuda", "--nsamples", "128", "--seqlen",
                "2048", "--eval-windows", "0", "--layers", "all", "--methods", "wanda,sparsegpt,sparsellm",
                "--targets", "0,1,2,3"), pinned=("--name", "sparsellm_vs_baselines_h100")),
    Experiment("cpu-all", "sparsellm_vs_baselines.py",
               "SparseLLM against SparseGPT and Wanda at 90% and 1:4 over all blocks, 16 x 1024 calibration (CPU)",
               ("--layers", "all", "--targets", "2,3", "--nsamples", "16", "--seqlen", "1024", "--eval-windows", "8",
                "--work", "runs/peer", "--reuse"), pinned=("--name", "cpu-all"),
               tables=(Table("sparsellm-cpu-all", T.sparsellm_cpu_all),)),
    Experiment("cpu-firsthalf", "sparsellm_vs_baselines.py",
               "SparseLLM against SparseGPT and Wanda at 70-90% and 1:4 over the first half of the blocks (CPU)",
               ("--layers", "first-half", "--targets", "0,1,2,3", "--nsamples", "16", "--seqlen", "1024",
                "--eval-windows", "8", "--work", "runs/peer", "--reuse"), pinned=("--name", "cpu-firsthalf"),
               tables=(Table("sparsellm-cpu-first-half", T.sparsellm_cpu_first_half),)),
    Experiment("peer_llmcompressor", "peers/compare_llmcompressor.py",
               "prunekit against llm-compressor (SparseGPT, Wanda, magnitude at 50%, 2:4, 4:8) under one protocol",
               ("--nsamples", "16", "--seqlen", "1024", "--eval-windows", "8", "--work", "runs/peer"),
               tables=(Table("peer-llmcompressor", T.peer_llmcompressor),)),
    Experiment("depth_methods", "depth_methods.py",
               "Depth pruning: SLM, LaCo, ShortGPT, SLEB, PPL removing 6 and 10 of 30 blocks, and the CKA analysis",
               ("--reuse",), tables=(Table("depth-methods", T.depth_methods),)),
    Experiment("depth_bench", "depth_methods.py",
               "Size and speed of the depth-pruned models against dense (interleaved paired rounds)",
               ("--reuse", "--bench-only", "--bench-reps", "9", "--bench-new-tokens", "32"),
               tables=(Table("depth-bench", T.depth_bench),)),
    Experiment("slm_ablation", "slm_ablation.py",
               "SLM's merged windows rebuilt as removals (top or base block kept): merging against removing",
               ("runs/depth-slm-rdsc-6", "runs/depth-slm-rdsc-10"), tables=(Table("slm-ablation", T.slm_ablation),)),
    Experiment("width_search", "width_search.py",
               "search-llm width pruning at keep 0.8 and 0.6: search, no reformation, importance init, magnitude",
               ("--reuse", "--search-flags", "--generations 4")),
    Experiment("width_bench", "width_search.py",
               "Size and speed of the width-pruned models against dense (interleaved paired rounds)",
               ("--reuse", "--bench-only", "--variants", "search,init,magnitude"),
               tables=(Table("width-bench", T.width_bench),)),
    Experiment("zero_shot", "zero_shot.py",
               "The seven zero-shot tasks (lm-eval, 0-shot) of dense and the pruned run folders, into their reports",
               ("--limit", "50", "--reuse", *(f"runs/depth-{m}-{k}" for k in (6, 10) for m in
                                              ("shortgpt", "sleb", "ppl", "slm-rdsc", "slm-top", "laco")),
                *(f"runs/width-{v}-{k}" for k in ("0.8", "0.6") for v in ("search", "init")),
                *(f"runs/peer/pk-{m}-0.5-16x1024" for m in ("wanda", "sparsegpt", "magnitude")),
                "runs/peer/pk-sparsegpt-2of4-16x1024"), writes_results=False),
    Experiment("lm_eval_check", "lm_eval_check.py",
               "prunekit eval --tasks against lm-eval's own command line on the same saved model",
               ("runs/depth-shortgpt-6", "--tasks", "piqa,arc_easy", "--limit", "50"),
               tables=(Table("lm-eval-check", T.lm_eval_check),)),
    Experiment("streaming", "streaming_runs.sh",
               "One method streamed inside a memory limit of a quarter of the checkpoint, then read back (root)",
               ("/tmp/rand-1b", "sparsegpt24", "--in-memory", "--", "--method", "sparsegpt", "--pattern", "2:4"),
               writes_results=False),
    Experiment("servable_outputs", "serving/servable.py",
               "Servable outputs of SmolLM2 (depth, sublayer, MLP-only and KV-group widths) in vLLM and llama.cpp: "
               "tokens and logits against transformers, prefill and decode speed against dense, wt2 and KL",
               ("--reuse",), tables=(Table("servable-outputs", T.servable_outputs),)),
    Experiment("gpu", "gpu/run.sh",
               "The prepared GPU check: CUDA tests, SmolLM2 with 7 methods on CUDA against the CPU, a random 1.5 B "
               "Llama streamed on CUDA (writes gpu/results/; see BENCHMARKS 'GPU path')",
               ("--dry-run",), writes_results=False),
    Experiment("streaming_smollm2", "stream_smollm2.sh",
               "SmolLM2-135M pruned streamed and in memory (Wanda, SparseGPT 2:4, ShortGPT), compared byte for byte",
               ("/tmp/stream-smollm2",), writes_results=False),
    Experiment("stream_memory_limit", "stream_memory_limit.py",
               "One streamed prune of a checkpoint inside a cgroup-v1 memory limit (root); prints one JSON line",
               ("--model", "/tmp/rand-15b-d2048", "--out", "/tmp/sparsegpt24-rand15bd2048-stream", "--method",
                "sparsegpt", "--pattern", "2:4", "--limit-fraction", "0.25", "--calib", "c4", "--nsamples", "1",
                "--seqlen", "128", "--shard-bytes", "2000000000", "--times-log",
                "results/streaming/sparsegpt24-rand15bd2048-bf16-times.jsonl"),
               writes_results=False, env=(("OMP_NUM_THREADS", "1"),),
               tables=(Table("stream-rand15b-blocks", T.stream_rand15b_blocks),)),
    Experiment("stream_outputs", "stream_outputs.py",
               "Read a pruned checkpoint back lazily: per-tensor sparsity and N:M validity, or byte-equality of two",
               ("inspect", "/tmp/sparsegpt24-rand15bd2048-stream", "--pattern", "2:4"), writes_results=False),
    Experiment("evo_search", "evo_search.py",
               "Evolutionary search with KL fitness (evo-depth, evo-sparsity, OWL, search-llm, executors) "
               "against one-shot allocations",
               ("--part", "depth", "--reuse"),
               tables=(Table("evo-depth", T.evo_depth), Table("evo-sparsity", T.evo_sparsity),
                       Table("evo-width-multiples", T.evo_width_multiples), Table("evo-executors", T.evo_executors))),
    Experiment("width_kl_consistency", "width_kl_consistency.py",
               "Does the width search's reported KL equal the KL of the model it returns? (prints both)",
               writes_results=False),
    Experiment("recovery_bench", "recovery_bench.py",
               "One LoRA recovery budget over depth, depth + width, width and sparse models, before and after",
               tables=(Table("recovery", T.recovery),)),
    Experiment("distill_bench", "distill_bench.py",
               "Recovery by distillation (LoRA-kd, full-kd, local then full-kd, cached top-64) against LoRA-lm at "
               "20 and 80 optimiser steps: wt2, held-out KL, teacher share, local block errors",
               ("--table",), tables=(Table("distill", T.distill),)),
    Experiment("shape_bench", "shape_bench.py",
               "evo-shape against whole-block, sublayer and servable width pruning at 0.8 and 0.65 of the block "
               "linears: wt2, held-out KL, zero-shot, recovery of the best, search cost per executor",
               ("--table",), tables=(Table("shape", T.shape), Table("shape-cost", T.shape_cost))),
    Experiment("shape_serving", "shape_serving.py",
               "shape_bench's outputs in vLLM and llama.cpp: native classes, tokens against transformers, prefill "
               "and decode speed against dense, the quality/speed frontier plot",
               ("--table",), tables=(Table("shape-serving", T.shape_serving),)),
    Experiment("shape_refine_check", "shape_refine_check.py",
               "evo-shape's library variants in closed form against trained by local distillation, scored on "
               "C4-validation windows neither saw", tables=(Table("shape-refine", T.shape_refine),)),
]

BY_NAME = {e.name: e for e in EXPERIMENTS}
TABLES = {t.name: t for e in EXPERIMENTS for t in e.tables}
