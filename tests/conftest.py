"""Shared fixtures: tiny random models of every supported family, a small tokenizer, the data folder."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a hub; fail fast if code tries

SHARED_DATA = Path(os.environ.get("PRUNEKIT_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data")
VOCAB = 384


def tiny_config(family: str):
    from transformers import LlamaConfig, MistralConfig, OPTConfig, Qwen2Config, Qwen3Config

    common = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                  tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    if family == "llama":
        return LlamaConfig(**common)
    if family == "mistral":
        return MistralConfig(**common, sliding_window=None)
    if family == "qwen2":
        return Qwen2Config(**common)
    if family == "qwen3":
        return Qwen3Config(**common, head_dim=16)
    if family == "opt":
        return OPTConfig(vocab_size=VOCAB, hidden_size=64, ffn_dim=128, num_hidden_layers=3, num_attention_heads=4,
                         max_position_embeddings=512, word_embed_proj_dim=64, bos_token_id=1, eos_token_id=2,
                         pad_token_id=0, enable_bias=True)
    raise ValueError(family)


FAMILIES = ["llama", "mistral", "qwen2", "qwen3", "opt"]


def make_tiny_model(family: str, seed: int = 0, layers: int | None = None):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    cfg = tiny_config(family)
    if layers is not None:
        cfg.num_hidden_layers = layers
        if getattr(cfg, "layer_types", None) is not None:
            cfg.layer_types = [cfg.layer_types[0]] * layers
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    # larger-than-default init so that pruning visibly changes the outputs
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.08)
    model.eval()
    model.config.use_cache = False
    return model


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


@pytest.fixture(params=FAMILIES)
def family(request):
    return request.param


@pytest.fixture(scope="session")
def data_dir():
    if not (SHARED_DATA / "wikitext2" / "test.txt").is_file():
        pytest.skip(f"shared data folder not found at {SHARED_DATA}")
    return str(SHARED_DATA)


@pytest.fixture(scope="session")
def tokenizer(tmp_path_factory, data_dir):
    """A byte-level BPE tokenizer of VOCAB entries trained on WikiText-2 validation text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    text = (Path(data_dir) / "wikitext2" / "validation.txt").read_text()[:200_000]
    tk = Tokenizer(models.BPE(unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=["<pad>", "<s>", "</s>", "<unk>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tk.train_from_iterator(text.split("\n"), trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                  unk_token="<unk>")
    assert len(tok) <= VOCAB
    return tok


def make_word_tokenizer():
    """A tokenizer whose ids are the words t0..t{VOCAB-1}: for tests that need no data folder."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.WordLevel({f"t{i}": i for i in range(VOCAB)}, unk_token="t3"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="t1", eos_token="t2", pad_token="t0",
                                   unk_token="t3")


@pytest.fixture
def word_model_dir(tmp_path):
    """A saved tiny Llama (4 blocks) with the word tokenizer: a CLI input needing no data folder."""
    path = tmp_path / "tiny-llama-words"
    make_tiny_model("llama", layers=4).save_pretrained(path)
    make_word_tokenizer().save_pretrained(path)
    return path


@pytest.fixture
def tiny_model_dir(tmp_path, tokenizer):
    """A saved tiny Llama checkpoint with a tokenizer, as the CLI would be given."""
    model = make_tiny_model("llama")
    path = tmp_path / "tiny-llama"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
