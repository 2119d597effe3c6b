"""What a user reads when something is off: outputs that would destroy the input, calibration that
cannot fit, interrupted runs that keep resumable state, resumes that cannot go on, labels that
would collide, and the layer counts of the summary. Needs no data folder."""
import json
import shutil
from pathlib import Path

import pytest
import torch

from prunekit.cli import main
from prunekit.errors import PrunekitError
from prunekit.methods import MagnitudeConfig, WandaConfig
from prunekit.streaming import partial_dir, stream_prune

from tests.helpers.models import VOCAB

MAG = ["--method", "magnitude", "--sparsity", "0.5", "--eval", "none"]


def _ids(n=4, length=32, seed=0):
    return torch.randint(3, VOCAB, (n, length), generator=torch.Generator().manual_seed(seed))


def _stderr_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("prunekit")]
    assert len(err) == 1, err
    return err[0]


def _interrupt_after(monkeypatch, units: int):
    """Ctrl-C after `units` streamed units are durably written."""
    from prunekit.streaming.blocks import StreamedBlocks

    real, seen = StreamedBlocks.finish_unit, []

    def finish(self, finished, payload=None):
        real(self, finished, payload)
        seen.append(finished)
        if len(seen) == units:
            raise KeyboardInterrupt
    monkeypatch.setattr(StreamedBlocks, "finish_unit", finish)


