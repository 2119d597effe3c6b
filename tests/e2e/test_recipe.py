"""Recipes and lineage, so that methods combine (one method's output is the next one's input): a two-stage recipe equals its stages run by hand
(saved weights byte-equal), bad recipes are refused before any work in one line naming the stage,
the lineage chains parameter counts and protocols, compare labels the chain, and the SLM
pipeline example runs on a tiny model."""
import json

import pytest
import yaml
from transformers import AutoModelForCausalLM

import prunekit.workflows.prune as prune_workflow
from prunekit.cli import main
from prunekit.methods import SLMConfig, SearchConfig
from prunekit.reports import lineage
from prunekit.reports.comparison import describe, table, write_page
from prunekit.reports.summary import format_summary
from prunekit.workflows import evaluate_model, prune_model, run_recipe
from prunekit.workflows.recipe import RecipeError, load_recipe

from tests.helpers import ROOT
from tests.helpers.models import plain_model

CAL = {"calib": "c4", "nsamples": 4, "seqlen": 32}
SEARCH = dict(keep=0.8, generations=1, population=4, mutants=2, crossovers=1, randoms=1, top_k=2, band=0.05,
              fitness_seqlen=32)
EVAL = dict(evals="wikitext2", eval_seqlen=32, eval_windows=2)


@pytest.fixture
def four_block_dir(tmp_path, tokenizer):
    model = plain_model("llama", layers=4)
    path = tmp_path / "tiny-llama-4"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _two_stages():
    return {"calibration": CAL, "stages": [{"method": "slm", "remove_layers": 1},
                                           {"method": "search", **SEARCH}]}


@pytest.mark.slow
def test_two_stage_recipe_equals_the_stages_run_by_hand(four_block_dir, data_dir, tmp_path):
    by_hand_1, by_hand_2 = tmp_path / "hand-1", tmp_path / "hand-2"
    prune_model(str(four_block_dir), SLMConfig(remove_layers=1), **CAL, data_dir=data_dir, output=str(by_hand_1),
                progress=False, **EVAL)
    prune_model(str(by_hand_1), SearchConfig(**SEARCH), **CAL, data_dir=data_dir, output=str(by_hand_2),
                trust_remote_code=True, progress=False, **EVAL)
    out = tmp_path / "recipe"
    report = run_recipe(_two_stages(), model=str(four_block_dir), output=str(out), data_dir=data_dir,
                        progress=False, **EVAL)
    hand = (by_hand_2 / "model.safetensors").read_bytes()
    assert (out / "model.safetensors").read_bytes() == hand
    assert json.loads((out / "config.json").read_text()) == json.loads((by_hand_2 / "config.json").read_text())
    # the final report is the last stage's, with the lineage of both and each stage's report kept
    hand_report = json.loads((by_hand_2 / "prunekit_report.json").read_text())
    assert report["eval"]["wikitext2"]["ppl"] == hand_report["eval"]["wikitext2"]["ppl"]
    assert [s["method"] for s in report["lineage"]] == ["slm", "search-llm"]   # the recipe's "search": an alias
    assert sorted(p.name for p in (out / "stages").iterdir()) == ["01-slm.json", "02-search-search_history.png",
                                                                  "02-search.json"]
    first = json.loads((out / "stages" / "01-slm.json").read_text())
    assert first["method"]["depth"]["layers_after"] == 3
    assert not list(tmp_path.glob(".recipe.recipe-*"))            # the work folder is gone


