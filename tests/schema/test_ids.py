"""Automatic ids against the reference compiler's output.

Every node capnp produced for the corpus files must have either the id cara derives from its
parent (nested declarations, groups, method params/results), or an id written literally in the
schema source. A test that finds no derived ids at all would prove nothing, so each also
counts the derived ones.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from cara.schema import model
from cara.schema.ids import (
    ID_BIT,
    child_id,
    format_id,
    generate_file_id,
    group_id,
    is_valid_id,
    method_params_id,
)
from tests.support.reference import reference_request, require_capnp

CORPUS_FILES = [
    "c++/src/capnp/test.capnp",
    "c++/src/capnp/schema.capnp",
    "c++/src/capnp/rpc.capnp",
    "c++/src/capnp/rpc-twoparty.capnp",
    "c++/src/capnp/persistent.capnp",
    "c++/src/capnp/compat/json.capnp",
    "c++/src/capnp/compiler/grammar.capnp",
    "c++/samples/calculator.capnp",
    "c++/samples/addressbook.capnp",
]


def _explicit_ids(root: Path) -> set[int]:
    """Every ``@0x...`` written in any schema under ``root`` (explicit ids)."""
    found: set[int] = set()
    for path in root.rglob("*.capnp"):
        for match in re.finditer(r"@0x([0-9a-fA-F]{1,16})", path.read_text(encoding="utf-8")):
            found.add(int(match.group(1), 16))
    return found


def _expected_id(request: model.CodeGeneratorRequest, node: model.Node) -> int | None:
    """The id cara derives for ``node``, or None when it has no parent to derive it from."""
    nodes = request.nodes_by_id()
    if node.which == "file":
        return None
    if node.scopeId == 0:
        # A method's params or results struct: find the method that uses it.
        for iface in request.nodes:
            if iface.interface is None:
                continue
            for ordinal, method in enumerate(iface.interface.methods):
                if method.paramStructType == node.id and node.shortName.endswith("$Params"):
                    return method_params_id(iface.id, ordinal, False)
                if method.resultStructType == node.id and node.shortName.endswith("$Results"):
                    return method_params_id(iface.id, ordinal, True)
        return None
    parent = nodes.get(node.scopeId)
    if node.struct is not None and node.struct.isGroup:
        assert parent is not None and parent.struct is not None
        index = [f.group.typeId if f.group else None for f in parent.struct.fields].index(node.id)
        return group_id(parent.id, index)
    return child_id(node.scopeId, node.shortName)


@pytest.mark.parametrize("path", CORPUS_FILES)
def test_corpus_ids(corpus_092: Path, path: str) -> None:
    request = reference_request([path], cwd=corpus_092, import_path=["c++/src"])
    explicit = _explicit_ids(corpus_092 / "c++")
    derived = 0
    wrong: list[str] = []
    for node in request.nodes:
        expected = _expected_id(request, node)
        if expected is None or expected == node.id:
            derived += expected is not None
            continue
        if node.id not in explicit:
            wrong.append(f"{node.displayName}: capnp {format_id(node.id)}, "
                         f"cara {format_id(expected)}")
    assert not wrong, "\n".join(wrong)
    assert derived > 0


def test_every_kind_is_derived(corpus_092: Path) -> None:
    """test.capnp has derived ids of each kind: nested decls, groups, params and results."""
    request = reference_request(["c++/src/capnp/test.capnp"], cwd=corpus_092,
                                import_path=["c++/src"])
    kinds: set[str] = set()
    for node in request.nodes:
        expected = _expected_id(request, node)
        if expected is None or expected != node.id:
            continue
        if node.scopeId == 0:
            kinds.add("results" if node.shortName.endswith("$Results") else "params")
        elif node.struct is not None and node.struct.isGroup:
            kinds.add("group")
        else:
            kinds.add(node.which)
    assert {"struct", "enum", "interface", "const", "annotation", "group", "params",
            "results"} <= kinds


def test_known_values() -> None:
    # Spot checks taken from capnp's output for the corpus (schema.capnp, rpc.capnp).
    schema_file = 0xA93FC509624C72D9
    assert child_id(schema_file, "Node") == 0xE682AB4CF923A417
    node = 0xE682AB4CF923A417
    assert child_id(node, "Parameter") == 0xB9521BCCF10FA3B1


ID_SPELLING = re.compile(r"@0x[0-9a-f]{16}")


def test_random_file_ids_are_valid() -> None:
    ids = {generate_file_id() for _ in range(64)}
    assert len(ids) == 64
    assert all(is_valid_id(i) and i & ID_BIT for i in ids)
    assert all(ID_SPELLING.fullmatch(format_id(i)) for i in ids)
    assert format_id(ID_BIT | 1) == "@0x8000000000000001"


def test_id_spelling_is_capnps() -> None:
    exe = require_capnp()
    reference = subprocess.run([exe, "id"], capture_output=True, text=True, check=True).stdout
    assert ID_SPELLING.fullmatch(reference.strip().rstrip(";"))
    assert is_valid_id(int(reference.strip().rstrip(";")[1:], 16))


def test_invalid_ids() -> None:
    assert not is_valid_id(0x7FFFFFFFFFFFFFFF)
    assert not is_valid_id(1 << 64)
    assert not is_valid_id(-1)
    assert is_valid_id(ID_BIT)
