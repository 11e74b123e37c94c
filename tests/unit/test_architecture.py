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
    assert "reid_stream.api.context" in edges["reid_stream.api.views"]  # the walk sees real imports
    assert find_cycle(edges) is None, " -> ".join(find_cycle(edges) or [])


# The house's floors, lowest first: a module imports only from its own floor or below, and on one floor only
# from its own package, so the tree shows which way the data flows and a new line has one right place.
SHARED = {"config", "events", "errors", "metrics", "lru", "retry"}  # the root's modules every part uses
ENTRY = {"cli", "__main__", "demo", "service", "matching"}  # the root's entry points and the design's API
FLOORS = [["(shared)"], ["identity", "encoders"], ["vision"], ["store"], ["learn"], ["stream"], ["memory"], ["api"],
          ["worker"], ["eval"], ["(entry)"], ["infra"]]


def room(module: str) -> str:
    """The package a module belongs to: a subpackage's name, or (shared)/(entry) for the root's own files."""
    parts = module.split(".")
    if len(parts) == 1:
        return "(shared)"  # the package's own __init__: its version
    if len(parts) > 2:
        return parts[1]
    name = parts[1] if len(parts) == 2 else ""
    if (PACKAGE / name).is_dir():
        return name  # a subpackage's __init__
    assert name in SHARED | ENTRY, f"{module}: a new root module must be added to SHARED or ENTRY"
    return "(shared)" if name in SHARED else "(entry)"


def test_every_package_has_a_floor():
    rooms = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert rooms == {r for floor in FLOORS for r in floor if not r.startswith("(")}


def test_imports_run_one_way_down_the_floors():
    floor = {r: i for i, rooms in enumerate(FLOORS) for r in rooms}
    wrong = []
    for module, imported in graph().items():
        here = room(module)
        for target in imported:
            there = room(target)
            if there != here and (floor[there] > floor[here] or floor[there] == floor[here]):
                wrong.append(f"{module} ({here}) -> {target} ({there})")
    assert not wrong, "\n".join(sorted(wrong))


def test_the_floor_check_sees_a_wrong_way_import():
    assert room("reid_stream.store.reid_store") == "store" and room("reid_stream.config") == "(shared)"
    floor = {r: i for i, rooms in enumerate(FLOORS) for r in rooms}
    assert floor[room("reid_stream.api.views")] > floor[room("reid_stream.store.watch")]


def test_the_design_api_imports_as_the_design_document_does():
    from reid_stream.matching import EntityEmbedding as FromMatching
    from reid_stream.service import EntityEmbedding, ReIdentificationService, cosine_similarity, get_reid_service

    assert FromMatching is EntityEmbedding and callable(get_reid_service)
    assert ReIdentificationService.find_matching_entities and cosine_similarity([1.0, 0.0], [1.0, 0.0]) == 1.0


@pytest.mark.parametrize("module", ["reid_stream.api.views", "reid_stream.worker.runtime", "reid_stream.stream.embed",
                                    "reid_stream.stream.assign", "reid_stream.stream.wire",
                                    "reid_stream.store.reid_store"])
def test_nothing_below_the_shell_imports_the_app(module):
    assert "reid_stream.worker.app" not in graph()[module]


@pytest.mark.parametrize("module", ["reid_stream.identity.matching", "reid_stream.stream.wire", "reid_stream.events",
                                    "reid_stream.identity.gallery", "reid_stream.identity.decide",
                                    "reid_stream.identity.topology", "reid_stream.identity.plates"])
def test_the_pure_core_knows_no_kafka_redis_or_torch(module):
    path = PACKAGE.joinpath(*module.split(".")[1:]).with_suffix(".py")
    roots = {m.split(".")[0] for m in imports_of(path)}
    assert not roots & {"aiokafka", "faust", "redis", "torch", "open_clip"}, roots


def test_the_identity_core_imports_only_the_schemas_beside_itself():
    for path in (PACKAGE / "identity").glob("*.py"):
        outside = {m for m in imports_of(path) if m.startswith("reid_stream.")
                   and not m.startswith(("reid_stream.identity.", "reid_stream.events", "reid_stream.errors"))}
        assert not outside, f"{path.name} imports {sorted(outside)}"


def test_only_the_store_talks_to_redis():
    talkers = {module for module, path in ((module_name(p), p) for p in PACKAGE.rglob("*.py"))
               if any(m == "redis" or m.startswith("redis.") for m in imports_of(path))}
    # service.py takes the caller's redis client (the design's API); the views and the stages catch its errors.
    allowed_to_name_errors = {"reid_stream.service", "reid_stream.retry", "reid_stream.api.views",
                              "reid_stream.worker.app", "reid_stream.worker.runtime"}
    assert {m for m in talkers if room(m) != "store"} <= allowed_to_name_errors, sorted(talkers)


def test_the_store_reads_no_environment():
    assert not any("from_env" in p.read_text() for p in (PACKAGE / "store").glob("*.py"))
