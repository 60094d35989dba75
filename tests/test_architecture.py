"""Import direction is the architecture: collector → ui → queries (and the collector's demo →
instrumentation); no module imports another package's private modules; no import cycle,
also none hidden in a function-local import. Read from the source (every import statement,
at any depth, but those only for type checkers), so a lazy import cannot hide one."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("collector", "instrumentation", "queries", "ui")
#: package -> the packages it may import
MAY_IMPORT = {
    "collector": {"ui", "queries", "instrumentation"},
    "ui": {"queries"},
    "queries": set(),
    "instrumentation": set(),
}
#: The one way up, and only inside a function: the pytest plugin (an entry point of the base
#: install, loaded by every pytest run) starts a collector when a test asks for its fixture.
LAZY_UP = {("eventscope.instrumentation.pytest_plugin", "eventscope.collector.testing")}


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT / package).with_suffix("").parts
            name = ".".join(("eventscope", package, *parts))
            found[name.removesuffix(".__init__")] = path
    return found


MODULES = _modules()


class _Imports(ast.NodeVisitor):
    """Every module a file imports, except under ``if TYPE_CHECKING:``."""

    def __init__(self, module: str, is_package: bool) -> None:
        self.package = module if is_package else module.rpartition(".")[0]
        self.found: set[str] = set()
        self.at_import: set[str] = set()  # imported when the module itself is
        self._functions = 0

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self._functions += 1
        self.generic_visit(node)
        self._functions -= 1

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        if (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
            isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
        ):
            for child in node.orelse:
                self.visit(child)
            return
        self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base = self.package.rsplit(".", node.level - 1)[0]
            target = f"{base}.{node.module}" if node.module else base
        else:
            target = node.module or ""
        for alias in node.names:  # `from . import _figures` names a module
            if f"{target}.{alias.name}" in MODULES:
                self._add(f"{target}.{alias.name}")
            else:
                self._add(target)

    def _add(self, name: str) -> None:
        while name and name not in MODULES:  # `import eventscope.queries.x as y` and the like
            name = name.rpartition(".")[0]
        if name:
            self.found.add(name)
            if not self._functions:
                self.at_import.add(name)


def _graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    graph, at_import = {}, {}
    for module, path in MODULES.items():
        visitor = _Imports(module, path.name == "__init__.py")
        visitor.visit(ast.parse(path.read_text(encoding="utf-8"), str(path)))
        graph[module] = visitor.found - {module}
        at_import[module] = visitor.at_import - {module}
    return graph, at_import


GRAPH, AT_IMPORT = _graph()


def _package(module: str) -> str:
    return module.split(".")[1]


def _edges() -> Iterator[tuple[str, str]]:
    for module, targets in GRAPH.items():
        for target in sorted(targets):
            yield module, target


def test_packages_import_only_down_the_architecture() -> None:
    wrong = [
        f"{module} imports {target}"
        for module, target in _edges()
        if _package(target) != _package(module)
        and _package(target) not in MAY_IMPORT[_package(module)]
        and ((module, target) not in LAZY_UP or target in AT_IMPORT[module])
    ]
    assert wrong == []


def test_no_module_imports_a_private_module_of_another_package() -> None:
    private = [
        f"{module} imports {target}"
        for module, target in _edges()
        if _package(target) != _package(module)
        and any(part.startswith("_") for part in target.split(".")[2:])
    ]
    assert private == []


def _cycles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), as import paths."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in sorted(GRAPH[module]):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(GRAPH):
        if module not in index:
            visit(module)
    return found


def test_there_is_no_import_cycle() -> None:
    # a package's __init__ importing its own modules is how a package is made, not a cycle;
    # a module importing its own package's __init__ back would be one
    assert _cycles() == []


def test_the_checks_see_lazy_imports_and_the_whole_tree() -> None:
    # the graph holds what a function-local import brings in, and every package's modules
    assert "eventscope.collector._ducklake" in GRAPH["eventscope.collector._database"]
    assert {_package(m) for m in GRAPH} == set(PACKAGES)
    assert len(GRAPH) > 60
