"""Data lookup, calibration sampling and perplexity against direct computations."""
import gzip
import json
import math
import random

import pytest
import torch
import torch.nn.functional as F

from prunekit.data.calibration import sample_windows, self_generated_windows, tokenize
from prunekit.data.sources import load_source
from prunekit.errors import PrunekitError
from prunekit.eval.ppl import eval_tokens, perplexity, perplexity_of_ids

from .conftest import VOCAB, make_tiny_model


def test_wikitext_rows_rebuild_the_raw_text(data_dir):
    src = load_source("wikitext2", "test", data_dir)
    assert src.join == "\n\n" and src.kind == "stream"
    assert len(src.documents) == 4358                      # one row per line of wiki.test.raw
    assert src.documents[0] == "" and src.documents[1].startswith(" = Robert Boulter = ")


def test_ptb_and_c4_sources(data_dir):
    ptb = load_source("ptb", "test", data_dir)
    assert ptb.join == " " and len(ptb.documents) == 3761 and not ptb.documents[0].startswith(" ")
    c4 = load_source("c4", "train", data_dir)
    assert c4.kind == "documents" and len(c4.documents) == 1000
    assert c4.documents[0].startswith("Beginners BBQ Class")


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


def test_missing_named_dataset_says_where_it_looked(tmp_path):
    with pytest.raises(PrunekitError, match=f"looked in {tmp_path}/ptb/test.txt and on the Hugging Face hub"):
        load_source("ptb", "test", str(tmp_path))


def test_perplexity_equals_direct_computation():
    model = make_tiny_model("llama")
    ids = torch.randint(3, VOCAB, (100,))
    res = perplexity_of_ids(model, ids, seqlen=32, progress=False)
    assert res["windows"] == 3 and res["windows_total"] == 3     # floor(100/32), tail dropped
    nlls = []
    with torch.no_grad():
        for w in range(3):
            x = ids[w * 32:(w + 1) * 32]
            logits = model(x.unsqueeze(0)).logits[0]
            nlls.append(F.cross_entropy(logits[:-1], x[1:]).item())
    assert res["ppl"] == pytest.approx(math.exp(sum(nlls) / 3), rel=1e-5)
    assert perplexity_of_ids(model, ids, seqlen=32, windows=1, progress=False)["ppl"] == pytest.approx(math.exp(nlls[0]), rel=1e-5)


def test_protocol_labels(tokenizer, data_dir):
    model = make_tiny_model("llama")
    res = perplexity(model, tokenizer, "wikitext2", seqlen=64, windows=2, data_dir=data_dir, progress=False)
    assert res["protocol"] == "wt2-64/2" and res["join"] == "\n\n" and res["split"] == "test"
    c4 = eval_tokens("c4", tokenizer, 64, data_dir)
    assert c4.ids.numel() == 256 * 64 and c4.info["documents"] == 1100 and "not comparable" in c4.info["note"]


def test_self_calibration_is_seeded(tokenizer):
    model = make_tiny_model("llama")
    a = self_generated_windows(model, tokenizer, 3, 16, seed=5, batch_size=2)
    b = self_generated_windows(model, tokenizer, 3, 16, seed=5, batch_size=2)
    assert a.shape == (3, 16) and torch.equal(a, b)
    assert (a[:, 0] == tokenizer.bos_token_id).all()