def test_lineage_chains_counts_and_protocols_and_compare_labels_the_chain(four_block_dir, data_dir, tmp_path):
    out = tmp_path / "chain"
    recipe = {**_two_stages(), "eval_each_stage": True}
    report = run_recipe(recipe, model=str(four_block_dir), output=str(out), data_dir=data_dir, progress=False, **EVAL)
    dense = AutoModelForCausalLM.from_pretrained(four_block_dir)
    final = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True)
    first, second = report["lineage"]
    assert first["params_before"] == sum(p.numel() for p in dense.parameters())
    assert first["params_after"] == second["params_before"]
    assert second["params_after"] == sum(p.numel() for p in final.parameters()) == report["model"]["params_total"]
    assert (first["layers_before"], first["layers_after"], second["layers_after"]) == (4, 3, 3)
    assert first["input"] == str(four_block_dir) and second["input"] == "recipe stage 1 output"
    assert report["model"]["source"] == str(four_block_dir)          # bench and KL compare with the origin
    for stage in (first, second):
        assert stage["calibration"]["nsamples"] == 4 and stage["calibration"]["seqlen"] == 32
        assert stage["eval"]["wikitext2"]["protocol"] == "wt2-32/2"
    assert second["eval"]["wikitext2"]["ppl"] == report["eval"]["wikitext2"]["ppl"]
    assert second["config"]["keep"] == 0.8
    # compare: the run is labelled by its stages; the parameter fraction removed is the whole chain's
    run = {**json.loads((out / "prunekit_report.json").read_text()), "_name": "chain"}
    d = describe(run)
    assert d["method"] == "slm-rdsc+search"          # each stage as compare labels it alone
    assert d["x"] == pytest.approx(1 - second["params_after"] / first["params_before"])
    head, rows, _ = table([run])
    assert rows[0][1] == "slm-rdsc+search"
    page = write_page([str(out)], str(tmp_path / "page.md")).read_text()
    lineage_part = page.split("## Lineage", 1)[1]
    assert "**chain** (slm-rdsc+search)" in lineage_part
    assert "1. slm-rdsc: params" in lineage_part and "layers 4 -> 3" in lineage_part


def test_pruning_a_prunekit_output_carries_its_lineage(four_block_dir, data_dir, tmp_path):
    from prunekit.methods import ShortGPTConfig, WandaConfig
    a, b = tmp_path / "a", tmp_path / "b"
    prune_model(str(four_block_dir), ShortGPTConfig(remove_layers=1), **CAL, data_dir=data_dir, output=str(a),
                evals="none", progress=False)
    report = prune_model(str(a), WandaConfig(sparsity=0.5), **CAL, data_dir=data_dir, output=str(b), evals="none",
                         progress=False)
    assert [s["method"] for s in report["lineage"]] == ["shortgpt", "wanda"]
    assert [s["stage"] for s in report["lineage"]] == [1, 2]
    assert report["pruned_from"] == str(a) and report["model"]["source"] == str(four_block_dir)
    assert lineage.label(report["lineage"]) == "shortgpt+wanda"
    assert json.loads((b / "prunekit_report.json").read_text())["lineage"] == report["lineage"]
    assert "  lineage       shortgpt+wanda" in format_summary(report).splitlines()
    second = report["lineage"][1]
    assert second["params_before"] == second["params_after"] == report["model"]["params_total"]
    assert second["nonzero_after"] == report["model"]["params_nonzero"] < second["params_after"]
    evaluated = evaluate_model(str(b), evals="wikitext2", eval_seqlen=32, eval_windows=1, data_dir=data_dir)
    assert evaluated["lineage"] == report["lineage"]


def _no_work(*args, **kwargs):
    raise AssertionError("a bad recipe started work")


BAD = [
    ({"stages": [{"method": "slm", "remove_layers": 1}, {"method": "serch", "keep": 0.8}]},
     "recipe stage 2 (serch): unknown method"),
    ({"stages": [{"method": "slm", "remove_layers": 1}, {"method": "search", "kep": 0.8}]},
     "recipe stage 2 (search): kep does not apply to method search; it takes "),
    ({"stages": [{"method": "search", "keep": 1.5}]}, "recipe stage 1 (search): keep 1.5 is outside (0, 1]"),
    ({"stages": [{"method": "search", "keep": "most"}]}, "recipe stage 1 (search): keep must be a number"),
    ({"stages": [{"method": "search", "keep": 0.8}, {"method": "slm", "remove_layers": 1}]},
     "recipe stage 2 (slm): merges blocks' weights, but recipe stage 1 (search) leaves blocks of different widths"),
    ({"stages": [{"method": "wanda", "sparsity": 0.5}, {"method": "recover", "steps": 0}]},
     "recipe stage 2 (recover): --steps must be at least 1"),
    ({"stages": [{"method": "wanda", "sparsity": 0.5}, {"method": "recover", "data": "wikitext2:test"}]},
     "recipe stage 2 (recover): "),
    ({"stages": [{"method": "slm", "remove_layers": 1, "calibration": {"nsample": 4}}]},
     "recipe stage 1 (slm): unknown calibration key 'nsample'"),
    ({"stages": [{"method": "slm", "remove_layers": 1, "ratio": 0.5}]},
     "recipe stage 1 (slm): give remove_layers or ratio, not both"),
    ({"stages": []}, "recipe: `stages` must be a non-empty list"),
]


