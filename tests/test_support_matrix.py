"""The support matrix: the README table is what the code does, and every built-in method declares
an example config and has a column in it (no central list of methods to keep)."""
import pytest

from prunekit.methods.registry import all_methods

from tests import support_matrix as sm
from tests.helpers import toy_random_method as toy

BUILTIN = [name for name, cls in all_methods().items() if sm.builtin(cls)]


def test_readme_table_is_what_the_code_does():
    assert sm.main(["--check"]) == 0, "README support table is stale: run python -m tests.support_matrix"


def test_builtin_methods_are_the_ones_shipped_in_prunekit():
    assert "magnitude" in BUILTIN and "wanda" in BUILTIN
    assert toy.RandomMask.name in all_methods() and toy.RandomMask.name not in BUILTIN   # a plugin gets no column


@pytest.mark.parametrize("name", BUILTIN)
def test_every_builtin_method_declares_an_example_config(name):
    cls = all_methods()[name]
    assert callable(getattr(cls, "example_config", None)), \
        f"{cls.__qualname__} ({name}) declares no example_config(): add one with small settings for the tiny models"
    assert type(sm.example(name)) is cls.config_class


def test_every_builtin_method_has_a_column_in_the_readme_table():
    text = sm.README.read_text()
    table = text[text.index(sm.BEGIN) + len(sm.BEGIN):text.index(sm.END)].strip()
    header = [cell.strip() for cell in table.splitlines()[0].strip("|").split("|")]
    assert header[0] == "family (model_type)"
    assert header[1:] == BUILTIN, "README support table columns differ: run python -m tests.support_matrix"
