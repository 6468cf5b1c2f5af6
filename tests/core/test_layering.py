"""The layers' rules, read from the source: no import circles, dependencies pointing one way.

core ``selfee/`` <- ``pipelines/`` (DALI) <- ``export/`` (ONNX, TensorRT) <- ``bench/``. Imports are
parsed (never executed), those inside functions included: a function-local import only moves a
circle from import time to call time.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = {"selfee": "selfee", "pipelines": "selfee.pipelines", "export": "selfee.export", "bench": "selfee.bench"}
HEAVY = ("nvidia.dali", "onnx", "onnxruntime", "tensorrt")  # only pipelines/ (DALI) and export/ (the rest)

# Known circles, as (importer, imported prefix) edges left out of the graph: none left.
ALLOWED: set[tuple[str, str]] = set()


def _modules() -> dict[str, Path]:
    mods = {}
    for folder, package in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT / folder).with_suffix("").parts
            if rel[-1] == "__init__":
                rel = rel[:-1]
            mods[".".join((package, *rel))] = path
    return mods


MODULES = _modules()


def _imports(name: str, path: Path) -> list[tuple[str, bool]]:
    """(imported name, at module level) for every import in the file; ``from a import b`` gives ``a.b``."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: list[tuple[str, bool]] = []

    def visit(node, top: bool):
        for child in ast.iter_child_nodes(node):
            inner = top and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                out.extend((a.name, top) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    parts = package.split(".")
                    base = ".".join(parts[: len(parts) - child.level + 1] + ([base] if base else []))
                out.extend((f"{base}.{a.name}", top) for a in child.names)
                out.append((base, top))
            visit(child, inner)

    visit(tree, True)
    return out


def _known(name: str) -> str | None:
    """The project module ``name`` refers to (the longest known prefix), or None."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _graph() -> dict[str, set[str]]:
    """Module -> the project modules importing it runs: the module itself and the packages above it
    (their ``__init__`` runs first), except packages that hold the importer."""
    edges: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        out = set()
        for imported, _ in _imports(name, path):
            target = _known(imported)
            if target is None:
                continue
            if any(name == src and (target == dst or target.startswith(dst + ".")) for src, dst in ALLOWED):
                continue
            for t in (*_ancestors(target), target):
                if t in MODULES and t != name and not name.startswith(t + "."):
                    out.add(t)
        edges[name] = out
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            connect(v)
    return found


def _layer(name: str) -> str:
    for package in ("selfee.pipelines", "selfee.export", "selfee.bench"):
        if name == package or name.startswith(package + "."):
            return package
    return "selfee"


def _violations(rule) -> list[str]:
    return [f"{name} imports {imported}" + ("" if top else " (in a function)")
            for name, path in MODULES.items() for imported, top in _imports(name, path) if rule(name, imported, top)]


def _under(imported: str, *packages: str) -> bool:
    return any(imported == p or imported.startswith(p + ".") for p in packages)


def test_the_module_table_sees_every_layer():
    assert {"selfee.train.trainer", "selfee.data.loader", "selfee.video.reader", "selfee.pipelines.decode",
            "selfee.export.runtime", "selfee.bench.timing"} <= set(MODULES)


def test_no_import_circles():
    assert _cycles(_graph()) == []


def test_the_finder_sees_a_circle():
    """The check itself: a circle through a function-local import and a package ``__init__``."""
    edges = {"a.x": {"a.y"}, "a.y": {"a"}, "a": {"a.x"}, "b": set()}
    assert _cycles(edges) == [["a", "a.x", "a.y"]]


def test_core_imports_no_upper_layer_and_no_heavy_package_at_module_level():
    assert _violations(lambda name, imp, top: _layer(name) == "selfee" and top and (
        _under(imp, "selfee.pipelines", "selfee.export", "selfee.bench") or _under(imp, *HEAVY))) == []


def test_embedding_runs_the_embedder_it_is_given_and_imports_no_export_code():
    """Opening weights as an Embedder is selfee.export.open's; selfee.embed imports no export module, not even
    inside a function (the CLI hands it the embedder or export's opener)."""
    assert _violations(lambda name, imp, top: _under(name, "selfee.embed") and _under(imp, "selfee.export")) == []


def test_pipelines_import_neither_export_nor_bench_and_export_not_bench():
    assert _violations(lambda name, imp, top: _layer(name) == "selfee.pipelines"
                       and _under(imp, "selfee.export", "selfee.bench", "onnx", "onnxruntime", "tensorrt")) == []
    assert _violations(lambda name, imp, top: _layer(name) == "selfee.export" and _under(imp, "selfee.bench")) == []
