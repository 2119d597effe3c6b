"""Data lookup: the named data sets rebuild their raw text, a missing one says where it looked."""
import pytest

from prunekit.data.sources import load_source
from prunekit.errors import PrunekitError


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


def test_missing_named_dataset_says_where_it_looked(tmp_path):
    with pytest.raises(PrunekitError, match=f"looked in {tmp_path}/ptb/test.txt and on the Hugging Face hub"):
        load_source("ptb", "test", str(tmp_path))
