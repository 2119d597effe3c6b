"""Tokenizers that need no data folder.

`bpe_tokenizer()`: a byte-level BPE of VOCAB entries, loaded from bpe384/tokenizer.json next to
this file. It was trained on the first 200,000 characters of WikiText-2's validation text
(`python -m tests.helpers.tokenizers DATA_DIR` trains it again the same way and rewrites the
file), so that the tests' token counts are those of real English text, without the data folder.

`word_tokenizer()`: a word-level tokenizer whose ids are the words t0..t{VOCAB-1}."""
from __future__ import annotations

import sys
from pathlib import Path

from tests.helpers.models import VOCAB

BPE_DIR = Path(__file__).resolve().parent / "bpe384"
SPECIAL = dict(bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>")


def bpe_tokenizer():
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_file=str(BPE_DIR / "tokenizer.json"), **SPECIAL)
    assert len(tok) <= VOCAB
    return tok


def train_bpe(data_dir: str):
    """The training that wrote bpe384/: WikiText-2 validation text, VOCAB entries."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    text = (Path(data_dir) / "wikitext2" / "validation.txt").read_text()[:200_000]
    tk = Tokenizer(models.BPE(unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=["<pad>", "<s>", "</s>", "<unk>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tk.train_from_iterator(text.split("\n"), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tk, **SPECIAL)


def word_tokenizer():
    """A tokenizer whose ids are the words t0..t{VOCAB-1}."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.WordLevel({f"t{i}": i for i in range(VOCAB)}, unk_token="t3"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="t1", eos_token="t2", pad_token="t0",
                                   unk_token="t3")


if __name__ == "__main__":
    BPE_DIR.mkdir(exist_ok=True)
    train_bpe(sys.argv[1])._tokenizer.save(str(BPE_DIR / "tokenizer.json"))
