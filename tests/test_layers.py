"""The package's dependencies point one way: read from the source, every import of a
neve module (at the top of a file, inside a function, or for type checking only)."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

import neve

SOURCE = Path(neve.__file__).parent

# What each layer may not import. The wire protocol and the errors sit under everything;
# engines answer requests and know nothing of HTTP routes; the libraries under the API
# (retrieval, the store, Snowflake's batch protocol) know nothing of it either.
FORBIDDEN = {
    "neve.errors": ("neve.",),
    "neve.protocol": ("neve.api", "neve.engine", "neve.store", "neve.snowflake", "neve.ui"),
    "neve.engine": ("neve.api", "neve.rag", "neve.store", "neve.snowflake", "neve.ui"),
    "neve.rag": ("neve.api", "neve.store", "neve.snowflake", "neve.ui"),
    "neve.store": ("neve.api", "neve.engine", "neve.rag", "neve.snowflake", "neve.ui"),
    "neve.snowflake": ("neve.api", "neve.store", "neve.ui"),
    # Serving on Ray: engines and batch on a cluster, below the API like any engine.
    "neve.ray": ("neve.api", "neve.rag", "neve.store", "neve.snowflake", "neve.ui"),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(SOURCE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(SOURCE.rglob("*.py"))}


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports(path: Path, known: set[str], *, at_run_time: bool) -> set[str]:
    """The neve modules `path` imports (`from neve.api import rag` imports neve.api.rag);
    with `at_run_time`, leaving out what it imports for type checking only."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if at_run_time and isinstance(node, ast.If) and _type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in known)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                inner = f"{node.module}.{alias.name}"
                found.add(inner if inner in known else node.module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return {m for m in found if m in known}


def graph(*, at_run_time: bool) -> dict[str, set[str]]:
    found = modules()
    return {m: imports(p, set(found), at_run_time=at_run_time) - {m} for m, p in found.items()}


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_every_layer_imports_only_what_is_below_it() -> None:
    broken = [
        f"{module} imports {target}"
        for module, targets in graph(at_run_time=False).items()
        for layer, banned in FORBIDDEN.items()
        if within(module, layer)
        for target in sorted(targets)
        if any(target.startswith(b) for b in banned)
    ]
    assert not broken, "\n".join(broken)


def test_no_import_cycle_between_modules() -> None:
    """A package's __init__ importing its own modules is not a cycle; every other loop is."""
    edges = graph(at_run_time=True)
    for module, targets in edges.items():
        edges[module] = {t for t in targets if not within(module, t)}
    try:
        graphlib.TopologicalSorter(edges).prepare()
    except graphlib.CycleError as exc:
        pytest.fail(f"import cycle: {' -> '.join(exc.args[1])}")


def test_the_checks_see_an_engine_importing_the_api(tmp_path: Path) -> None:
    """The reader finds imports inside functions and type-checking blocks, which is where
    a back-edge hides."""
    engine = tmp_path / "engine.py"
    engine.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from neve.api.state import HubState\n"
        "def f():\n    from neve.api import errors\n"
    )
    known = {"neve.api", "neve.api.state", "neve.api.errors"}
    assert imports(engine, known, at_run_time=False) == {"neve.api.state", "neve.api.errors"}
    assert imports(engine, known, at_run_time=True) == {"neve.api.errors"}


def test_every_error_neve_defines_is_a_neve_error() -> None:
    """One family: whatever neve raises on purpose maps to a status, type and code."""
    strays = []
    for module, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                bases = {ast.unparse(b).rsplit(".", 1)[-1] for b in node.bases}
                if bases & {"Exception", "ValueError", "LookupError", "RuntimeError"}:
                    strays.append(f"{module}.{node.name}")
    assert strays == ["neve.errors.NeveError"]