@pytest.mark.parametrize("recipe,message", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_recipes_are_refused_before_any_work(recipe, message, four_block_dir, data_dir, tmp_path, monkeypatch,
                                                  capsys):
    monkeypatch.setattr(prune_workflow, "prune_model", _no_work)
    monkeypatch.setattr("prunekit.models.loading.load_model", _no_work)
    out = tmp_path / "out"
    with pytest.raises(RecipeError) as e:
        run_recipe(recipe, model=str(four_block_dir), output=str(out), data_dir=data_dir, progress=False)
    assert str(e.value).startswith(message) and "\n" not in str(e.value)
    # the command line: the same line on stderr, exit code 2, nothing written
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(recipe))
    rc = main(["prune", "--recipe", str(path), "--model", str(four_block_dir), "--output", str(out),
               "--data-dir", data_dir])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err == f"prunekit prune: error: {e.value}"
    assert not out.exists() and not list(tmp_path.glob(".out.*"))


def test_cli_refuses_method_flags_with_a_recipe(four_block_dir, tmp_path, capsys):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(_two_stages()))
    rc = main(["prune", "--recipe", str(path), "--model", str(four_block_dir), "--keep", "0.5"])
    assert rc == 2 and "--keep does not go with --recipe" in capsys.readouterr().err
    rc = main(["prune", "--model", str(four_block_dir)])
    assert rc == 2 and "give --method or --recipe" in capsys.readouterr().err


@pytest.mark.slow
def test_slm_pipeline_example_runs_on_a_tiny_model(four_block_dir, data_dir, tmp_path, capsys):
    """The example file's stages (merge, then width, then recover), sized down for a tiny model."""
    recipe = yaml.safe_load((ROOT / "examples" / "slm-pipeline.yaml").read_text())
    assert [s["method"] for s in recipe["stages"]] == ["slm", "search", "recover"]
    load_recipe(ROOT / "examples" / "slm-pipeline.yaml")           # valid as shipped
    slm, search, rec = recipe["stages"]
    slm["remove_layers"] = 1
    search.update(SEARCH, calibration={"nsamples": 4, "seqlen": 32})
    rec.update(steps=2, seqlen=32, eval_every=1, save_every=1, warmup_steps=0, data="wikitext2:validation")
    recipe["calibration"]["nsamples"], recipe["calibration"]["seqlen"] = 4, 32
    path = tmp_path / "tiny-pipeline.yaml"
    path.write_text(yaml.safe_dump(recipe))
    out = tmp_path / "pipeline"
    rc = main(["prune", "--recipe", str(path), "--model", str(four_block_dir), "--output", str(out),
               "--data-dir", data_dir, "--eval-seqlen", "32", "--eval-windows", "2"])
    printed = capsys.readouterr().out
    assert rc == 0 and "lineage       slm-rdsc+search+lora" in printed
    report = json.loads((out / "prunekit_report.json").read_text())
    assert [s["method"] for s in report["lineage"]] == ["slm", "search-llm", "recover"]
    assert report["lineage"][2]["steps"] == 2 and report["lineage"][2]["tokens_seen"] == 2 * 2 * 2 * 32
    assert all("wikitext2" in s["eval"] for s in report["lineage"])        # eval_each_stage: true
    # the saved model reloads and computes what the final stage measured
    model = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True).eval()
    assert sum(p.numel() for p in model.parameters()) == report["lineage"][2]["params_after"]
    assert sorted(p.name for p in (out / "stages").glob("*.json")) == ["01-slm.json", "02-search.json",
                                                                       "03-recover.json"]
    assert (out / "stages" / "03-recover-recovery_loss.png").is_file()


def test_a_recipes_recover_stage_distils_the_dense_model_it_started_from(four_block_dir, data_dir, tmp_path):
    recipe = {"calibration": CAL, "stages": [
        {"method": "shortgpt", "remove_layers": 1},
        {"method": "recover", "data": "wikitext2:validation", "steps": 1, "seqlen": 32, "loss": "kd",
         "local": "first", "local_steps": 2, "local_windows": 2}]}
    report = run_recipe(recipe, model=str(four_block_dir), output=str(tmp_path / "out"), data_dir=data_dir,
                        progress=False, **EVAL)
    rec = report["recovery"]
    assert rec["teacher"] == str(four_block_dir)
    removed = report["lineage"][0]["method_section"]["removed"][0]
    spans = {tuple(b["dense_span"]) for b in rec["local"]["blocks"]}
    # the block before the removed one now stands for both (block 0 removed: the next one does)
    assert (0, 2) in spans if removed == 0 else (removed - 1, removed + 1) in spans
    assert lineage.stage_label(report["lineage"][-1]) == "local+lora-kd"
