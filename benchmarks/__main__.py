"""python -m benchmarks list | run [--dry-run] NAME [ARGS...] | tables [--check] [--results DIR]

See benchmarks/registry.py."""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from . import provenance
from .registry import BY_NAME, EXPERIMENTS, TABLES
from .tables import HERE, RUNS_KEY, Results

ROOT = HERE.parent
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
MARK = re.compile(r"^<!-- table:(?P<name>[\w.-]+) -->\n(?P<body>.*?)^<!-- /table:(?P=name) -->$", re.M | re.S)


# ---------------------------------------------------------------- list

def list_experiments() -> str:
    lines = []
    for e in EXPERIMENTS:
        tabs = f"  tables: {', '.join(t.name for t in e.tables)}" if e.tables else ""
        lines += [f"{e.name}", f"  {e.description}", f"  $ {e.command()}",
                  f"  results: benchmarks/results/{e.name}.json{tabs}", ""]
    return "\n".join(lines).rstrip()


# ---------------------------------------------------------------- run

def run(name: str, args: list[str] | None, dry_run: bool = False, here: Path = HERE, experiments=None) -> int:
    """Run experiment NAME from `here` (benchmarks/) and record its provenance in here/results/NAME.json."""
    e = (experiments or BY_NAME)[name]
    argv = e.argv(args)
    command = e.command(args)
    print("+", command, flush=True)
    if dry_run:
        return 0
    env = {**os.environ, **dict(e.env)}
    data = ROOT.parent / "shared" / "data"
    if "PRUNEKIT_DATA_DIR" not in env and data.is_dir():
        env["PRUNEKIT_DATA_DIR"] = str(data)
    prog = ["bash"] if e.script.endswith(".sh") else [sys.executable]
    rec = provenance.record(command, argv, env)
    results = here / "results" / f"{name}.json"
    before = results.stat().st_mtime_ns if results.exists() else None
    start = time.perf_counter()
    if e.writes_results:
        rc = subprocess.run([*prog, e.script, *argv], cwd=here, env=env).returncode
    else:       # keep what it prints: that is its result
        proc = subprocess.Popen([*prog, e.script, *argv], cwd=here, env=env, stdout=subprocess.PIPE, text=True)
        out = []
        for line in proc.stdout:
            sys.stdout.write(line)
            out.append(line.rstrip("\n"))
        rc = proc.wait()
    rec = provenance.finish(rec, rc, time.perf_counter() - start)
    if e.writes_results:
        if not results.exists() or results.stat().st_mtime_ns == before:
            print(f"benchmarks: {e.script} did not write {results}; nothing recorded", file=sys.stderr)
            return rc or 1
        data_out = json.loads(results.read_text())
        if not isinstance(data_out, dict):
            data_out = {"results": data_out}
    else:
        data_out = {k: v for k, v in (json.loads(results.read_text()) if results.exists() else {}).items()
                    if k == RUNS_KEY}
        data_out["output"] = [_json_or_text(line) for line in out[-200:]]
    data_out[RUNS_KEY] = [*data_out.get(RUNS_KEY, []), rec]
    results.write_text(json.dumps(data_out, indent=2))
    print(f"benchmarks: recorded the run in {results} (returncode {rc})", flush=True)
    return rc


def _json_or_text(line: str):
    try:
        return json.loads(line) if line.lstrip().startswith("{") else line
    except json.JSONDecodeError:
        return line


# ---------------------------------------------------------------- tables

def generated(results: Results | None = None) -> dict[str, str]:
    """Every registered table, generated from the results folder."""
    results = results or Results()
    return {name: t.make(results) for name, t in TABLES.items()}


def marked(text: str) -> dict[str, str]:
    """The marked tables of a BENCHMARKS.md text, by name (without the marker lines)."""
    out = {}
    for m in MARK.finditer(text):
        if m["name"] in out:
            raise ValueError(f"table {m['name']} is marked twice")
        out[m["name"]] = m["body"].rstrip("\n")
    return out


def rewrite(text: str, tables: dict[str, str]) -> str:
    unknown = set(marked(text)) - set(tables)
    if unknown:
        raise ValueError(f"marked but not registered: {', '.join(sorted(unknown))}")
    return MARK.sub(lambda m: f"<!-- table:{m['name']} -->\n{tables[m['name']]}\n<!-- /table:{m['name']} -->", text)


def tables_command(check: bool, results_dir: str | None) -> int:
    text = BENCHMARKS_MD.read_text()
    tables = generated(Results(results_dir) if results_dir else None)
    missing = set(tables) - set(marked(text))
    if missing:
        print(f"benchmarks: registered but not marked in BENCHMARKS.md: {', '.join(sorted(missing))}", file=sys.stderr)
        return 1
    new = rewrite(text, tables)
    if check:
        stale = [n for n, body in marked(text).items() if body != tables[n]]
        if stale:
            print(f"benchmarks: stale tables in BENCHMARKS.md: {', '.join(stale)} (python -m benchmarks tables)",
                  file=sys.stderr)
        return 1 if stale else 0
    if new != text:
        BENCHMARKS_MD.write_text(new)
    print(f"benchmarks: {len(tables)} tables generated" + (", BENCHMARKS.md rewritten" if new != text else ", unchanged"))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="each experiment, its description and the exact command")
    r = sub.add_parser("run", help="run one experiment and record its provenance in results/NAME.json")
    r.add_argument("--dry-run", action="store_true", help="print the command only")
    r.add_argument("name", choices=sorted(BY_NAME))
    r.add_argument("args", nargs=argparse.REMAINDER, help="the script's arguments (default: the recorded run's)")
    t = sub.add_parser("tables", help="rewrite the generated tables of BENCHMARKS.md from the results")
    t.add_argument("--check", action="store_true", help="exit 1 if a marked table differs from its generator")
    t.add_argument("--results", default=None, help="results folder (default: benchmarks/results)")
    a = ap.parse_args(argv)
    if a.cmd == "list":
        print(list_experiments())
        return 0
    if a.cmd == "run":
        return run(a.name, a.args or None, a.dry_run)
    return tables_command(a.check, a.results)


if __name__ == "__main__":
    sys.exit(main())
