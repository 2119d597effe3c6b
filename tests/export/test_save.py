"""Saving a checkpoint: an interrupted save leaves nothing behind."""
import pytest
from transformers import AutoModelForCausalLM


def test_interrupted_save_leaves_nothing(tiny_model_dir, tmp_path, monkeypatch):
    from prunekit.export import save as save_mod
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)

    def boom(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(model, "save_pretrained", boom)
    before = sorted(tmp_path.iterdir())
    with pytest.raises(KeyboardInterrupt):
        save_mod.save_checkpoint(model, None, {}, tmp_path / "out")
    assert sorted(tmp_path.iterdir()) == before