def test_interrupted_stream_says_where_its_resumable_state_is(word_model_dir, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    _interrupt_after(monkeypatch, 2)
    args = ["prune", "--model", str(word_model_dir), "--method", "wanda", "--sparsity", "0.5", "--calib",
            str(_calib_file(tmp_path)), "--nsamples", "4", "--seqlen", "32", "--eval", "none", "--stream",
            "--output", str(out)]
    assert main(args) == 130
    line = _stderr_line(capsys)
    kept = partial_dir(out.resolve())
    assert kept.is_dir() and str(kept) in line and "--resume" in line and "nothing was written" not in line
    monkeypatch.undo()
    assert main(args + ["--resume"]) == 0
    assert (out / "config.json").is_file() and not kept.exists()


def _calib_file(tmp_path: Path) -> Path:
    import random
    rng = random.Random(0)
    f = tmp_path / "calib.txt"
    f.write_text("\n".join(" ".join(f"t{rng.randrange(4, VOCAB)}" for _ in range(80)) for _ in range(30)))
    return f


def test_resume_with_another_method_names_the_method(word_model_dir, tmp_path, monkeypatch):
    out = tmp_path / "out"
    _interrupt_after(monkeypatch, 1)
    with pytest.raises(KeyboardInterrupt) as interrupted:
        stream_prune(str(word_model_dir), WandaConfig(sparsity=0.5), _ids(), out, progress=False)
    assert interrupted.value.resumable == str(partial_dir(out.resolve()))
    monkeypatch.undo()
    with pytest.raises(PrunekitError, match=r"different settings \(method: 'wanda' then, 'magnitude' now\)"):
        stream_prune(str(word_model_dir), MagnitudeConfig(sparsity=0.5), None, out, resume=True, progress=False)


def test_resume_on_a_complete_output_says_it_is_complete(word_model_dir, tmp_path):
    out = tmp_path / "out"
    stream_prune(str(word_model_dir), MagnitudeConfig(sparsity=0.5), None, out, progress=False)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(PrunekitError, match="already complete"):
        stream_prune(str(word_model_dir), MagnitudeConfig(sparsity=0.5), None, out, resume=True, progress=False)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_compare_labels_runs_sharing_a_folder_name_apart(word_model_dir, tmp_path, capsys):
    for parent in ("a", "b"):
        assert main(["prune", "--model", str(word_model_dir), *MAG, "--output", str(tmp_path / parent / "run")]) == 0
    capsys.readouterr()
    page = tmp_path / "page.md"
    assert main(["compare", str(tmp_path / "a" / "run"), str(tmp_path / "b" / "run"), "--output", str(page)]) == 0
    rows = [line.split(" | ")[0] for line in page.read_text().splitlines() if line.startswith("| ")]
    assert "| a/run" in rows and "| b/run" in rows


def test_summary_gives_the_layer_counts_before_and_after(word_model_dir, tmp_path, capsys):
    args = ["prune", "--model", str(word_model_dir), "--method", "shortgpt", "--remove-layers", "1", "--calib",
            str(_calib_file(tmp_path)), "--nsamples", "2", "--seqlen", "32", "--eval", "none"]
    for extra in ([], ["--stream", "--output", str(tmp_path / "streamed")]):
        assert main(args + extra) == 0
        first = capsys.readouterr().out.splitlines()[0]
        assert "(LlamaForCausalLM, 4 layers, 3 after pruning)" in first, first


def _tree(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("where", ["is", "inside", "contains"])
@pytest.mark.parametrize("command", ["prune", "prune-stream", "recover", "recipe", "eval"])
def test_an_output_overlapping_the_input_is_refused_and_the_input_kept(command, where, word_model_dir, tmp_path,
                                                                       capsys):
    root = tmp_path / "work"
    model = root / "model"
    shutil.copytree(word_model_dir, model)
    output = {"is": model, "inside": model / "out", "contains": root}[where]
    before = _tree(root)
    calib = _calib_file(tmp_path)
    args = {
        "prune": ["prune", "--model", str(model), *MAG, "--output", str(output), "--overwrite"],
        "prune-stream": ["prune", "--model", str(model), *MAG, "--stream", "--output", str(output), "--overwrite"],
        "recover": ["recover", "--model", str(model), "--data", str(calib), "--steps", "1", "--seqlen", "32",
                    "--eval", "none", "--output", str(output), "--overwrite"],
        "recipe": ["prune", "--recipe", str(_recipe(tmp_path)), "--model", str(model), "--eval", "none",
                   "--output", str(output), "--overwrite"],
        "eval": ["eval", "--model", str(model), "--eval", "none", "--output", str(output), "--overwrite"],
    }[command]
    assert main(args) == 2
    line = _stderr_line(capsys)
    assert "--model" in line and "would destroy that input" in line
    assert _tree(root) == before


def _recipe(tmp_path: Path) -> Path:
    f = tmp_path / "recipe.yaml"
    f.write_text("stages:\n  - method: magnitude\n    sparsity: 0.5\n")
    return f


def test_kl_and_bench_against_the_model_itself_are_refused(word_model_dir, tmp_path, capsys):
    out = tmp_path / "pruned"
    assert main(["prune", "--model", str(word_model_dir), *MAG, "--output", str(out)]) == 0
    capsys.readouterr()
    assert main(["eval", "--model", str(out), "--eval", "kl", "--dense", str(out)]) == 2
    assert "--dense" in _stderr_line(capsys)
    assert main(["bench", "--model", str(out), "--baseline", str(out)]) == 2
    assert "--baseline" in _stderr_line(capsys)


@pytest.mark.parametrize("stream", [[], ["--stream"]])
def test_calibration_that_cannot_fit_is_refused_at_once(stream, word_model_dir, tmp_path, capsys):
    import time
    start = time.perf_counter()
    code = main(["prune", "--model", str(word_model_dir), "--method", "wanda", "--sparsity", "0.5",
                 "--calib", str(_calib_file(tmp_path)), "--nsamples", "100000000", "--seqlen", "64", "--eval", "none",
                 "--output", str(tmp_path / "out"), *stream])
    assert code == 2 and time.perf_counter() - start < 30
    line = _stderr_line(capsys)
    assert "--nsamples 100000000 × --seqlen 64 cannot fit" in line
    assert not (tmp_path / "out").exists() and not partial_dir((tmp_path / "out").resolve()).exists()


def test_calibration_bound_is_ids_and_two_activation_copies():
    from prunekit.workflows.budget import calibration_bytes, check_calibration_fits
    from tests.helpers.models import plain_model

    assert calibration_bytes(3, 5, 7, 4) == 3 * 5 * (8 + 2 * 7 * 4)
    model = plain_model("llama")                     # hidden 64, float32
    need = calibration_bytes(10, 32, 64, 4)
    check_calibration_fits(model, 10, 32, available=need)
    with pytest.raises(PrunekitError, match="--nsamples 10 × --seqlen 32 cannot fit"):
        check_calibration_fits(model, 10, 32, available=need - 1)


@pytest.mark.parametrize("bad, words", [(torch.arange(32), "2-D"), (torch.rand(2, 32), "integer"),
                                       (torch.full((2, 32), VOCAB), "must lie in [0, 384)")])
def test_streamed_calibration_is_checked_before_any_work(bad, words, word_model_dir, tmp_path):
    with pytest.raises(PrunekitError, match="calibration") as e:
        stream_prune(str(word_model_dir), WandaConfig(sparsity=0.5), bad, tmp_path / "out", progress=False)
    assert words in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "out").exists() and not partial_dir((tmp_path / "out").resolve()).exists()


def _short_model(tmp_path: Path, positions: int) -> Path:
    from tests.helpers.models import plain_model
    from tests.helpers.tokenizers import word_tokenizer
    model = plain_model("llama", layers=2)
    model.config.max_position_embeddings = positions
    path = tmp_path / f"tiny-{positions}"
    model.save_pretrained(path)
    word_tokenizer().save_pretrained(path)
    return path


def test_analyze_and_bench_defaults_adapt_to_few_positions(tmp_path, capsys):
    model = _short_model(tmp_path, 96)
    out = tmp_path / "analysis"
    assert main(["analyze", "--model", str(model), "--calib", str(_calib_file(tmp_path)), "--nsamples", "2",
                 "--output", str(out)]) == 0
    report = json.loads((out / "analysis.json").read_text())
    assert report["calibration"]["seqlen"] == 96 and "shortened" in report["calibration"]["window_note"]
    measured = tmp_path / "bench.json"
    assert main(["bench", "--model", str(model), "--reps", "1", "--warmup", "0", "--new-tokens", "8",
                 "--output", str(measured)]) == 0
    settings = json.loads(measured.read_text())["pruned"]["settings"]
    assert settings["seqlen"] == 96 and settings["prompt_len"] == 96 - 8
    capsys.readouterr()
    assert main(["bench", "--model", str(model), "--seqlen", "512"]) == 2      # a length given is refused
    assert "--seqlen 512 is longer than the model's 96 positions" in _stderr_line(capsys)
