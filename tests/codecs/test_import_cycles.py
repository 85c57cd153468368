"""No import cycles inside the data layers (issue 16 found schema_codec <-> views): counted are the
module-level imports and those under ``if TYPE_CHECKING:`` (a cycle there is still a design
knot); imports inside functions are deliberate late imports and are left out."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "cara"
CHECKED = ("cara.codecs", "cara.runtime", "cara.codegen")


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.If):
                visit(node.body)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join([*parts, base] if base else parts)
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    found.add(full if full in known else base)

    visit(ast.parse(path.read_text()).body)
    return {m for m in found if m in known and m != name}


def _cycle_from(start: str, graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle through ``start`` (as a path of modules), if there is one."""
    stack = [(start, [start])]
    seen: set[str] = set()
    while stack:
        node, path = stack.pop()
        for nxt in graph[node]:
            if nxt == start:
                return path
            if nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, [*path, nxt]))
    return None


MODULES = _modules()
GRAPH = {name: _imports(name, path, MODULES) for name, path in MODULES.items()}


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith(CHECKED)))
def test_no_import_cycle(module: str) -> None:
    cycle = _cycle_from(module, GRAPH)
    assert cycle is None, " -> ".join([*cycle, module])
