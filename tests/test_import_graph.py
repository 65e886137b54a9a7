"""The import graph of ``segue``: no cycles, and the models never reach up into training or evaluation.

Every module under ``segue/`` is parsed with :mod:`ast`; every import counts, wherever it is
written: at module level, inside functions and under ``if TYPE_CHECKING:`` (a deferred or
type-only import still couples the modules). The logic follows /work/shared/tools/import_graph.py.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "segue"
UPWARD = ("segue.training", "segue.evaluation")


def _module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, name: str, modules: set[str], top: str) -> set[str]:
    """The ``top`` package's modules ``path`` imports (absolute or relative, any nesting), before resolution."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out.add(target)
            # ``from segue.pkg import submodule`` imports the submodule itself
            out |= {f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in modules}
    return {m for m in out if m == top or m.startswith(top + ".")}


def _resolve(dep: str, modules: set[str]) -> str:
    """The module a dotted import lands in (``segue.models.base.Context`` -> ``segue.models.base``)."""
    while dep and dep not in modules:
        dep = dep.rpartition(".")[0]
    return dep


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Module -> the package's modules it imports, for every ``*.py`` under ``root`` (a package directory)."""
    files = {_module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    modules = set(files)
    graph = {}
    for name, path in files.items():
        deps = {_resolve(d, modules) for d in _imports(path, name, modules, root.name)}
        graph[name] = {d for d in deps if d and d != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return sorted(out)


def cycle_edges(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    members = set(component)
    return [f"{a} -> {b}" for a in component for b in sorted(graph[a] & members)]


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(
        f"{m} -> {d}"
        for m, deps in graph.items()
        if m == "segue.models" or m.startswith("segue.models.")
        for d in deps
        if d.startswith(UPWARD)
    )


def test_the_walker_sees_every_kind_of_import(tmp_path: Path) -> None:
    """The walker itself, on a made-up package: every kind of import is an edge, and cycles are found."""
    pkg = tmp_path / "segue"
    files = {
        "__init__.py": "",
        "models/__init__.py": "",
        "models/base.py": (
            "from typing import TYPE_CHECKING\n"
            "from segue.data.batch import Context\n"
            "if TYPE_CHECKING:\n    from segue.evaluation.protocols import EvalSet\n"
            "def fit():\n    from segue.training import trainer\n"
        ),
        "models/mf.py": "from .base import fit\nimport segue.models.base as b\n",
        "data/__init__.py": "",
        "data/batch.py": "import numpy\n",
        "evaluation/__init__.py": "",
        "evaluation/protocols.py": "from segue.models.base import fit\n",
        "training/__init__.py": "",
        "training/trainer.py": "def f():\n    from ..evaluation.protocols import x\n",
    }
    for rel, text in files.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text(text)
    g = import_graph(pkg)
    # ``from segue.training import trainer`` runs the package and the submodule: both are edges
    want = {"segue.data.batch", "segue.evaluation.protocols", "segue.training", "segue.training.trainer"}
    assert g["segue.models.base"] == want
    assert g["segue.models.mf"] == {"segue.models.base"}
    assert g["segue.training.trainer"] == {"segue.evaluation.protocols"}
    # trainer -> protocols (relative, in a function) -> base -> trainer (in a function)
    assert cycles(g) == [["segue.evaluation.protocols", "segue.models.base", "segue.training.trainer"]]
    assert upward_imports(g) == [
        "segue.models.base -> segue.evaluation.protocols",
        "segue.models.base -> segue.training",
        "segue.models.base -> segue.training.trainer",
    ]


def test_the_real_graph_covers_the_package() -> None:
    graph = import_graph()
    assert {"segue.models.base", "segue.training.trainer", "segue.data.batch"} <= set(graph)
    assert "segue.data.batch" in graph["segue.models.base"]


def test_no_import_cycles_and_models_do_not_import_training_or_evaluation() -> None:
    graph = import_graph()
    found = cycles(graph)
    up = upward_imports(graph)
    lines = []
    for comp in found:
        lines.append(f"cycle {' <-> '.join(comp)}: " + "; ".join(cycle_edges(graph, comp)))
    lines += [f"models import upward: {e}" for e in up]
    assert not found and not up, (
        f"{len(found)} import cycle(s) and {len(up)} import(s) from segue.models into "
        f"segue.training / segue.evaluation:\n" + "\n".join(lines)
    )
