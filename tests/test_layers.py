"""The architecture's one rule, checked: imports inside cara point down the layer list.

schema -> runtime, codegen (and its output cara.std) -> codecs -> rpc -> transports;
``cara.errors`` is below all of them; ``cara.cli`` and the top-level package sit above
everything (they only wire things up).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "cara"

#: Rank of each layer; a module may import only from layers of lower or equal rank.
RANK = {
    "errors": 0,
    "_version": 0,
    "schema": 1,
    "runtime": 2,
    "codegen": 2,
    "std": 2,  # generated modules of the bundled standard schemas (codegen output)
    "codecs": 3,
    "rpc": 4,
    "transports": 5,
    "cli": 6,
    "cara_pseud": 6,
    "__init__": 6,
    "__main__": 7,
    "importer": 6,
}


def _layer(module_path: Path) -> str:
    rel = module_path.relative_to(PACKAGE)
    return rel.parts[0].removesuffix(".py")


def _imported_layers(tree: ast.AST) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
            if node.module == "cara":
                names = [f"cara.{alias.name}" for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "cara" and len(parts) > 1:
                found.append((node.lineno, parts[1]))
    return found


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down(path: Path) -> None:
    layer = _layer(path)
    assert layer in RANK, f"{path}: unknown layer {layer!r}; add it to RANK and ARCHITECTURE.md"
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    for lineno, target in _imported_layers(tree):
        if target == "__version__":
            continue
        assert target in RANK, f"{path}:{lineno}: imports unknown layer cara.{target}"
        assert RANK[target] <= RANK[layer] or target == layer, (
            f"{path}:{lineno}: cara.{layer} must not import cara.{target} (imports point down)"
        )


def test_rank_table_matches_packages() -> None:
    on_disk = {_layer(p) for p in MODULES}
    assert on_disk <= set(RANK), on_disk - set(RANK)


# ------------------------------------------------------------- inside a layer: no import circle

def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _import_graph(package: Path) -> dict[str, set[str]]:
    """Module -> the modules of the same package (not subpackages) it imports, counting every
    import statement: module level, inside functions and under ``if TYPE_CHECKING``."""
    modules = {_module_name(p): p for p in sorted(package.glob("*.py"))}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                base = node.module
                if node.level:
                    base = ".".join([*name.split(".")[: -node.level], node.module])
                names = [base, *(f"{base}.{alias.name}" for alias in node.names)]
            targets.update(n for n in names if n in modules and n != name)
        # "from cara.schema import model" names the module, not the package's __init__.
        graph[name] = targets
    package_name = _module_name(package / "__init__.py")
    for targets in graph.values():
        if any(t.startswith(package_name + ".") for t in targets):
            targets.discard(package_name)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of ``graph``, or None."""
    state: dict[str, int] = {}  # 1: on the path, 2: done
    for start in sorted(graph):
        if start in state:
            continue
        path = [start]
        stack = [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph[nxt])))
    return None


#: Packages whose modules read top-down (each imports only modules before it).
ACYCLIC_PACKAGES = ["schema", "runtime", "codegen", "codecs", "rpc", "transports", "cli"]


@pytest.mark.parametrize("package", ACYCLIC_PACKAGES)
def test_no_import_circle_inside_a_package(package: str) -> None:
    cycle = _cycle(_import_graph(PACKAGE / package))
    assert cycle is None, " -> ".join(cycle or [])


def test_circle_finder_finds_one() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
