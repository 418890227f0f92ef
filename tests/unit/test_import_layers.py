"""driftloop's import graph: no cycles between its modules, and the library never imports
the CLI layer.

The graph is read from the source with ``ast`` (nothing is imported). The rules:

- An edge ``a -> b`` is an import of ``driftloop`` module ``b`` anywhere in module ``a``:
  at top level, under ``if TYPE_CHECKING:`` or ``try:``, and inside functions too. A
  type-only import still ties two modules together, and a function-level import only
  defers a cycle to the first call (the old demo's five modules hid theirs that way).
  Imports inside functions stay the way to keep heavy libraries off the import path;
  they just may not close a loop between driftloop modules. ``from p import name`` is an
  edge to the submodule ``p.name`` when that is a module, else to ``p``.
- The implicit import of a package's ``__init__`` when one of its submodules is imported
  is not an edge: a package re-exporting its submodules is the usual Python pattern.
- The CLI layer is ``driftloop.cli`` and ``driftloop.commands.*``. Every other module
  of ``driftloop`` is library code and must not import it, at any depth: the CLI calls
  the library, never the other way round.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "driftloop"
CLI_LAYER = ("driftloop.cli", "driftloop.commands")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _is_package(name: str, modules: dict[str, Path]) -> bool:
    return modules[name].name == "__init__.py"


def _resolve(node: ast.ImportFrom, module: str, modules: dict[str, Path]) -> str | None:
    """The absolute module a ``from ... import`` names (relative ones resolved)."""
    if node.level == 0:
        return node.module
    base = module.split(".")
    if not _is_package(module, modules):
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _targets(node: ast.Import | ast.ImportFrom, module: str, modules: dict[str, Path]) -> list[str]:
    """The driftloop modules one import statement loads (by name, not their parents)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        base = _resolve(node, module, modules)
        if base is None:
            return []
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
    return sorted({n for n in names if n in modules})


def _imports(module: str, modules: dict[str, Path]) -> set[str]:
    """Every driftloop module ``module`` imports, at any depth of its body."""
    tree = ast.parse(modules[module].read_text(), filename=str(modules[module]))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.update(_targets(node, module, modules))
    found.discard(module)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {m: _imports(m, modules) for m in modules}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (or a self-loop), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:  # Tarjan's algorithm
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1 or v in graph.get(v, ()):
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(groups)


def _is_cli(module: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in CLI_LAYER)


def test_the_checker_finds_a_cycle_and_ignores_a_chain() -> None:
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    assert find_cycles({"a": {"a"}}) == [["a"]]


def test_the_graph_sees_type_only_function_level_and_submodule_imports() -> None:
    graph = _graph()
    assert "driftloop.demo.feedback" in graph["driftloop.demo.runner"]
    # ``from driftloop.demo import runner`` inside the command's function: the submodule.
    assert "driftloop.demo.runner" in graph["driftloop.commands.demo"]
    assert "driftloop.demo" not in graph["driftloop.commands.demo"]
    # Imported under ``if TYPE_CHECKING:`` only.
    assert "driftloop.client.sync" in graph["driftloop.demo.traffic"]


def test_no_import_cycles_between_driftloop_modules() -> None:
    assert find_cycles(_graph()) == []


def test_library_modules_never_import_the_cli_layer() -> None:
    offenders = {
        m: sorted(t for t in targets if _is_cli(t))
        for m, targets in _graph().items()
        if not _is_cli(m)
    }
    assert {m: t for m, t in offenders.items() if t} == {}
