"""The package's import graph, read with `ast` from the sources (imports inside functions too):
every import between two parts of prunekit goes from a higher layer to a lower one, as
docs/architecture.md orders them, and no modules import each other in a cycle."""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "prunekit"

# bottom to top; a part may import the parts of lower layers only (and itself)
LAYERS = [
    {"errors", "version", "hub", "signals", "progress", "plots"},
    {"solvers", "export"},
    {"models"},
    {"data", "stats"},
    {"eval"},
    {"engine"},
    {"scoring"},
    {"methods", "analysis"},
    {"api"},
    {"streaming"},
    {"reports"},
    {"recovery"},
    {"workflows"},
    {"cli"},
    {"__init__", "__main__"},
]
RANK = {part: rank for rank, parts in enumerate(LAYERS) for part in parts}


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The prunekit modules (of `modules`) that the file at `path` imports. `from X import a` imports
    the module X.a where there is one, else X itself."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "prunekit"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module.split(".")[0] != "prunekit":
                continue
            subs = {f"{module}.{a.name}" for a in node.names} & modules
            found |= subs if len(subs) == len(node.names) else subs | {module}
    return found & modules


def _graph() -> dict[str, set[str]]:
    """Module -> the modules it imports; a module's own enclosing packages are left out (Python
    imports them first anyway, so naming them adds no edge)."""
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {mod: {t for t in _imports(p, set(files)) if not (mod + ".").startswith(t + ".")}
            for mod, p in files.items()}


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_part_of_the_package_has_a_layer():
    parts = {_part(m) for m in _graph()}
    assert parts - set(RANK) == set(), "add the new part to LAYERS here and to docs/architecture.md"


def test_imports_go_down_the_layers_only():
    upward = []
    for mod, targets in _graph().items():
        for target in targets:
            a, b = _part(mod), _part(target)
            if a == b:
                continue
            if RANK[b] >= RANK[a]:
                upward.append(f"{mod} -> {target}")
    assert upward == []


def test_no_import_cycles():
    graph = _graph()
    cycles, state = [], {}

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert cycles == []


@pytest.mark.parametrize("source, expected", [
    ("from ..engine import BlockStack", {"prunekit.engine"}),
    ("from .. import report as rep", {"prunekit.report"}),
    ("from ..engine import stack, BlockStack", {"prunekit.engine", "prunekit.engine.stack"}),
    ("import prunekit", {"prunekit"}),
])
def test_relative_imports_resolve(tmp_path, source, expected):
    folder = tmp_path / "prunekit" / "workflows"
    folder.mkdir(parents=True)
    f = folder / "x.py"
    f.write_text(source + "\n")
    modules = {"prunekit", "prunekit.report", "prunekit.engine", "prunekit.engine.stack", "prunekit.workflows.x"}
    global PACKAGE
    saved, PACKAGE = PACKAGE, tmp_path / "prunekit"
    try:
        assert _imports(f, modules) == expected
    finally:
        PACKAGE = saved
