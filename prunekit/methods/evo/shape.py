"""evo-shape: one shape per block (attention full, with fewer KV heads, or none; MLP at a width
of a grid, or none), chosen from a variant library under a parameter budget by EvoPress's
(1 + lambda) search with KL fitness and staged token budgets, the way Puzzle (Bercovich et al.
2024, arXiv 2411.19146) builds its shipped models. The output is in the Nemotron-NAS (DeciLM)
layout that vLLM and llama.cpp serve with their own classes.

- The library (library.py) is built once on the calibration inputs and reused across budgets.
- Every candidate is maximal under the budget (solvers/shapes.py): at most `keep` of the dense
  blocks' linear parameters, and no sublayer could move one level up and still fit.
- The start is the best of the costliest uniform shapes that fit (scored on the fixed selection
  windows), filled up to a maximal genome.
- `--shape FILE` applies a saved shape (the `shape.json` every run writes beside its output,
  or that output folder) instead of searching: the library then holds only the shape's variants.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from ...engine.stack import BlockStack
from ...errors import PrunekitError
from ...models import decilm
from ...models.adapter import ModelAdapter
from ...models.block_shapes import full_width
from ...scoring.executors import make_executor
from ...scoring.fitness import AssembledEvaluator
from ...solvers.evolution import FIXED, draw_windows, parse_stages, switch_count
from ...solvers.shapes import ShapeSpace
from ..base import CalibrationDefaults, Job, Method
from ...errors import ConfigError
from ..options import option, require
from ..registry import register_method
from .config import EvoSearchOptions
from .driver import evolution_figure, run_search
from . import latency
from .library import NONE, ShapeLibrary, ShapeLoader, compact_state
from .refine import RefineSettings

SHAPE_STAGES = "2048:4,16384:1"
SHAPE_OFFSPRING = 16
SHAPE_GENERATIONS = 50
SHAPE_FILE = "shape.json"
SHAPE_FORMAT = "prunekit-shape/1"


@dataclass
class EvoShapeConfig(EvoSearchOptions):
    """Per-block shapes (attention KV heads or none, MLP width or none) under a parameter budget."""
    keep: float | None = option(None, "kept fraction of the decoder blocks' linear parameters (the accounting of "
                                      "search-llm)", default_text="none: give it, or --shape")
    mlp_widths: str = option("0.25,0.5,0.75", "the library's MLP widths as fractions of the dense width, each "
                                              "rounded to --width-multiple (none and the dense width are always in)")
    width_multiple: int = option(256, "MLP widths are multiples of this (256: the grid llama.cpp's converter "
                                      "states exactly; vLLM takes any)")
    kv_heads: str | None = option(None, "the library's KV-head counts, comma-separated divisors of the model's "
                                        "(none and the dense count are always in)", default_text="every divisor")
    percdamp: float = option(0.01, "damping of the down_proj reformation, relative to the mean diagonal of H")
    library_dir: str | None = option(None, "where variant libraries are kept",
                                     default_text="the prunekit cache, evo-shape/")
    refine_steps: int = option(0, "train every narrower variant of the library by local distillation (Puzzle's "
                                  "BLD): AdamW steps of one calibration window each, to reproduce the dense block's "
                                  "output; 0 keeps the closed-form variants")
    refine_windows: int = option(8, "--refine-steps: the first calibration windows the variants learn from; a "
                                    "variant is kept where its error falls on the next as many (held out)")
    refine_lr: float = option(1e-3, "--refine-steps: AdamW learning rate")
    uniform_starts: int = option(4, "the costliest uniform shapes within the budget that are scored to choose the start")
    shape: str | None = option(None, "apply this saved shape (a shape.json, or the output folder of an evo-shape run) "
                                     "instead of searching")
    max_latency: float | None = option(None, "also keep the blocks' latency at most this fraction of the dense "
                                             "blocks', by a per-variant table measured on --device at "
                                             "--latency-batch x --latency-seqlen (kept with the library)",
                                       default_text="no latency budget")
    latency_batch: int = option(1, "sequences per forward when the latency table is measured")
    latency_seqlen: int = option(512, "tokens per sequence when the latency table is measured (a prefill)")
    latency_reps: int = option(5, "timed forwards for the latency table, after one warm-up")

    def __post_init__(self):
        self.check_search()
        require(self.shape is not None or (self.keep is not None and 0 < self.keep < 1)
                or (self.keep is None and self.max_latency is not None),
                "evo-shape needs {keep} in (0, 1), a {max_latency}, or a {shape} to apply")
        require(self.max_latency is None or 0 < self.max_latency < 1, "{max_latency} must lie in (0, 1)")
        require(self.shape is None or self.max_latency is None,
                "{shape} applies a saved shape as it is: drop {max_latency}")
        require(min(self.latency_batch, self.latency_seqlen, self.latency_reps) >= 1,
                "{latency_batch}, {latency_seqlen} and {latency_reps} must be at least 1")
        require(self.width_multiple >= 1 and self.uniform_starts >= 1,
                "{width_multiple} and {uniform_starts} must be at least 1")
        require(self.percdamp >= 0, "{percdamp} must be at least 0")
        require(self.refine_steps >= 0 and self.refine_windows >= 1 and self.refine_lr > 0,
                "{refine_steps} must be at least 0, {refine_windows} at least 1 and {refine_lr} positive")
        self.fractions()
        self.kv_list()

    def fractions(self) -> list[float]:
        try:
            out = [float(x) for x in self.mlp_widths.split(",") if x.strip()]
        except ValueError:
            raise ConfigError(f"{{mlp_widths}} '{self.mlp_widths}' is not a comma-separated list of fractions") from None
        require(all(0 < f < 1 for f in out), f"{{mlp_widths}} fractions must lie in (0, 1): {self.mlp_widths}")
        return out

    def kv_list(self) -> list[int] | None:
        if self.kv_heads is None:
            return None
        try:
            return [int(x) for x in self.kv_heads.split(",") if x.strip()]
        except ValueError:
            raise ConfigError(f"{{kv_heads}} '{self.kv_heads}' is not a comma-separated list of counts") from None


def _read_shape(spec: str) -> list[dict]:
    path = Path(spec)
    if path.is_dir():
        path = path / SHAPE_FILE
    if not path.is_file():
        raise PrunekitError(f"--shape {spec}: no {SHAPE_FILE} there")
    data = json.loads(path.read_text())
    if data.get("format") != SHAPE_FORMAT:
        raise PrunekitError(f"--shape {spec}: not a prunekit shape file (format {data.get('format')!r})")
    return data["blocks"]


def level_costs(adapter: ModelAdapter, kv_levels: list[int], mlp_levels: list[int]) -> tuple[list[int], list[int]]:
    """Parameters (weights and biases of the block linears) of each attention and MLP level."""
    block = adapter.layers[0]
    kv = adapter.dim("kv_heads")

    def size(role):
        lin = adapter.role(block, role)
        return lin.weight.numel() + (lin.bias.numel() if lin.bias is not None else 0)
    fixed = size("q") + size("o")
    per_head = (size("k") + size("v")) // kv
    width = adapter.dim("mlp")
    per_channel = sum(size(r) for r in adapter.ffn_in_roles) // width + adapter.role(block, "down").weight.shape[0]
    down_bias = adapter.role(block, "down").bias
    attention = [0 if k == NONE else fixed + k * per_head for k in kv_levels]
    mlp = [0 if w == NONE else w * per_channel + (down_bias.numel() if down_bias is not None else 0)
           for w in mlp_levels]
    return attention, mlp


def shape_evaluator(model, ids, root, kind: str, topk: int, device: str = "cpu") -> AssembledEvaluator:
    """The one way an evaluator is built, here or in a worker, so every executor scores alike."""
    model.config.use_cache = False
    adapter = ModelAdapter(model)
    return AssembledEvaluator(BlockStack(adapter, ids, device), ShapeLoader(ShapeLibrary(Path(root)), adapter),
                              kind, topk)


class ShapeFactory:
    """Builds an assembled-candidate evaluator in a worker (picklable)."""

    def __init__(self, model, ids, root, kind, topk, device="cpu"):
        self.model, self.ids, self.root, self.kind, self.topk, self.device = model, ids, str(root), kind, topk, device

    def __call__(self) -> AssembledEvaluator:
        return shape_evaluator(self.model, self.ids, self.root, self.kind, self.topk, self.device)


@register_method("evo-shape", EvoShapeConfig)
class EvoShape(Method):
    """Returns a new model in the DeciLM layout; the input model is left as it was."""
    calibration = CalibrationDefaults(nsamples=32, seqlen=512)
    returns_new_model = True
    varies_block_widths = True

    @classmethod
    def example_config(cls, library_dir=None):
        """Small settings for the tests' tiny models."""
        return EvoShapeConfig(keep=0.6, mlp_widths="0.5", width_multiple=8, stages="32:2,64:1", generations=2,
                              offspring=3, library_dir=library_dir)

    def check(self) -> None:
        reason = decilm.why_not(self.adapter)
        if reason is not None:
            raise PrunekitError(f"evo-shape writes the Nemotron-NAS (DeciLM) layout, which cannot state this "
                                f"{self.adapter.config.model_type} model: {reason}")
        if self.adapter.spec.fused:
            raise PrunekitError("evo-shape needs unfused q/k/v and gate/up projections")
        if not full_width(self.adapter) or self.adapter.config.model_type == decilm.MODEL_TYPE:
            raise PrunekitError("evo-shape searches a dense model: this one's blocks already differ in shape")
        kv, width = self.adapter.dim("kv_heads"), self.adapter.dim("mlp")
        for k in self.config.kv_list() or []:
            if not 0 < k < kv or kv % k:
                raise ConfigError(f"{{kv_heads}} {k}: the model has {kv} KV heads; give divisors below it")
        if not self.config.shape and self.config.width_multiple > width:
            raise ConfigError(f"{{width_multiple}} {self.config.width_multiple} exceeds the MLP width {width}")

    def variant_lists(self) -> tuple[list[int], list[int]]:
        """(MLP widths, KV-head counts) of the library, dense and none excluded."""
        adapter, cfg = self.adapter, self.config
        kv, width = adapter.dim("kv_heads"), adapter.dim("mlp")
        if cfg.shape:
            blocks = _read_shape(cfg.shape)
            if len(blocks) != adapter.num_layers:
                raise PrunekitError(f"--shape {cfg.shape} has {len(blocks)} blocks; the model has {adapter.num_layers}")
            for b in blocks:
                if b["kv_heads"] and (b["kv_heads"] > kv or kv % b["kv_heads"]) or not 0 <= b["mlp"] <= width:
                    raise PrunekitError(f"--shape {cfg.shape}: block {b} does not fit this model ({kv} KV heads, "
                                        f"MLP width {width})")
            return (sorted({b["mlp"] for b in blocks if 0 < b["mlp"] < width}),
                    sorted({b["kv_heads"] for b in blocks if 0 < b["kv_heads"] < kv}))
        m = cfg.width_multiple
        widths = sorted({max(m, int(f * width / m + 0.5) * m) for f in cfg.fractions()} - {width})
        widths = [w for w in widths if w < width]
        kvs = cfg.kv_list() or [d for d in range(1, kv) if kv % d == 0]
        return widths, sorted(set(kvs))

    def run(self, job: Job) -> nn.Module:
        return self._run(job.input_ids, job.device, job.progress)

    @torch.no_grad()
    def _run(self, ids: torch.Tensor, device: str, progress: bool) -> nn.Module:
        cfg, adapter = self.config, self.adapter
        widths, kvs = self.variant_lists()
        refine = (RefineSettings(cfg.refine_steps, min(cfg.refine_windows, ids.shape[0]), cfg.refine_lr)
                  if cfg.refine_steps else None)
        lib, built = ShapeLibrary.open_or_build(adapter, ids, widths, kvs, cfg.percdamp, cfg.library_dir, device,
                                                progress, refine)
        attention, mlp = level_costs(adapter, lib.attention_levels, lib.mlp_levels)
        full = adapter.num_layers * (attention[-1] + mlp[-1])
        if cfg.shape:
            genome = tuple((lib.attention_levels.index(b["kv_heads"]), lib.mlp_levels.index(b["mlp"]))
                           for b in _read_shape(cfg.shape))
            space = ShapeSpace(tuple(attention), tuple(mlp), adapter.num_layers, full)
            self.details.update(applied_shape=str(cfg.shape))
        else:
            space = self._space(lib, attention, mlp, full, device)
            genome = self._search(space, lib, ids, device, progress)
        if all(level == (0, 0) for level in genome):
            raise PrunekitError("the shape leaves every block out: raise --keep")
        shapes = [[lib.attention_levels[a], lib.mlp_levels[m]] for a, m in genome]
        self.details.update(
            shape=shapes, removed=[i for i, s in enumerate(shapes) if s == [0, 0]],
            kv_levels=lib.attention_levels, mlp_levels=lib.mlp_levels, attention_params=attention, mlp_params=mlp,
            budget=space.budget, block_params=full, kept_params=space.cost(genome),
            **({"kept_latency": space.latency(genome) / self.details["latency"]["dense_blocks_s"]}
               if space.max_latency is not None else {}),
            kept_fraction=space.cost(genome) / full,
            library={"path": str(lib.root), "bytes": lib.size_bytes(), "built_now": built, "widths": lib.widths,
                     "kv_choices": lib.kv_choices, "reformed": sum(lib.meta["reformed"].values()),
                     "variants": len(lib.meta["reformed"]), **refined_summary(lib.meta)})
        return build_model(adapter, lib, genome)

    def _space(self, lib: ShapeLibrary, attention: list[int], mlp: list[int], full: int, device: str) -> ShapeSpace:
        """The parameter budget of --keep (all of them without it), and the latency budget of
        --max-latency over the measured table."""
        cfg, adapter = self.config, self.adapter
        budget = full if cfg.keep is None else int(cfg.keep * full)
        if cfg.max_latency is None:
            return ShapeSpace(tuple(attention), tuple(mlp), adapter.num_layers, budget)
        table, measured = latency.open_or_measure(adapter, lib, lambda g: build_model(adapter, lib, g), device,
                                                  cfg.latency_batch, cfg.latency_seqlen, cfg.latency_reps)
        dense = adapter.num_layers * (table["attention"][-1] + table["mlp"][-1])
        self.details["latency"] = {"table": table, "measured_now": measured, "dense_blocks_s": dense,
                                   "max_latency": cfg.max_latency, "budget_s": cfg.max_latency * dense}
        return ShapeSpace(tuple(attention), tuple(mlp), adapter.num_layers, budget, tuple(table["attention"]),
                          tuple(table["mlp"]), cfg.max_latency * dense)

    def _search(self, space: ShapeSpace, lib: ShapeLibrary, ids, device, progress) -> tuple:
        cfg, adapter = self.config, self.adapter
        factory = ShapeFactory(adapter.model, ids, lib.root, cfg.fitness, cfg.kl_topk, device)
        local = None
        if cfg.workers == 1 and cfg.executor == "local":      # this process's model is the workspace
            local = factory()
        executor = make_executor(cfg.executor, cfg.workers, factory,
                                 local=(lambda: local) if local is not None else None, threads=cfg.threads_per_worker)
        stages = parse_stages(cfg.stages or SHAPE_STAGES)
        n, seqlen = ids.shape
        try:
            starts = space.uniform()[:cfg.uniform_starts]
            fixed = draw_windows(n, stages[-1][0], seqlen, cfg.seed, FIXED, len(stages) - 1)
            scores = executor.score(starts, fixed)
            best = min(range(len(starts)), key=lambda i: scores[i])
            rng = random.Random(f"{cfg.seed}:start")
            initial = space.fill(starts[best], rng)
            out = run_search(cfg, initial, 0, executor, n, seqlen, SHAPE_STAGES,
                             cfg.generations if cfg.generations is not None else SHAPE_GENERATIONS,
                             cfg.offspring if cfg.offspring is not None else SHAPE_OFFSPRING, progress,
                             desc="evo-shape generations",
                             mutate=lambda g, r: space.mutate(g, r, switch_count(r, cfg.max_switches)))
        finally:
            executor.close()
            if local is not None:
                local.load.restore(adapter.layers)
        self.details.update({k: v for k, v in out.items() if k != "best"})
        self.details.update(uniform_starts=[{"shape": [lib.attention_levels[starts[i][0][0]],
                                                       lib.mlp_levels[starts[i][0][1]]],
                                             "params": space.cost(starts[i]), "fitness": scores[i]}
                                            for i in range(len(starts))],
                            uniform_best=best, start_params=space.cost(initial))
        return out["best"]

    @classmethod
    def summary_lines(cls, report: dict) -> list[str]:
        meth = report["method"]
        cfg, lib = meth["config"], meth["library"]
        shapes = meth["shape"]
        attn = sum(1 for k, _ in shapes if k == 0)
        mlp = sum(1 for _, w in shapes if w == 0)
        target = (f"keep {cfg['keep']}" if cfg["keep"] is not None else f"of {cfg['shape']}" if cfg["shape"]
                  else f"max latency {cfg['max_latency']}")
        lines = [f"  method        evo-shape {target}"
                 f" (kept {meth['kept_fraction']:.4f} of block linears: {meth['kept_params']:,} of "
                 f"{meth['block_params']:,})",
                 f"  blocks        {' '.join(f'{k}/{w}' for k, w in shapes)} (KV heads/MLP width; "
                 f"{attn} without attention, {mlp} without MLP, {len(meth['removed'])} removed)",
                 f"  library       KV {lib['kv_choices']}, MLP {lib['widths']}; {lib['bytes'] / 1e6:.1f} MB"
                 f"{' (built now)' if lib['built_now'] else ' (reused)'}; reformation kept on {lib['reformed']} of "
                 f"{lib['variants']} MLP variants"]
        if lib.get("refined"):
            r = lib["refined"]
            lines.append(f"  refinement    local distillation of the variants, {r['steps']} steps on {r['windows']} windows: "
                         f"kept on {r['kept']} of {r['variants']}; mean {'held-out ' if r['held_out'] else ''}"
                         f"block error {r['mean_before']:.4f} -> {r['mean_after']:.4f}")
        if "latency" in meth:
            lat, t = meth["latency"], meth["latency"]["table"]
            lines.append(f"  latency       blocks {meth['kept_latency']:.4f} of dense (budget {lat['max_latency']}); table "
                         f"on {t['device']}, batch {t['batch']} x {t['seqlen']} tokens, {t['threads']} threads, "
                         f"{t['reps']} forwards: {t['measure_s']:.1f} s"
                         f"{' (measured now)' if lat['measured_now'] else ' (reused)'}")
        if "final_fitness" in meth:
            u = meth["uniform_starts"][meth["uniform_best"]]
            lines.append(f"  search        {meth['fitness']} {u['fitness']:.4f} (best uniform {u['shape'][0]}/"
                         f"{u['shape'][1]}) -> {meth['initial_fitness']:.4f} (start, filled) -> "
                         f"{meth['final_fitness']:.4f} (best; {meth['evaluations']} evaluations, "
                         f"{meth['generations']} generations, executor {meth['executor']})")
        return lines

    @classmethod
    def figures(cls, report: dict, folder: Path) -> list[str]:
        meth = report["method"]
        (Path(folder) / SHAPE_FILE).write_text(json.dumps(shape_file(report), indent=1) + "\n")
        return ([] if "history" not in meth else evolution_figure(report, folder, "uniform")) + [SHAPE_FILE]

    @classmethod
    def describe(cls, report: dict) -> dict:
        meth = report["method"]
        return {"method": "evo-shape", "what": f"keep {meth['kept_fraction']:.3f} of block linears",
                "x": 1.0 - meth["kept_fraction"]}


