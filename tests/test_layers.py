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
