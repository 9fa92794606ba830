"""
The package's shape: layers whose imports only go down, and no import cycle.

docs/architecture.md draws the layers. Every import of a dumpminer module
counts, at module level or inside a function (a lazy import still couples
the two), except those under ``if TYPE_CHECKING:``, which never run. A
module of a layer may import its own layer and the layers below; a cycle
between modules fails wherever it is.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "dumpminer"

#: Layer of each top-level name under dumpminer, bottom first.
LAYERS: dict[str, int] = {
    "errors": 0,
    "interrupts": 0,
    "dump": 1,
    "slub": 2,
    "extract": 3,
    "clustering": 4,
    "scan": 5,
    "analysis": 6,
    "report": 7,
    "options": 8,
    "pipeline": 8,
    "diff": 9,
    "fleet": 10,
    "cli": 11,
    "drgn_plugin": 11,
    "__main__": 11,
    "__init__": 11,
}


def module_name(path: Path) -> str:
    """``dumpminer.slub.walk`` for dumpminer/slub/walk.py (packages by their __init__)."""
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    """Every module of the package, by dotted name."""
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The dumpminer modules that *name* imports when it runs."""
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("dumpminer"))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            if base.startswith("dumpminer"):
                found.add(base)
                # "from dumpminer.extract import _runs" imports a module too.
                found.update(f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    found = {m for m in found if m in known or m.startswith("dumpminer.")}
    found.discard(name)
    return found


def layer_of(name: str) -> int:
    """The layer of a dotted dumpminer module name (its first part under the package)."""
    parts = name.split(".")
    top = parts[1] if len(parts) > 1 else "__init__"
    top = top.lstrip("_") if top.startswith("_") and top not in LAYERS else top
    if top not in LAYERS:
        raise KeyError(f"{name}: no layer for {top!r}; add it to LAYERS and docs/architecture.md")
    return LAYERS[top]


def graph() -> dict[str, set[str]]:
    """Module -> the dumpminer modules it imports."""
    known = modules()
    return {name: imports_of(name, path, known) for name, path in known.items()}


def test_every_module_has_a_layer() -> None:
    for name in modules():
        layer_of(name)


def test_imports_only_go_down() -> None:
    upward = [
        f"{name} (layer {layer_of(name)}) imports {target} (layer {layer_of(target)})"
        for name, targets in graph().items()
        for target in sorted(targets)
        if layer_of(target) > layer_of(name)
    ]
    assert not upward, "\n".join(upward)


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of *edges*, as a path that ends where it starts; None if none."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state:
            cycle = visit(start)
            if cycle:
                return cycle
    return None


def test_no_import_cycle() -> None:
    # A package's __init__ importing its own modules is how packages work; a
    # module importing its parent package for a name is the cycle that hurts.
    edges = {
        name: {t for t in targets if name != t.rpartition(".")[0]}
        for name, targets in graph().items()
    }
    cycle = find_cycle(edges)
    assert cycle is None, " -> ".join(cycle or [])


@pytest.mark.parametrize(
    "edges, cyclic",
    [
        ({"a": {"b"}, "b": {"c"}, "c": set()}, False),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, True),
        ({"a": {"a2"}, "a2": set(), "b": {"b"}}, True),
    ],
)
def test_find_cycle_finds_cycles(edges: dict[str, set[str]], cyclic: bool) -> None:
    assert (find_cycle(edges) is not None) is cyclic


def test_an_upward_import_is_seen(tmp_path: Path) -> None:
    # The checker itself: a slub module importing the report layer inside a
    # function is found.
    source = tmp_path / "walk.py"
    source.write_text("def f():\n    from dumpminer.report.model import Report\n")
    known = {"dumpminer.report.model": source}
    found = imports_of("dumpminer.slub.walk", source, known)
    assert found == {"dumpminer.report.model"}
    assert layer_of("dumpminer.report.model") > layer_of("dumpminer.slub.walk")


def test_class_names_are_unique() -> None:
    """One name, one concept: two classes of one name (there were two ListedSlabs) mislead."""
    seen: dict[str, list[str]] = {}
    for name, path in modules().items():
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ClassDef):
                seen.setdefault(node.name, []).append(name)
    twice = {cls: where for cls, where in seen.items() if len(where) > 1}
    assert not twice, twice
