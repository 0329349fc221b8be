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


# What a Lambda handler may import: its own package, the core, the engine's facade and reports, and
# from below the engine only the factory's clients and table, its own AWS plumbing (the
# CloudFormation protocol, SNS) and the value types the engine's methods take or give back. The
# work itself (the store, evidence, containment, discovery) is the engine's: a name added here is a
# decision to review, not a formality.
# The engine's facades: one place (facade) and many (outbreak, which outbreak.yaml's shards run)
HANDLERS_MAY_IMPORT_MODULES = (
    "ec2ir.handlers",
    "ec2ir.core",
    "ec2ir.engine.facade",
    "ec2ir.engine.outbreak",
    "ec2ir.engine.places",  # the outbreak's reach: each place's clients, through its role
    "ec2ir.engine.results",
)
HANDLERS_MAY_IMPORT_NAMES = {
    "ec2ir.aws.session": {"Aws", "AwsSettings", "translated", "dns_suffix", "PERMISSION_CODES"},
    "ec2ir.engine.runtime": {"DEFAULT_CONCURRENCY"},
    "ec2ir.store.state": {"StateStore"},  # the factory builds the engine on it
    "ec2ir.containment.steps": {"Options"},  # what Engine.isolate takes
    "ec2ir.containment.nacl_report": {"NaclReport"},  # what RunReport.blocks is
    "ec2ir.containment.check": {"lines"},  # the words of Engine.check's report
    "ec2ir.store.ledger": {"AnsweredRequest"},  # the stack's record of answered requests
    "ec2ir.store.sightings": {"Seen"},  # a finding's recorded count
    "ec2ir.aws.targets": {"parse_arn"},  # a shard's instance ARNs, checked as hostile input
}


def handler_imports_below_the_engine(path: Path) -> set[str]:
    """The ``module.name`` (or ``module``, for a plain import) of each import of ``path`` that
    reaches past what a handler may use."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            named = [(node.module, alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            named = [(alias.name, "") for alias in node.names]
        else:
            continue
        for module, name in named:
            if not module.startswith("ec2ir") or module.startswith(HANDLERS_MAY_IMPORT_MODULES):
                continue
            if name not in HANDLERS_MAY_IMPORT_NAMES.get(module, ()):
                found.add(f"{module}.{name}" if name else module)
    return found


def test_the_handlers_reach_ec2ir_only_through_the_engine() -> None:
    strays = {
        (module, name)
        for module, path in MODULES.items()
        if module.startswith("ec2ir.handlers")
        for name in handler_imports_below_the_engine(path)
    }
    assert strays == set()


def test_the_handler_import_check_sees_a_handler_doing_the_engines_work(tmp_path: Path) -> None:
    handler = tmp_path / "handler.py"
    handler.write_text(
        "from ec2ir.aws.session import Aws, discover\n"
        "import ec2ir.evidence.bucket\n"
        "from ec2ir.engine.release import gone_instances\n"
        "from ec2ir.engine.facade import Engine\n"
        "from ec2ir.core.errors import Ec2irError\n",
        encoding="utf-8",
    )
    assert handler_imports_below_the_engine(handler) == {
        "ec2ir.aws.session.discover",
        "ec2ir.evidence.bucket",
        "ec2ir.engine.release.gone_instances",
    }
