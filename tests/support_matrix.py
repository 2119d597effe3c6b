"""Which method runs on which family: probed on the tiny models of tests/helpers/models.py by
what a method checks before any work (building it on the model's adapter, then `check()`) with
the method's own `example_config()`, and written into the README as a table so that the table
says what the code does. The columns are the registered built-in methods: a new method gets its
column by declaring `example_config()`, with no list here to keep.

    python -m tests.support_matrix          # rewrite the README table
    python -m tests.support_matrix --check  # exit 1 if the README table is stale

tests/e2e/test_families.py asserts that every probed "yes" really prunes, reloads and decodes, and
every probed refusal is what `prunekit.prune` raises; tests/test_support_matrix.py that every
built-in method has an example and a column."""
from __future__ import annotations

import inspect
import sys
import tempfile
from pathlib import Path

from prunekit.errors import PrunekitError
from prunekit.methods import all_methods
from prunekit.models.adapter import ModelAdapter

from tests.helpers.models import FAMILIES, tiny_model

README = Path(__file__).resolve().parents[1] / "README.md"
BEGIN, END = "<!-- support table: python -m tests.support_matrix -->", "<!-- end of support table -->"

DATABASES = str(Path(tempfile.gettempdir()) / "prunekit-support-matrix-db")   # evo-sparsity's, not the user cache


def builtin(cls) -> bool:
    """A method shipped in prunekit itself (not a plugin, not a test's toy method)."""
    return cls.__module__.startswith("prunekit.")


def example(method: str):
    """The small config `method` declares for the tiny models (5 blocks, calibration 4 x 16
    tokens), None if it declares none; evo-sparsity's databases go to a temporary folder."""
    make = getattr(all_methods()[method], "example_config", None)
    if make is None:
        return None
    takes_db = "database_dir" in inspect.signature(make).parameters
    return make(database_dir=DATABASES) if takes_db else make()


METHODS = [name for name, cls in all_methods().items() if builtin(cls)]
# what the tiny models stand for, as the README names them
LABELS = {"llama": "Llama", "mistral": "Mistral (sliding window)", "qwen2": "Qwen2 (sliding window)",
          "qwen3": "Qwen3", "gemma2": "Gemma 2", "gemma3": "Gemma 3 text", "phi3": "Phi-3", "opt": "OPT"}


def refusal(method: str, family: str) -> str | None:
    """The one-line refusal `method` gives a tiny `family` model before any work, None if it runs."""
    cls = all_methods()[method]
    try:
        cls(example(method), ModelAdapter(tiny_model(family))).check()
    except PrunekitError as e:
        return str(e)
    return None


def table() -> str:
    rows = ["| family (model_type) | " + " | ".join(METHODS) + " |", "|---" * (len(METHODS) + 1) + "|"]
    notes: dict[str, int] = {}
    for family in FAMILIES:
        cells = []
        for method in METHODS:
            why = refusal(method, family)
            if why is None:
                cells.append("yes")
            else:
                reason = why.split(": ", 1)[-1]
                cells.append(f"no [{notes.setdefault(reason, len(notes) + 1)}]")
        model_type = tiny_model(family, layers=1).config.model_type
        rows.append(f"| {LABELS[family]} (`{model_type}`) | " + " | ".join(cells) + " |")
    rows.append("")
    rows += [f"[{n}] {reason}" + "  " for reason, n in notes.items()]
    return "\n".join(rows).rstrip()


def readme_with(text: str, tbl: str) -> str:
    a, b = text.index(BEGIN) + len(BEGIN), text.index(END)
    return text[:a] + "\n" + tbl + "\n" + text[b:]


def main(argv: list[str]) -> int:
    text = README.read_text()
    new = readme_with(text, table())
    if "--check" in argv:
        return 0 if new == text else 1
    README.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
