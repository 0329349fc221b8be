"""tests/slow_tests.txt names tests that exist: a renamed or deleted test must leave the list, or a
new test of the same name would silently drop out of the fast loop (and a stale line hides none)."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent


def listed() -> list[str]:
    lines = (TESTS / "slow_tests.txt").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


@functools.cache
def functions_in(path: Path) -> dict[str, bool]:
    """Each test function of the module, and whether it is parametrized."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {
        node.name: any("parametrize" in ast.unparse(decorator) for decorator in node.decorator_list)
        for node in tree.body
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")
    }


def test_every_listed_slow_test_is_a_test_function_of_its_module() -> None:
    """Each line names a test function of its module, with parameters when it is parametrized (a
    test parametrized since it was listed has new ids, and the old line would match none; a
    fixture's parameters also give ids, so ids without a decorator are allowed)."""
    missing = []
    for node in listed():
        path, _, name = node.partition("::")
        function, bracket, _ = name.partition("[")
        module = ROOT / path
        functions = functions_in(module) if path.startswith("tests/") and module.is_file() else {}
        if function not in functions or (functions[function] and not bracket):
            missing.append(node)
    assert not missing, f"tests/slow_tests.txt names tests that do not exist: {missing}"


def test_the_list_is_sorted_and_has_no_repeats() -> None:
    nodes = listed()
    assert nodes == sorted(set(nodes))


def test_over_budget_tests_are_slow_unless_kept_for_the_lines_only_they_run() -> None:
    from tests.support.budget import choose_slow

    seconds = {"quick": 0.1, "release round trip": 2.0, "same lines, slower": 3.0, "check": 1.2}
    lines = {
        "quick": frozenset({("a.py", 1), ("a.py", 2)}),
        "release round trip": frozenset({("a.py", 1), ("restore.py", 1), ("restore.py", 2)}),
        "same lines, slower": frozenset({("restore.py", 1), ("restore.py", 2)}),
        "check": frozenset({("check.py", 1)}),
    }

    # 5 lines in all; the quick test alone runs 2
    slow, kept = choose_slow(seconds, lines, budget=0.5, share_kept=0.9)
    assert kept == ["check", "release round trip"]  # 2 new lines for 2 s, then 1 for 1.2 s
    assert slow == ["same lines, slower"]  # nothing it runs is missed

    slow, kept = choose_slow(seconds, lines, budget=0.5, share_kept=0.5)
    assert (slow, kept) == (["check", "same lines, slower"], ["release round trip"])
    slow, kept = choose_slow(seconds, lines, budget=5.0, share_kept=1.0)
    assert (slow, kept) == ([], [])  # nothing is over the budget
    # a unit test is never listed, even one that runs no line at all (the architecture's checks)
    slow, _ = choose_slow({"tests/unit/test_shape.py::test_x": 2.0}, {}, budget=0.5, share_kept=0.0)
    assert slow == []
