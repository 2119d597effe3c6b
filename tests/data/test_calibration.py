"""Calibration sampling: seeded stream windows, documents too short redrawn, texts too short refused,
self-generated windows seeded."""
import gzip
import json
import random

import pytest
import torch

from prunekit.data.calibration import sample_windows, self_generated_windows, tokenize
from prunekit.data.sources import load_source
from prunekit.errors import PrunekitError

from tests.helpers.models import plain_model


def test_stream_windows_follow_the_seeded_convention(tokenizer, data_dir):
    src = load_source("wikitext2:validation", "train", data_dir)
    ids = tokenize(tokenizer, src.text())
    win = sample_windows(tokenizer, src, 5, 64, seed=3)
    rng = random.Random(3)
    for row in win:
        s = rng.randint(0, len(ids) - 64 - 1)
        assert row.tolist() == ids[s:s + 64]
    assert torch.equal(win, sample_windows(tokenizer, src, 5, 64, seed=3))
    assert not torch.equal(win, sample_windows(tokenizer, src, 5, 64, seed=4))


def test_document_windows_redraw_short_documents(tokenizer, tmp_path):
    docs = ["short text"] * 30 + [" ".join(f"word{i}" for i in range(400))]
    path = tmp_path / "docs.jsonl"
    path.write_text("\n".join(json.dumps({"text": d}) for d in docs) + "\n")
    src = load_source(str(path), "train")
    long_ids = tokenize(tokenizer, docs[-1])
    win = sample_windows(tokenizer, src, 4, 32, seed=0)
    text = " ".join(map(str, long_ids))
    for row in win:                                         # every window comes from the only long document
        assert " ".join(map(str, row.tolist())) in text


def test_documents_all_too_short(tokenizer, tmp_path):
    path = tmp_path / "short.jsonl.gz"
    with gzip.open(path, "wt") as f:
        f.write(json.dumps({"text": "tiny"}) + "\n")
    with pytest.raises(PrunekitError, match="no document is longer"):
        sample_windows(tokenizer, load_source(str(path), "train"), 2, 32)


def test_text_shorter_than_a_window(tokenizer, tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("only a few words here")
    with pytest.raises(PrunekitError, match="shorter than one calibration window"):
        sample_windows(tokenizer, load_source(str(p), "train"), 2, 64)
    p.write_text("")
    with pytest.raises(PrunekitError, match="is empty"):
        load_source(str(p), "train")


def test_self_calibration_is_seeded(tokenizer):
    model = plain_model("llama")
    a = self_generated_windows(model, tokenizer, 3, 16, seed=5, batch_size=2)
    b = self_generated_windows(model, tokenizer, 3, 16, seed=5, batch_size=2)
    assert a.shape == (3, 16) and torch.equal(a, b)
    assert (a[:, 0] == tokenizer.bos_token_id).all()
