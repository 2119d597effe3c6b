"""A default window longer than the model's positions is shortened to them and the report and the
summary say so; a length the user gave is refused; an unknown evaluation set is named before any
window is checked (prune, eval, recipes). No test here needs the shared data folder: the tokenizer
is trained on generated text."""
import json
import random

import pytest

import prunekit
from prunekit import PrunekitError
from prunekit.cli import main

from tests.helpers.models import VOCAB, plain_model


WORDS = ("the of and to in is was for on as with by at from that his her they this which were are first "
         "city river north years music album season team game war king church school film station line").split()


def _text(seed: int, words: int) -> str:
    rng = random.Random(seed)
    return "\n".join(" ".join(rng.choice(WORDS) for _ in range(12)) + " ." for _ in range(words // 12))


@pytest.fixture(scope="module")
def small_world(tmp_path_factory):
    """A tiny Llama with 512 positions (and one with 256) with a tokenizer trained on generated
    text, plus a calibration and an evaluation text file of a few thousand tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    root = tmp_path_factory.mktemp("positions")
    tk = Tokenizer(models.BPE(unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.train_from_iterator(_text(0, 3000).split("\n"), trainers.BpeTrainer(
        vocab_size=VOCAB, special_tokens=["<pad>", "<s>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                  unk_token="<unk>")
    paths = {}
    for positions in (512, 256):
        model = plain_model("llama")
        model.config.max_position_embeddings = positions
        paths[positions] = root / f"tiny-{positions}"
        model.save_pretrained(paths[positions])
        tok.save_pretrained(paths[positions])
    (root / "calib.txt").write_text(_text(1, 3000))
    (root / "eval.txt").write_text(_text(2, 3000))
    assert model.config.max_position_embeddings == 256 and len(tok(_text(2, 3000))["input_ids"]) > 1200
    return root, paths


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


def _prune_args(root, model, out, *extra):
    return ["prune", "--model", str(model), "--method", "wanda", "--sparsity", "0.5", "--calib",
            str(root / "calib.txt"), "--nsamples", "2", "--eval", str(root / "eval.txt"), "--eval-windows", "1",
            "--output", str(out), *extra]


def test_default_windows_adapt_to_the_model_positions(small_world, tmp_path, capsys):
    root, paths = small_world
    out = tmp_path / "out"
    assert main(_prune_args(root, paths[512], out)) == 0      # neither --seqlen (wanda: 2048) nor --eval-seqlen
    summary = capsys.readouterr().out
    report = json.loads((out / "prunekit_report.json").read_text())
    note = "default 2048 shortened to the model's 512 positions"
    assert report["calibration"]["seqlen"] == 512 and report["calibration"]["window_note"] == note
    ev = report["eval"][str(root / "eval.txt")]
    assert ev["seqlen"] == 512 and ev["protocol"] == "eval.txt-512/1" and ev["window_note"] == note
    assert f"2 x 512 seed 0 ({note})" in summary and f"[eval.txt-512/1, {note}]" in summary, summary


def test_window_given_longer_than_the_positions_is_refused(small_world, tmp_path, capsys, monkeypatch):
    from prunekit.workflows import prune as prune_workflow
    monkeypatch.setattr(prune_workflow, "prune", lambda *a, **k: pytest.fail("the pruning started"))
    root, paths = small_world
    for flag in ("--eval-seqlen", "--seqlen"):
        capsys.readouterr()
        assert main(_prune_args(root, paths[512], tmp_path / "out", flag, "2048")) == 2
        line = _one_line(capsys)
        assert line == (f"prunekit prune: error: {flag} 2048 is longer than the model's 512 positions "
                        f"(max_position_embeddings); use at most 512"), line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("extra", [[], ["--eval-seqlen", "1024"]], ids=["default window", "window given"])
def test_unknown_eval_set_is_named_before_the_window(small_world, tmp_path, capsys, extra):
    root, paths = small_world
    args = _prune_args(root, paths[512], tmp_path / "out", *extra)
    args[args.index("--eval") + 1] = "nosuchset"
    assert main(args) == 2
    line = _one_line(capsys)
    assert line.startswith("prunekit prune: error: unknown dataset 'nosuchset'"), line
    capsys.readouterr()
    assert main(["eval", "--model", str(paths[512]), "--eval", "nosuchset", *extra]) == 2
    assert _one_line(capsys).startswith("prunekit eval: error: unknown dataset 'nosuchset'")


def test_eval_defaults_adapt_perplexity_and_kl(small_world, tmp_path, capsys):
    root, paths = small_world
    model, dense = str(paths[256]), str(paths[512])
    assert main(["eval", "--model", model, "--eval", f"{root / 'eval.txt'},kl", "--eval-windows", "1",
                 "--dense", dense, "--kl-data", str(root / "eval.txt"), "--kl-nsamples", "1",
                 "--output", str(tmp_path / "ev")]) == 0
    summary = capsys.readouterr().out
    report = json.loads((tmp_path / "ev" / "prunekit_report.json").read_text())
    ev, kl = report["eval"][str(root / "eval.txt")], report["kl"]
    assert ev["protocol"] == "eval.txt-256/1" and ev["window_note"] == "default 2048 shortened to the model's 256 positions"
    assert kl["data"]["seqlen"] == 256 and kl["tokens"] == 256
    assert kl["window_note"] == "default 512 shortened to the model's 256 positions"
    assert "windows of 256, default 512 shortened to the model's 256 positions" in summary, summary
    capsys.readouterr()
    assert main(["eval", "--model", model, "--eval", "kl", "--dense", dense, "--kl-data", str(root / "eval.txt"),
                 "--kl-seqlen", "512"]) == 2
    assert "--kl-seqlen 512 is longer than the model's 256 positions" in _one_line(capsys)


def test_recipe_refuses_an_unknown_eval_set_before_any_stage(small_world, tmp_path, monkeypatch):
    from prunekit.workflows import recipe
    monkeypatch.setattr(recipe, "_run_stage", lambda *a, **k: pytest.fail("a stage ran"))
    root, paths = small_world
    with pytest.raises(PrunekitError, match="unknown dataset 'nosuchset'"):
        prunekit.run_recipe({"stages": [{"method": "magnitude", "sparsity": 0.5}]}, model=str(paths[512]),
                            evals="nosuchset")
