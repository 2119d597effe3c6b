"""Tiny random models, one factory for every family in FAMILIES. By default each keeps its
family's real structure: sliding windows shorter than the test window, several layer types with
their own masks and rotary bases, head_dim != hidden / heads where the family allows it, fused
projections (Phi-3), biases (OPT), soft-capping (Gemma 2). Small in every dimension.

    tiny_model("gemma3")            # 5 blocks, intermediate 96, 256 positions, windowed
    plain_model("llama")            # 3 blocks, intermediate 128, 512 positions, full attention
                                    # everywhere: the sizes the per-family method tests assert on

`plain_model` is `tiny_model` with the PLAIN settings, not a second factory."""
from __future__ import annotations

import torch

VOCAB = 384
WINDOW = 16          # test window: longer than every sliding window below
SLIDING = 5
LAYERS = 5

FAMILIES = ["llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3", "phi3", "opt"]
ADAPTED_FAMILIES = list(FAMILIES)   # the ones prunekit's adapter accepts: all of them
NO_SDPA = {"gemma2"}    # transformers refuses sdpa for Gemma 2 (attention logit soft-capping)
# The `family` fixture's families: the per-family method tests (engine, methods, streaming, width,
# depth merges) were written and sized for these; Gemma 2/3 and Phi-3 are covered family by family
# by the structured tests (engine arguments, the method x family matrix).
FIXTURE_FAMILIES = ["llama", "mistral", "qwen2", "qwen3", "opt"]
assert set(FIXTURE_FAMILIES) <= set(FAMILIES)

# what the per-family method tests were sized for: 3 blocks (plain_model's default), intermediate
# 128, 512 positions, full attention in every block, head_dim equal to hidden / heads
PLAIN = dict(windowed=False, intermediate=128, positions=512, head_dim=16)


def _types(layers: int, pattern: str) -> list[str]:
    """'ssf' -> sliding, sliding, full, sliding, sliding, full, ..."""
    names = {"s": "sliding_attention", "f": "full_attention"}
    return [names[pattern[i % len(pattern)]] for i in range(layers)]


def _common(intermediate: int, positions: int) -> dict:
    return dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=intermediate, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=positions, bos_token_id=1, eos_token_id=2,
                pad_token_id=0)


def _llama(n, c, windowed, head_dim):
    from transformers import LlamaConfig
    return LlamaConfig(**c, num_hidden_layers=n, head_dim=head_dim, tie_word_embeddings=False)


def _mistral(n, c, windowed, head_dim):
    from transformers import MistralConfig
    return MistralConfig(**c, num_hidden_layers=n, sliding_window=SLIDING if windowed else None,
                         tie_word_embeddings=False)


def _qwen2(n, c, windowed, head_dim):
    from transformers import Qwen2Config
    if not windowed:
        return Qwen2Config(**c, num_hidden_layers=n, tie_word_embeddings=False)
    # Qwen2's own rule: layers from max_window_layers on use the sliding window
    return Qwen2Config(**c, num_hidden_layers=n, use_sliding_window=True, sliding_window=SLIDING,
                       max_window_layers=2, tie_word_embeddings=False)


def _qwen3(n, c, windowed, head_dim):
    from transformers import Qwen3Config
    if not windowed:
        return Qwen3Config(**c, num_hidden_layers=n, head_dim=head_dim or 24, tie_word_embeddings=False)
    return Qwen3Config(**c, num_hidden_layers=n, head_dim=head_dim or 24, use_sliding_window=True,
                       sliding_window=SLIDING, layer_types=_types(n, "sf"), tie_word_embeddings=False)


def _gemma2(n, c, windowed, head_dim):
    from transformers import Gemma2Config
    head_dim = head_dim or 24
    return Gemma2Config(**c, num_hidden_layers=n, head_dim=head_dim, sliding_window=SLIDING,
                        layer_types=_types(n, "sf" if windowed else "f"), query_pre_attn_scalar=head_dim,
                        attn_logit_softcapping=50.0, final_logit_softcapping=30.0, tie_word_embeddings=True)


