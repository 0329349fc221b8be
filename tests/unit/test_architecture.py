"""The shape of the package, read from its source: no import cycle, the emulator's moto and boto3
only where they belong, and the engine never reaching up into an adapter (the CLI, the stack's and
GuardDuty's handlers, the demo)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
ADAPTERS = ("ec2ir.cli", "ec2ir.handlers", "ec2ir.emulator.demo")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in SRC.rglob("*.py")}


def runtime_imports(path: Path) -> Iterator[str]:
    """Every module an import in ``path`` names, at any depth (a function's own imports too),
    except under ``if TYPE_CHECKING:``, which never runs."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only = {
        id(node)
        for branch in ast.walk(tree)
        if isinstance(branch, ast.If) and "TYPE_CHECKING" in ast.unparse(branch.test)
        for node in ast.walk(branch)
    }
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def graph() -> dict[str, set[str]]:
    return {
        module: {name for name in runtime_imports(path) if name in MODULES and name != module}
        for module, path in MODULES.items()
    }


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for imported in sorted(edges[module]):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = pop_component(stack, module)
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(edges):
        if module not in index:
            visit(module)
    return found


def pop_component(stack: list[str], root: str) -> list[str]:
    """Pop the modules of the component ``root`` heads off the stack, ``root`` last."""
    component = []
    while True:
        member = stack.pop()
        component.append(member)
        if member == root:
            return component


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_imports_one_that_imports_it_back() -> None:
    assert cycles(graph()) == []


@pytest.mark.parametrize(
    ("library", "allowed"),
    [
        ("moto", {"ec2ir.emulator."}),  # the emulator alone stands in for AWS
        ("boto3", {"ec2ir.aws.session"}),  # sessions, clients and the table's type codec
    ],
)
def test_a_library_is_imported_only_where_it_belongs(library: str, allowed: set[str]) -> None:
    """Each allowed entry is a module, or a package when it ends in a dot."""
    importers = {
        module
        for module, path in MODULES.items()
        if any(name == library or name.startswith(f"{library}.") for name in runtime_imports(path))
    }
    strays = {
        m for m in importers if not any(m == a or (a.endswith(".") and m.startswith(a)) for a in allowed)
    }
    assert strays == set()


def test_the_engine_side_never_imports_an_adapter() -> None:
    upward = {
        (module, name)
        for module, path in MODULES.items()
        if not module.startswith(ADAPTERS)
        for name in runtime_imports(path)
        if name.startswith(ADAPTERS)
    }
    assert upward == set()
