"""Recovery data: evaluation data refused by name and by file, Alpaca prompts masked exactly."""
import json
import shutil

import pytest

from prunekit.errors import PrunekitError
from prunekit.recovery import RecoveryConfig, recover
from prunekit.recovery.data import IGNORE, alpaca_example, alpaca_prompt, build_training_data
from prunekit.recovery.train import pad_collator


TINY = dict(seqlen=32, eval_every=2, save_every=2, warmup_steps=0)


def test_evaluation_data_is_refused_by_name_and_by_file(tokenizer, data_dir, tmp_path):
    cfg = RecoveryConfig(steps=1, **TINY)
    for spec in ("wikitext2:test", "ptb:test", "c4:validation"):
        with pytest.raises(PrunekitError, match="evaluation set"):
            build_training_data(spec, tokenizer, cfg, data_dir)
    with pytest.raises(PrunekitError, match="evaluation"):
        build_training_data(f"{data_dir}/wikitext2/test.txt", tokenizer, cfg, data_dir)
    copy_of_test = tmp_path / "my_text.txt"
    shutil.copy(f"{data_dir}/wikitext2/test.txt", copy_of_test)
    with pytest.raises(PrunekitError, match="same content as the evaluation file"):
        build_training_data(str(copy_of_test), tokenizer, cfg, data_dir)
    task_copy = tmp_path / "rows.jsonl"
    shutil.copy(f"{data_dir}/tasks/piqa/validation.jsonl", task_copy)
    with pytest.raises(PrunekitError, match="same content"):
        build_training_data(str(task_copy), tokenizer, cfg, data_dir)
    allowed = tmp_path / "allowed.txt"
    shutil.copy(f"{data_dir}/wikitext2/validation.txt", allowed)
    assert build_training_data(str(allowed), tokenizer, cfg, data_dir).train
    with pytest.raises(PrunekitError, match="evaluation set"):     # before any model is loaded
        recover("no-such-model-folder/x", cfg, data="wikitext2:test", data_dir=data_dir)


def test_alpaca_prompt_tokens_are_masked_exactly(tokenizer, tmp_path, data_dir):
    rows = [{"instruction": "Name a colour.", "input": "", "output": "Blue is a colour."},
            {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"}]
    for row in rows:
        ex = alpaca_example(tokenizer, row, 512)
        prompt = tokenizer(alpaca_prompt(row))["input_ids"]
        n = len(prompt)
        assert ex["input_ids"][:n] == prompt
        assert ex["labels"][:n] == [IGNORE] * n
        assert ex["labels"][n:] == ex["input_ids"][n:] and IGNORE not in ex["labels"][n:]
        assert ex["input_ids"][-1] == tokenizer.eos_token_id
        assert tokenizer.decode(ex["input_ids"][n:-1]) == row["output"]
    assert "### Input:\n2 and 3" in alpaca_prompt(rows[1]) and "### Input" not in alpaca_prompt(rows[0])
    path = tmp_path / "alpaca.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows * 5) + "\n")
    data = build_training_data(str(path), tokenizer, RecoveryConfig(steps=2, **{**TINY, "seqlen": 512}), data_dir)
    assert data.info["format"] == "alpaca" and len(data.train) + len(data.validation) == 10
    lens = [len(tokenizer(alpaca_prompt(r))["input_ids"]) for r in rows]
    assert lens[0] + 2 < lens[1]
    short = build_training_data(str(path), tokenizer, RecoveryConfig(steps=2, **{**TINY, "seqlen": lens[0] + 2}),
                                data_dir)                 # rows whose prompt fills the cutoff teach nothing
    assert short.info["dropped_prompt_too_long"] == 5 and len(short.train) + len(short.validation) == 5
    with pytest.raises(PrunekitError, match="every Alpaca prompt"):
        build_training_data(str(path), tokenizer, RecoveryConfig(steps=2, **TINY), data_dir)
    batch = pad_collator(0)(data.train[:4])
    pad = batch["attention_mask"] == 0
    assert bool((batch["labels"][pad] == IGNORE).all())
