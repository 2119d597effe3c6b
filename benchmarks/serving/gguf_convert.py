"""Run llama.cpp's convert_hf_to_gguf.py with one vocabulary fallback for DeciLM.

    python gguf_convert.py LLAMA_CPP_DIR <convert_hf_to_gguf.py arguments...>

Why: the converter's DeciLM class (conversion/deci.py) picks the tokenizer
path from ``vocab_size`` alone: 128256 means Llama-3 GPT-2-style BPE, any other
value means a Llama-2-style SentencePiece BPE read through ``LlamaHfVocab``,
which requires ``byte_fallback`` and a ``Sequence`` decoder in tokenizer.json.
A DeciLM folder with any other byte-level BPE tokenizer (SmolLM2: 49152
tokens, ByteLevel decoder, no byte_fallback) stops with
"Cannot find Llama BPE tokenizer".  This wrapper keeps the converter as it
is, except that when that lookup fails for a DeciLM folder it writes the
vocabulary through the converter's own GPT-2 BPE path (the one the plain
Llama class falls back to), which hashes the pre-tokenizer and so records
e.g. ``tokenizer.ggml.pre = smollm``.
"""

from __future__ import annotations

import sys
from pathlib import Path


def main() -> None:
    src = Path(sys.argv[1]).resolve()
    sys.argv = [str(src / "convert_hf_to_gguf.py"), *sys.argv[2:]]
    sys.path[:0] = [str(src), str(src / "gguf-py")]

    from conversion import deci  # noqa: E402  (the vendored package)
    from conversion.base import logger  # noqa: E402

    original = deci.DeciModel.set_vocab

    def set_vocab(self):
        try:
            return original(self)
        except (FileNotFoundError, TypeError) as exc:
            logger.warning(f"serving/gguf_convert: DeciLM vocab path failed ({exc}); "
                           "using the GPT-2 BPE path instead")
            return self._set_vocab_gpt2()

    deci.DeciModel.set_vocab = set_vocab

    import convert_hf_to_gguf  # noqa: E402

    convert_hf_to_gguf.main()


if __name__ == "__main__":
    main()
