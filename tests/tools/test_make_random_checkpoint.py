"""tools/make_random_checkpoint.py writes what from_pretrained reads."""
import torch

from tests.helpers.checkpoints import (random_checkpoint_module as _random_checkpoint_module,
                                       write_random_llama as _write_random_llama)


def test_random_checkpoint_script_writes_what_from_pretrained_reads(tokenizer, tmp_path):
    from transformers import AutoModelForCausalLM

    mk = _random_checkpoint_module()
    shape = mk.shape_for(1e9)
    assert abs(shape["total"] - 1e9) / 1e9 < 0.05          # the parameter count asked for, within 5%
    _write_random_llama(tmp_path / "rand", tokenizer, layers=3, hidden=128, inter=384, dtype=torch.bfloat16,
                        shard_bytes=200_000)
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "rand", dtype="auto")
    sd = model.state_dict()
    name = "model.layers.1.mlp.up_proj.weight"
    assert sd[name].dtype == torch.bfloat16
    assert torch.equal(sd[name], mk.make_tensor(name, (384, 128), torch.bfloat16, 0))
    assert torch.equal(sd["model.norm.weight"], torch.ones(128, dtype=torch.bfloat16))
    assert len(list((tmp_path / "rand").glob("*.safetensors"))) > 3
