"""Shared fixtures: tiny random models of every supported family, a small tokenizer, the data folder.

Only tests that read a data set (WikiText-2, C4 or PTB evaluation or calibration, zero-shot
tasks) ask for `data_dir`; it skips them, saying why, when the folder is absent. Everything else
(the tokenizer included) needs nothing outside tests/."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers.models import FIXTURE_FAMILIES, plain_model
from tests.helpers.tokenizers import bpe_tokenizer, word_tokenizer

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a hub; fail fast if code tries

SHARED_DATA = Path(os.environ.get("PRUNEKIT_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data")


@pytest.fixture(params=FIXTURE_FAMILIES)
def family(request):
    return request.param


@pytest.fixture(scope="session")
def data_dir():
    if not (SHARED_DATA / "wikitext2" / "test.txt").is_file():
        pytest.skip(f"shared data folder not found at {SHARED_DATA} (set PRUNEKIT_DATA_DIR)")
    return str(SHARED_DATA)


@pytest.fixture(scope="session")
def tokenizer():
    """A byte-level BPE tokenizer of VOCAB entries, shipped in tests/helpers/bpe384/."""
    return bpe_tokenizer()


@pytest.fixture
def exact_matmul():
    """CUDA matrix products in full float32 (no TF32) while a test compares them with the CPU."""
    import torch
    prev = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32 = prev


@pytest.fixture
def word_model_dir(tmp_path):
    """A saved tiny Llama (4 blocks) with the word tokenizer: a CLI input needing no data folder."""
    path = tmp_path / "tiny-llama-words"
    plain_model("llama", layers=4).save_pretrained(path)
    word_tokenizer().save_pretrained(path)
    return path


@pytest.fixture
def tiny_model_dir(tmp_path, tokenizer):
    """A saved tiny Llama checkpoint with a tokenizer, as the CLI would be given."""
    path = tmp_path / "tiny-llama"
    plain_model("llama").save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
