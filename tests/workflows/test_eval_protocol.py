"""EvalProtocol (workflows/common.py): the evaluation sets, window length and count a workflow is
given, built once and handed down as one value."""
import pytest

from prunekit.workflows.common import DEFAULT_EVAL_SEQLEN, EvalProtocol


def test_built_from_the_workflow_arguments():
    assert EvalProtocol.of("wikitext2, ptb", 128, 4) == EvalProtocol(("wikitext2", "ptb"), 128, 4)
    assert EvalProtocol.of(["c4", "none"]).names == ("c4",)
    assert EvalProtocol.of(None).names == EvalProtocol.of("none").names == ()
    given = EvalProtocol.of("wikitext2", 64)
    assert EvalProtocol.of(given) is given       # what one workflow hands another
    with pytest.raises(TypeError):
        EvalProtocol.of(given, eval_seqlen=32)


def test_fit_shortens_only_the_default_and_says_so():
    short = {"max_position_embeddings": 512}
    fitted = EvalProtocol.of("wikitext2").fit(short)
    assert fitted.seqlen == 512
    assert fitted.note == f"default {DEFAULT_EVAL_SEQLEN} shortened to the model's 512 positions"
    assert fitted.fit(short) == fitted           # fitting again keeps the note
    assert EvalProtocol.of("wikitext2", 1024).fit(short) == EvalProtocol(("wikitext2",), 1024)   # refused later
    assert EvalProtocol.of("wikitext2").fit({}).seqlen == DEFAULT_EVAL_SEQLEN


def test_windows_checked_only_when_something_is_evaluated():
    p = EvalProtocol.of("wikitext2", 64, 2)
    assert p.used_seqlen == 64 and p.only(()).used_seqlen is None
    assert p.only(()).windows == 2 and p.only(["ptb"]).names == ("ptb",)
