"""The benchmark registry (benchmarks/registry.py): every benchmark script is a declared experiment,
every generated table of BENCHMARKS.md equals what its generator makes of the committed results,
and `python -m benchmarks run` records its provenance. Runs no benchmark and needs no data folder."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from benchmarks import __main__ as cli, provenance
from benchmarks.registry import BY_NAME, EXPERIMENTS, Experiment, TABLES
from benchmarks.tables import RUNS_KEY, Results
from tests.helpers import ROOT

BENCH = ROOT / "benchmarks"
# the registry's own machinery, and helpers that a registered script calls (not experiments of their own)
NOT_EXPERIMENTS = {"__init__.py", "__main__.py", "registry.py", "tables.py", "provenance.py", "runner.py",
                   "peers/llmc_prune.py", "peers/setup_llmcompressor.sh", "gpu/bench.py"}   # run by gpu/run.sh


def test_every_marked_table_equals_its_generator_on_the_committed_results():
    text = (ROOT / "BENCHMARKS.md").read_text()
    marked = cli.marked(text)
    assert set(marked) == set(TABLES), "every registered table is marked once in BENCHMARKS.md, and only those"
    made = cli.generated(Results(BENCH / "results"))
    stale = [name for name in TABLES if marked[name] != made[name]]
    assert not stale, f"BENCHMARKS.md tables differ from their results: {stale} (python -m benchmarks tables)"
    assert cli.tables_command(check=True, results_dir=None) == 0


def test_rewrite_replaces_only_the_marked_body():
    text = "intro\n<!-- table:t -->\n| old |\n<!-- /table:t -->\nafter\n"
    assert cli.rewrite(text, {"t": "| new |\n|---|"}) == "intro\n<!-- table:t -->\n| new |\n|---|\n<!-- /table:t -->\nafter\n"
    with pytest.raises(ValueError, match="not registered"):
        cli.rewrite(text, {})


def test_every_benchmark_script_is_a_registered_experiment():
    skipped = {"serving", "runs", "results", "carry"}    # engine harness, run outputs, the GPU check's bundles
    scripts = {str(p.relative_to(BENCH)) for p in BENCH.rglob("*") if p.suffix in (".py", ".sh")
               and not skipped & set(p.relative_to(BENCH).parts)}
    registered = {e.script for e in EXPERIMENTS}
    assert scripts - NOT_EXPERIMENTS <= registered, f"unregistered: {sorted(scripts - NOT_EXPERIMENTS - registered)}"
    assert all((BENCH / s).is_file() for s in registered)
    assert len(BY_NAME) == len(EXPERIMENTS), "experiment names are unique"
    for e in EXPERIMENTS:
        assert e.description and "\n" not in e.description
        if e.writes_results and e.name != "sparsellm_vs_baselines_h100":   # renamed from the GPU machine's file
            # a script that writes its own results names the file by the experiment (or is told to by --name)
            assert e.name in (BENCH / e.script).read_text() or e.pinned[-2:] == ("--name", e.name), e.name
    for e in EXPERIMENTS:
        if e.tables and e.writes_results:      # a table is generated from its experiment's committed results
            assert (BENCH / "results" / f"{e.name}.json").is_file()


def test_list_prints_each_experiment_with_its_command(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    for e in EXPERIMENTS:
        assert f"{e.name}\n  {e.description}\n  $ {e.command()}\n" in out
    assert BY_NAME["cpu-all"].command().startswith("cd benchmarks && python sparsellm_vs_baselines.py --layers all")
    assert BY_NAME["cpu-all"].command().endswith("--name cpu-all")


def test_run_dry_run_prints_the_command_and_writes_nothing(capsys, tmp_path):
    assert cli.main(["run", "--dry-run", "evo_search", "--part", "width", "--bench"]) == 0
    assert capsys.readouterr().out.strip() == "+ cd benchmarks && python evo_search.py --part width --bench"


def test_provenance_names_commit_versions_and_machine():
    rec = provenance.finish(provenance.record("cmd", ["a"], {"PRUNEKIT_DATA_DIR": "/d", "SECRET": "x"}), 0, 1.0)
    assert len(rec["commit"]) == 40 and isinstance(rec["dirty"], bool)
    assert set(rec["versions"]) >= {"torch", "transformers", "prunekit", "python"}
    assert rec["versions"]["prunekit"]
    assert rec["machine"]["cores"] >= 1 and rec["machine"]["cpu"] and rec["machine"]["memory_gb"] > 0
    assert rec["environment"] == {"PRUNEKIT_DATA_DIR": "/d"} and rec["returncode"] == 0


def test_run_records_provenance_next_to_the_experiments_results(tmp_path):
    (tmp_path / "results").mkdir()
    (tmp_path / "writes.py").write_text(
        "import json, sys\njson.dump({'row': {'ppl': 1.5}, 'argv': sys.argv[1:]}, open('results/toy.json', 'w'))\n")
    (tmp_path / "prints.py").write_text("print('hello')\nprint('{\"x\": 1}')\n")
    exps = {"toy": Experiment("toy", "writes.py", "toy", ("--a", "1")),
            "said": Experiment("said", "prints.py", "said", writes_results=False)}
    assert cli.run("toy", None, here=tmp_path, experiments=exps) == 0
    assert cli.run("toy", ["--b"], here=tmp_path, experiments=exps) == 0
    data = json.loads((tmp_path / "results" / "toy.json").read_text())
    assert data["row"] == {"ppl": 1.5} and data["argv"] == ["--b"]
    (run,) = data[RUNS_KEY]            # the script rewrote its file: only this run's record is in it
    assert run["argv"] == ["--b"] and run["command"].endswith("python writes.py --b") and run["returncode"] == 0
    assert Results(tmp_path / "results").load("toy") == {"row": {"ppl": 1.5}, "argv": ["--b"]}
    for _ in range(2):
        assert cli.run("said", None, here=tmp_path, experiments=exps) == 0
    said = json.loads((tmp_path / "results" / "said.json").read_text())
    assert said["output"] == ["hello", {"x": 1}] and len(said[RUNS_KEY]) == 2


def test_cli_runs_as_a_module():
    out = subprocess.run([sys.executable, "-m", "benchmarks", "tables", "--check"], cwd=ROOT, capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr


def test_helper_tools_live_in_tools_and_nothing_points_at_their_old_place():
    assert (ROOT / "tools" / "make_random_checkpoint.py").is_file() and (ROOT / "tools" / "refactor_identity.py").is_file()
    files = [ROOT / "README.md", ROOT / "BENCHMARKS.md", *ROOT.glob("docs/*.md"), *ROOT.glob("tests/*.py"),
             *BENCH.glob("*.py"), *BENCH.glob("*.sh")]
    for f in files:
        text = f.read_text()
        for old in ("benchmarks/make_random_checkpoint", "benchmarks/refactor_identity",
                    '"benchmarks" / "make_random_checkpoint'):
            assert old not in text or f.name == "test_benchmarks_registry.py", (f, old)

