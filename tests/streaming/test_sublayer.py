"""Streamed removal by sublayer writes what the in-memory run writes: the same DeciLM config,
the same tensors byte for byte, the shipped code; and the output loads and computes it."""
import json

import pytest
import torch
from transformers import AutoModelForCausalLM

import prunekit
from prunekit.methods import PPLConfig, ShortGPTConfig, SLEBConfig
from prunekit.streaming import stream_prune

from tests.helpers.checkpoints import calibration_ids, read_folder, save_folder
from tests.helpers.models import plain_model


@pytest.mark.parametrize("family", ["llama", "qwen2"])
@pytest.mark.parametrize("config", [ShortGPTConfig(keep=0.7, unit="sublayer"),
                                    SLEBConfig(remove_layers=3, unit="sublayer"),
                                    PPLConfig(remove_layers=3, unit="sublayer", plus_heuristic=False)])
def test_streamed_sublayer_removal_equals_in_memory(family, config, tokenizer, tmp_path):
    src = save_folder(plain_model(family, seed=2, layers=5), tokenizer, tmp_path / "src")
    ids = calibration_ids()
    model, _, _ = prunekit.load_model(str(src), "float32")
    res = prunekit.prune(model, config, ids, progress=False)
    streamed = stream_prune(str(src), config, ids, tmp_path / "out", progress=False)
    assert streamed.details["removed_units"] == res.details["removed_units"]
    memory_dir = tmp_path / "mem"
    res.model.save_pretrained(memory_dir)
    ours, theirs = read_folder(tmp_path / "out"), read_folder(memory_dir)
    assert set(ours) == set(theirs)
    for k in ours:
        assert torch.equal(ours[k].view(torch.uint8), theirs[k].view(torch.uint8)), k
    a = json.loads((tmp_path / "out" / "config.json").read_text())
    b = json.loads((memory_dir / "config.json").read_text())
    assert a["block_configs"] == b["block_configs"] and a["auto_map"] == b["auto_map"]
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "out", trust_remote_code=True, dtype=torch.float32)
    assert torch.equal(loaded(ids).logits, res.model(ids).logits)
