"""Checks shared by the workflows: evaluation set names."""
import pytest

from prunekit import PrunekitError


def test_eval_name_check_takes_every_known_set_and_its_own_split(tmp_path):
    from prunekit.workflows.common import check_eval_names
    (tmp_path / "mine.txt").write_text("some text")
    check_eval_names(["wikitext2", "ptb", "c4", "c4:train", "wikitext2:validation", str(tmp_path / "mine.txt")])
    for bad, message in (("c4:test", "dataset c4 has no split 'test'"), ("nosuchset", "unknown dataset 'nosuchset'"),
                         (str(tmp_path / "missing.txt"), "data file not found")):
        with pytest.raises(PrunekitError, match=message):
            check_eval_names([bad])
