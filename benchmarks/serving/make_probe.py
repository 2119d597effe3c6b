"""A small random Qwen2 (q/k/v biases, no o_proj bias) written by prunekit in the Nemotron-NAS
(DeciLM) layout, with one attention-free block and one block with fewer KV heads: does vLLM's
DeciLM class honour the q/k/v biases, and does llama.cpp? Weights and biases are drawn large so
that a bias left out changes the greedy tokens.

    python serving/make_probe.py TOKENIZER_DIR OUT_DIR
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2Config

from prunekit.models.adapter import ModelAdapter
from prunekit.models.decilm import BlockShape, to_decilm


def main() -> None:
    tok_dir, out = sys.argv[1], sys.argv[2]
    tok = AutoTokenizer.from_pretrained(tok_dir)
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=len(tok), hidden_size=256, intermediate_size=512, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.normal_(0, 0.08)
            elif name.endswith("bias"):
                p.normal_(0, 0.5)
    a = ModelAdapter(model)
    shapes = [BlockShape(2, 512), BlockShape(0, 512), BlockShape(1, 512), BlockShape(2, 256)]
    blocks = list(a.layers)
    hd = a.dim("head_dim")
    with torch.no_grad():        # block 2 keeps KV head 0, block 3 the first 256 MLP channels
        for lin in (blocks[2].self_attn.k_proj, blocks[2].self_attn.v_proj):
            lin.weight.data, lin.bias.data = lin.weight[:hd].clone(), lin.bias[:hd].clone()
            lin.out_features = hd
        mlp = blocks[3].mlp
        for lin in (mlp.gate_proj, mlp.up_proj):
            lin.weight.data, lin.out_features = lin.weight[:256].clone(), 256
        mlp.down_proj.weight.data, mlp.down_proj.in_features = mlp.down_proj.weight[:, :256].clone(), 256
    small = to_decilm(a, blocks, shapes)
    small.save_pretrained(out)
    tok.save_pretrained(out)
    print(f"wrote {out}: qkv_bias {small.config.qkv_bias}, attention_bias {small.config.attention_bias}")
    # the negative control: the same model without its biases, greedy on the harness's prompt
    ids = torch.tensor([tok("The capital of France is", add_special_tokens=False)["input_ids"]])
    greedy = lambda: small.generate(ids, max_new_tokens=16, do_sample=False)[0, ids.shape[1]:].tolist()
    with_bias = greedy()
    with torch.no_grad():
        for name, p in small.named_parameters():
            if name.endswith("bias"):
                p.zero_()
    without = greedy()
    control = {"tokens": with_bias, "tokens_without_biases": without,
               "differ": sum(a != b for a, b in zip(with_bias, without))}
    (Path(out) / "bias_control.json").write_text(json.dumps(control) + "\n")
    print(f"without its biases {control['differ']} of 16 greedy tokens differ")


if __name__ == "__main__":
    main()
