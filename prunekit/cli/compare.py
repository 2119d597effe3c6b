"""`prunekit compare`: one Markdown page (table and plots) over several runs."""
from __future__ import annotations


def add_parser(sub) -> None:
    c = sub.add_parser("compare", help="one Markdown page (table and plots) over several runs",
                       description="Read the prunekit_report.json of each run folder and write one Markdown page: a "
                                   "table of every run (method, what was pruned, parameters, perplexities with their "
                                   "protocols, zero-shot average, KL, prefill latency ratio) and PNG plots next to it. "
                                   "Runs measured under different protocols get separate columns and a warning.")
    c.add_argument("runs", nargs="+", help="prunekit output folders (or report JSON files)")
    c.add_argument("--output", default="report.md", help="Markdown file to write; PNGs go next to it (default report.md)")


def run(args) -> int:
    from ..reports.comparison import table, load_runs, write_page
    out = write_page(args.runs, args.output)
    head, rows, notes = table(load_runs(args.runs))
    print(f"prunekit compare: {len(rows)} runs -> {out}")
    for n in notes:
        print("  warning: " + n.replace("**", ""))
    return 0
