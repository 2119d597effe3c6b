"""prunekit command line: it parses and prints; the work is done by prunekit.workflows. Bad input:
one line on stderr, exit code 2, nothing written. One module per subcommand (`add_parser`, `run`,
optionally `configs`: the config classes its flags set), shared flags in `args.py`."""
from __future__ import annotations

import sys

from ..errors import ConfigError, PrunekitError
from ..version import __version__
from . import analyze, bench, compare, evaluate, export, prune, recover
from .args import Parser, flag_name

DESCRIPTION = "Prune Hugging Face causal LMs and measure the result under stated protocols."
COMMANDS = {"prune": prune, "eval": evaluate, "analyze": analyze, "compare": compare, "bench": bench,
            "recover": recover, "export": export}

__all__ = ["main", "build_parser", "flag_name", "COMMANDS"]


def build_parser() -> Parser:
    parser = Parser(prog="prunekit", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"prunekit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for command in COMMANDS.values():
        command.add_parser(sub)
    return parser


def _interrupted(e: KeyboardInterrupt) -> int:
    from ..signals import exit_code
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


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from transformers.utils import logging as hf_logging
    from ..progress import log_to_stderr
    from ..reports.summary import record_command_line
    from ..signals import sigterm_as_interrupt
    hf_logging.disable_progress_bar()  # prunekit shows its own bars; the loader's are noise
    log_to_stderr()                    # progress lines when stderr is a log file, removed leftovers
    record_command_line(["prunekit", *(sys.argv[1:] if argv is None else argv)])
    command = COMMANDS[args.command]
    try:
        with sigterm_as_interrupt():   # timeout, Slurm, docker stop: clean up as for Ctrl-C
            return command.run(args)
    except ConfigError as e:
        own = command.configs() if hasattr(command, "configs") else ()
        print(f"prunekit {args.command}: error: {e.render(lambda f: flag_name(f, own))}", file=sys.stderr)
        return 2
    except PrunekitError as e:
        print(f"prunekit {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        return _interrupted(e)
