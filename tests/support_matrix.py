"""Which method runs on which family: probed on the tiny structured models of tiny_models.py by
what a method checks before any work (building it on the model's adapter, then `check()`), and
written into the README as a table so that the table says what the code does.

    python -m tests.support_matrix          # rewrite the README table
    python -m tests.support_matrix --check  # exit 1 if the README table is stale

test_families.py asserts that every probed "yes" really prunes, reloads and decodes, and every
probed refusal is what `prunekit.prune` raises."""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import prunekit
from prunekit.errors import PrunekitError
from prunekit.methods import all_methods
from prunekit.models.adapter import ModelAdapter

from .tiny_models import STRUCTURED_FAMILIES, structured_model

README = Path(__file__).resolve().parents[1] / "README.md"
BEGIN, END = "<!-- support table: python -m tests.support_matrix -->", "<!-- end of support table -->"

DATABASES = str(Path(tempfile.gettempdir()) / "prunekit-support-matrix-db")   # evo-sparsity's, not the user cache
# small settings: the tiny models have 5 blocks, calibration is 4 windows of 16 tokens
CONFIGS = {
    "magnitude": lambda: prunekit.MagnitudeConfig(sparsity=0.5),
    "wanda": lambda: prunekit.WandaConfig(sparsity=0.5),
    "sparsegpt": lambda: prunekit.SparseGPTConfig(sparsity=0.5),
    "sparsellm": lambda: prunekit.SparseLLMConfig(sparsity=0.5, iterations=2),
    "slm": lambda: prunekit.SLMConfig(remove_layers=2),
    "laco": lambda: prunekit.LaCoConfig(remove_layers=1, merge_size=2, interval=1),
    "shortgpt": lambda: prunekit.ShortGPTConfig(remove_layers=2),
    "sleb": lambda: prunekit.SLEBConfig(remove_layers=1),
    "ppl": lambda: prunekit.PPLConfig(remove_layers=1, plus_heuristic=False),
    "search": lambda: prunekit.SearchConfig(keep=0.7, generations=1, population=4, mutants=2, crossovers=1,
                                            randoms=1, top_k=2, band=0.05, fitness_seqlen=16, admm_iters=5),
    "evo-depth": lambda: prunekit.EvoDepthConfig(remove_layers=2, stages="32:2,64:1", generations=2, offspring=2),
    "evo-sparsity": lambda: prunekit.EvoSparsityConfig(sparsity=0.5, base="wanda", stages="32:2,64:1", generations=2,
                                                       offspring=2, database_dir=DATABASES),
    "owl": lambda: prunekit.OWLConfig(sparsity=0.5),
}
METHODS = list(CONFIGS)
# what the tiny models stand for, as the README names them
LABELS = {"llama": "Llama", "mistral": "Mistral (sliding window)", "qwen2": "Qwen2 (sliding window)",
          "qwen3": "Qwen3", "gemma2": "Gemma 2", "gemma3": "Gemma 3 text", "phi3": "Phi-3", "opt": "OPT"}


def refusal(method: str, family: str) -> str | None:
    """The one-line refusal `method` gives a tiny `family` model before any work, None if it runs."""
    cls = all_methods()[method]
    try:
        cls(CONFIGS[method](), ModelAdapter(structured_model(family))).check()
    except PrunekitError as e:
        return str(e)
    return None


def table() -> str:
    rows = ["| family (model_type) | " + " | ".join(METHODS) + " |", "|---" * (len(METHODS) + 1) + "|"]
    notes: dict[str, int] = {}
    for family in STRUCTURED_FAMILIES:
        cells = []
        for method in METHODS:
            why = refusal(method, family)
            if why is None:
                cells.append("yes")
            else:
                reason = why.split(": ", 1)[-1]
                cells.append(f"no [{notes.setdefault(reason, len(notes) + 1)}]")
        model_type = structured_model(family, layers=1).config.model_type
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
