"""The house's rules, checked from the source: no import cycles, and the pure core free of I/O."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "reid_stream"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every reid_stream module a file imports, anywhere in it (TYPE_CHECKING and function bodies too)."""
    found: set[str] = set()
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)  # `from pkg import module`
    return found


def graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {m for m in imports_of(path) if m in files and m != name} for name, path in files.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_checker_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_no_import_cycles_in_the_package():
    edges = graph()
    assert "reid_stream.runtime" in edges["reid_stream.web"]  # the walk sees real imports
    assert find_cycle(edges) is None, " -> ".join(find_cycle(edges) or [])


@pytest.mark.parametrize("module", ["reid_stream.web", "reid_stream.runtime", "reid_stream.embed",
                                    "reid_stream.assign", "reid_stream.wire", "reid_stream.store"])
def test_nothing_below_the_shell_imports_the_app(module):
    assert "reid_stream.app" not in graph()[module]


@pytest.mark.parametrize("module", ["reid_stream.matching", "reid_stream.wire", "reid_stream.events",
                                    "reid_stream.identity.gallery", "reid_stream.identity.decide",
                                    "reid_stream.identity.topology"])
def test_the_pure_core_knows_no_kafka_redis_or_torch(module):
    path = PACKAGE.joinpath(*module.split(".")[1:]).with_suffix(".py")
    roots = {m.split(".")[0] for m in imports_of(path)}
    assert not roots & {"aiokafka", "faust", "redis", "torch", "open_clip"}, roots


def test_the_identity_core_imports_nothing_else_of_the_package():
    for path in (PACKAGE / "identity").glob("*.py"):
        outside = {m for m in imports_of(path) if m.startswith("reid_stream.")
                   and not m.startswith("reid_stream.identity.")}
        assert not outside, f"{path.name} imports {sorted(outside)}"


def test_the_store_reads_no_environment():
    assert "from_env" not in (PACKAGE / "store.py").read_text()
