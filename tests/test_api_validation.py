"""Issue 23, items 4 and 5. The Python API refuses a config field of the wrong type (at
construction, a ConfigError naming the field) and calibration ids that are not a 2-D integer
tensor inside the vocabulary (one PrunekitError line naming calibration) before any work. A
default window longer than the model's positions is shortened to them and the report and the
summary say so; a length the user gave is refused; an unknown evaluation set is named before any
window is checked. No test here needs the shared data folder: the tokenizer is trained on
generated text."""
import dataclasses
import json
import random
import typing

import numpy as np
import pytest
import torch

import prunekit
from prunekit import (ConfigError, MagnitudeConfig, PPLConfig, PrunekitError, SearchConfig, ShortGPTConfig,
                      SLMConfig, SparseGPTConfig, SparseLLMConfig, WandaConfig)
from prunekit.cli import flag_name as _flag_name, main
from prunekit.methods.options import _conform
from prunekit.methods.registry import all_methods
from prunekit.recovery import RecoveryConfig

from . import toy_random_method as toy
from .conftest import VOCAB, make_tiny_model

BAD_CONFIGS = [
    (lambda: WandaConfig(sparsity="0.5"), "sparsity", "must be a number"),
    (lambda: ShortGPTConfig(remove_layers=2.5), "remove_layers", "must be an integer"),
    (lambda: ShortGPTConfig(remove_layers=True), "remove_layers", "must be an integer"),
    (lambda: SparseGPTConfig(sparsity=0.5, blocksize=64.0), "blocksize", "must be an integer"),
    (lambda: SparseLLMConfig(sparsity=0.5, iterations="2"), "iterations", "must be an integer"),
    (lambda: PPLConfig(remove_layers=1, plus_heuristic="no"), "plus_heuristic", "must be true or false"),
    (lambda: SLMConfig(remove_layers=1, merge=None), "merge", "must be a string (got NoneType None)"),
    (lambda: SearchConfig(keep="0.8"), "keep", "must be a number"),
    (lambda: toy.RandomMaskConfig(sparsity=0.5, mask_seed=1.5), "mask_seed", "must be an integer"),
    (lambda: RecoveryConfig(steps=2.0), "steps", "must be an integer"),
]


@pytest.mark.parametrize("make,field,words", BAD_CONFIGS, ids=[b[1] + "-" + str(i) for i, b in enumerate(BAD_CONFIGS)])
def test_wrong_field_type_is_a_config_error_at_construction(make, field, words):
    with pytest.raises(ConfigError) as err:
        make()
    assert err.value.fields == [field]
    assert str(err.value).startswith(f"{field} {words}"), str(err.value)
    assert err.value.render(_flag_name).startswith("--" + field.replace("_", "-") + " "), \
        err.value.render(_flag_name)


def test_numbers_are_stored_as_the_annotated_type():
    assert type(WandaConfig(sparsity=0).sparsity) is float          # an int is a fine float
    assert type(WandaConfig(sparsity=np.float32(0.5)).sparsity) is float
    assert type(ShortGPTConfig(remove_layers=np.int64(2)).remove_layers) is int
    assert json.dumps(SparseGPTConfig(sparsity=np.float32(0.5), blocksize=np.int64(64)).to_dict())
    assert RecoveryConfig(lora_alpha=16).lora_alpha == 16.0


def test_every_default_fits_its_annotation():
    """The check is only as good as the annotations: every registered config's defaults (and
    RecoveryConfig's) must fit them, None only where Optional."""
    classes = [cls.config_class for cls in all_methods().values()] + [RecoveryConfig]
    for cfg in classes:
        hints = typing.get_type_hints(cfg)
        for f in dataclasses.fields(cfg):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            assert _conform(default, hints[f.name])[0], (cfg.__name__, f.name, default, hints[f.name])


def test_field_set_after_construction_is_refused_by_prune():
    model = make_tiny_model("llama")
    config = MagnitudeConfig(sparsity=0.5)
    config.sparsity = "0.5"
    with pytest.raises(ConfigError, match="^sparsity must be a number"):
        prunekit.prune(model, config, progress=False)


GOOD = torch.randint(3, VOCAB, (2, 16), generator=torch.Generator().manual_seed(0))
BAD_CALIBRATION = [
    (GOOD[0], "must be 2-D token ids [nsamples, seqlen] (got shape [16])"),
    (GOOD[None], "must be 2-D token ids [nsamples, seqlen] (got shape [1, 2, 16])"),
    (GOOD.float(), "must hold integer token ids (got dtype torch.float32)"),
    (GOOD.tolist(), "must be a Calibration or a 2-D integer torch tensor"),
    (GOOD[:, :0], "is empty (shape [2, 0])"),
    (torch.cat([GOOD, torch.full((1, 16), VOCAB)]), f"token ids must lie in [0, {VOCAB})"),
    (torch.cat([GOOD, torch.full((1, 16), -1)]), f"token ids must lie in [0, {VOCAB})"),
    (prunekit.Calibration(GOOD + VOCAB, "x", None, 0),
     f"these range over [{int(GOOD.min()) + VOCAB}, {int(GOOD.max()) + VOCAB}]"),
]


@pytest.mark.parametrize("calibration,message", BAD_CALIBRATION,
                         ids=["1-D", "3-D", "float", "list", "empty", "above vocab", "negative", "Calibration"])
def test_bad_calibration_is_one_line_naming_it(calibration, message):
    model = make_tiny_model("llama")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(PrunekitError) as err:
        prunekit.prune(model, WandaConfig(sparsity=0.5), calibration, progress=False)
    text = str(err.value)
    assert type(err.value) is PrunekitError and "\n" not in text
    assert text.startswith("calibration ") and message in text, text
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())      # nothing was pruned


def test_int32_calibration_and_the_check_function_for_streaming():
    from prunekit.data.calibration import checked_calibration_ids, input_vocab_size
    model = make_tiny_model("llama")
    assert input_vocab_size(model) == VOCAB
    ids = checked_calibration_ids(prunekit.Calibration(GOOD.int(), "x", None, 0), VOCAB)
    assert ids.dtype == torch.int64 and torch.equal(ids, GOOD)
    result = prunekit.prune(model, WandaConfig(sparsity=0.5), GOOD.int(), progress=False)
    assert result.sparsity["overall"] == pytest.approx(0.5)


# ---- item 5: default windows adapt to a model with fewer positions -------------------------------------------

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
        model = make_tiny_model("llama")
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


def test_eval_name_check_takes_every_known_set_and_its_own_split(tmp_path):
    from prunekit.workflows.common import check_eval_names
    (tmp_path / "mine.txt").write_text("some text")
    check_eval_names(["wikitext2", "ptb", "c4", "c4:train", "wikitext2:validation", str(tmp_path / "mine.txt")])
    for bad, message in (("c4:test", "dataset c4 has no split 'test'"), ("nosuchset", "unknown dataset 'nosuchset'"),
                         (str(tmp_path / "missing.txt"), "data file not found")):
        with pytest.raises(PrunekitError, match=message):
            check_eval_names([bad])


def test_recipe_refuses_an_unknown_eval_set_before_any_stage(small_world, tmp_path, monkeypatch):
    from prunekit.workflows import recipe
    monkeypatch.setattr(recipe, "_run_stage", lambda *a, **k: pytest.fail("a stage ran"))
    root, paths = small_world
    with pytest.raises(PrunekitError, match="unknown dataset 'nosuchset'"):
        prunekit.run_recipe({"stages": [{"method": "magnitude", "sparsity": 0.5}]}, model=str(paths[512]),
                            evals="nosuchset")