def _gemma3(n, c, windowed, head_dim):
    from transformers import Gemma3TextConfig
    head_dim = head_dim or 24
    # local and global layers: other masks, other rotary bases, linear rope scaling on the global ones
    rope = {"sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
            "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1_000_000.0}}
    return Gemma3TextConfig(**c, num_hidden_layers=n, head_dim=head_dim, sliding_window=SLIDING,
                            layer_types=_types(n, "ssf" if windowed else "f"), rope_parameters=rope,
                            query_pre_attn_scalar=head_dim, tie_word_embeddings=True)


def _phi3(n, c, windowed, head_dim):
    from transformers import Phi3Config
    return Phi3Config(**c, num_hidden_layers=n, sliding_window=SLIDING if windowed else None,
                      original_max_position_embeddings=c["max_position_embeddings"], tie_word_embeddings=False)


def _opt(n, c, windowed, head_dim):
    from transformers import OPTConfig
    return OPTConfig(vocab_size=VOCAB, hidden_size=64, ffn_dim=c["intermediate_size"], num_hidden_layers=n,
                     num_attention_heads=4, max_position_embeddings=c["max_position_embeddings"],
                     word_embed_proj_dim=64, bos_token_id=1, eos_token_id=2, pad_token_id=0, enable_bias=True)


_BUILDERS = {"llama": _llama, "mistral": _mistral, "qwen2": _qwen2, "qwen3": _qwen3, "gemma2": _gemma2,
             "gemma3": _gemma3, "phi3": _phi3, "opt": _opt}
assert list(_BUILDERS) == FAMILIES


def tiny_config(family: str, layers: int = LAYERS, *, windowed: bool = True, intermediate: int = 96,
                positions: int = 256, head_dim: int | None = None):
    """The config of `family`. `windowed=False`: full attention in every block (no sliding window,
    one layer type); `head_dim`: for Llama (default hidden / heads), Qwen3 and Gemma (default 24,
    not hidden / heads)."""
    if family not in _BUILDERS:
        raise ValueError(f"unknown tiny family {family!r}: choose from {FAMILIES}")
    return _BUILDERS[family](layers, _common(intermediate, positions), windowed, head_dim)


def tiny_model(family: str, layers: int = LAYERS, attn: str | None = None, seed: int = 0, **sizes):
    """A random model of `family` in eval mode, float32, cache off; `attn`: the attention
    implementation (None: transformers' default for the family); `sizes`: tiny_config's options."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(family, layers, **sizes), dtype=torch.float32,
                                             **({"attn_implementation": attn} if attn else {}))
    with torch.no_grad():   # larger-than-default init so that pruning, a wrong mask or rotary visibly change outputs
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.08)
    model.eval()
    model.config.use_cache = False
    return model


def plain_model(family: str, seed: int = 0, layers: int | None = None):
    """tiny_model with the PLAIN settings: 3 blocks unless `layers` says otherwise."""
    return tiny_model(family, 3 if layers is None else layers, seed=seed, **PLAIN)


def unknown_model(family: str):
    """Tiny models of layouts prunekit does not describe: GPT-2, GPT-NeoX, a mixture of experts."""
    if family == "gpt2":
        from transformers import GPT2Config, GPT2LMHeadModel
        return GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=50))
    if family == "gpt_neox":
        from transformers import GPTNeoXConfig, GPTNeoXForCausalLM
        return GPTNeoXForCausalLM(GPTNeoXConfig(num_hidden_layers=1, hidden_size=32, num_attention_heads=2,
                                                intermediate_size=64, vocab_size=50))
    from transformers import MixtralConfig, MixtralForCausalLM
    return MixtralForCausalLM(MixtralConfig(num_hidden_layers=1, hidden_size=32, num_attention_heads=2,
                                            num_key_value_heads=1, intermediate_size=64, vocab_size=50,
                                            num_local_experts=2, num_experts_per_tok=1))


def generate_step_lengths(model, prompt_len: int = 5, new_tokens: int = 4) -> list[int]:
    """Tokens fed to the model at each step of a default generate() call (no use_cache argument,
    so the checkpoint's own settings decide): [prompt_len, 1, 1, ...] when it decodes with a KV
    cache, growing lengths when it re-runs the whole sequence."""
    seen = []
    handle = model.get_input_embeddings().register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[1]))
    x = torch.randint(3, model.config.vocab_size, (1, prompt_len), generator=torch.Generator().manual_seed(0))
    try:
        with torch.no_grad():
            model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=new_tokens,
                           min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
    finally:
        handle.remove()
    return seen