def refined_summary(meta: dict) -> dict:
    """The report's view of the library's refinement (empty without one)."""
    errors = list((meta.get("refined") or {}).values())
    if not meta.get("refine") or not errors:
        return {}
    return {"refined": {"steps": meta["refine"]["steps"], "windows": meta["refine"]["windows"],
                        "lr": meta["refine"]["lr"], "held_out": meta["refine"]["held_out"], "variants": len(errors),
                        "kept": sum(1 for b, a in errors if a < b),
                        "mean_before": sum(b for b, _ in errors) / len(errors),
                        "mean_after": sum(a for _, a in errors) / len(errors)}}


def shape_file(report: dict) -> dict:
    """What --shape reads: each block's KV heads and MLP width (0: none), for the dense model."""
    meth = report["method"]
    return {"format": SHAPE_FORMAT, "source": (report.get("model") or {}).get("source"),
            "blocks": [{"kv_heads": k, "mlp": w} for k, w in meth["shape"]]}


def build_model(adapter: ModelAdapter, lib: ShapeLibrary, genome) -> nn.Module:
    """The DeciLM model of `genome`: each kept block at its variant's own shapes, blocks that keep
    neither sublayer left out."""
    states, shapes = [], []
    for i, level in enumerate(genome):
        if tuple(level) == (0, 0):
            continue
        var = lib.variant(i, tuple(level))
        states.append(compact_state(adapter, adapter.layers[i].state_dict(), var, lib.kv_heads))
        shapes.append(decilm.BlockShape(var["kv"], var["width"]))
    return decilm.from_block_states(adapter, states, shapes)
