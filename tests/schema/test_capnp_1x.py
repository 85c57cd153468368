"""Cap'n Proto 1.x syntax, judged by libcapnp 1.x itself (the schema parser pycapnp bundles).

capnp 0.9.2 rejects these constructs, so the reference here is ``capnp.SchemaParser().load``:
every file of the HEAD corpus compiles to the nodes libcapnp 1.x compiles (node for node, values
included), and small schemas with backtick block text and implied first fields compile to the
same nodes, or fail with the same first error at the same line. Files that 0.9.2 reads are
compared with capnp 0.9.2 itself in test_compile_corpus.py.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import pytest

from cara.errors import SchemaError
from cara.schema import compile as compile_schema
from cara.schema import model
from tests.schema._compare import first_difference
from tests.support.corpus_files import ALL_SCHEMAS_092
from tests.support.reference import (
    normalise_request_values,
    pycapnp_first_error,
    pycapnp_nodes,
)

#: The HEAD tree has the same schema files as 0.9.2 (checked below).
HEAD_FILES = ALL_SCHEMAS_092


def _compile(name: str, cwd: Path, import_path: list[str]) -> model.CodeGeneratorRequest:
    old = os.getcwd()
    os.chdir(cwd)
    try:
        return compile_schema([name], import_path=import_path, no_standard_import=True)
    finally:
        os.chdir(old)


def _same_nodes(name: str, ours: model.CodeGeneratorRequest, theirs: list[model.Node]) -> None:
    """cara's nodes of file ``name`` equal libcapnp's, and neither side has one more."""
    ref = model.CodeGeneratorRequest(nodes=theirs)
    normalise_request_values(ours, ref)
    by_id = {n.id: n for n in ours.nodes}
    own = [n for n in theirs if n.displayName.split(":")[0] == name]
    assert own, "libcapnp compiled no node of the file"
    missing = [n.displayName for n in own if n.id not in by_id]
    theirs_ids = {n.id for n in own}
    extra = [n.displayName for n in ours.nodes
             if n.displayName.split(":")[0] == name and n.id not in theirs_ids]
    assert not missing and not extra, (missing, extra)
    for node in own:
        difference = first_difference(by_id[node.id], node, node.displayName)
        assert difference is None, difference


@functools.cache
def _head_reference(root: str) -> list[model.Node]:
    return pycapnp_nodes(HEAD_FILES, cwd=root, import_path=["c++/src"])


def test_head_has_the_092_files(corpus_head: Path) -> None:
    found = sorted(str(p.relative_to(corpus_head)) for p in corpus_head.glob("c++/**/*.capnp"))
    assert found == sorted(HEAD_FILES)


@pytest.mark.parametrize("name", HEAD_FILES)
def test_head_file_same_nodes_as_libcapnp_1x(corpus_head: Path, name: str) -> None:
    theirs = _head_reference(str(corpus_head))
    _same_nodes(name, _compile(name, corpus_head, ["c++/src"]), theirs)


_H = "@0xd508eebdc2dc42b8;\n"

#: 1.x schemas libcapnp 1.x accepts (capnp 0.9.2 rejects them all).
VALID_1X = {
    "backtick_lines": _H + "const a :Text =\n  `one\n  `two # not a comment\n  ;\n"
                      "const b :Text = `mid-line\n  ;\nconst c :Text = \"x\" `y\n  \"z\";\n"
                      "const d :Data = `bytes\n  ;\nconst e :Text = `\n  `\n;\n",
    "backtick_crlf": _H.replace("\n", "\r\n") + "const a :Text =\r\n  `one\r\n  `two\r\n;\r\n",
    "implied_scalars": _H + "struct T { t @0 :Text; i @1 :Int32; }\n"
                       "struct B { b @0 :Bool; }\nstruct F { f @0 :Float32; }\n"
                       "struct V { v @0 :Void; }\nstruct U { union { a @0 :Int8; b @1 :Text; } }\n"
                       "const tx :Text = \"c\";\n"
                       "const a :T = \"x\";\nconst b :B = true;\nconst c :U = 5;\n"
                       "const d :F = inf;\nconst e :F = 1;\nconst f :V = void;\n"
                       "const g :T = .tx;\nconst h :List(T) = [\"a\", (t = \"b\"), .tx];\n",
    "implied_by_ordinal": _H + "struct S { b @1 :Text; a @0 :Int8; }\nconst c :S = 5;\n",
    "implied_defaults": _H + "struct T { t @0 :Text; }\n"
                         "struct S { a @0 :T = \"x\"; l @1 :List(T) = [\"y\"];\n"
                         "  g :group { n @2 :Int16; m @3 :Text; }\n"
                         "  h :group { s @4 :Text; } }\n"
                         "const c :S = (g = 7, h = \"w\");\n"
                         "annotation ann(struct) :T;\nstruct W $ann(\"v\") {}\n",
    "implied_range_clamped_ok": _H + "struct U { u @0 :UInt8; }\nconst a :U = 255;\n",
}

#: 1.x schemas libcapnp 1.x rejects: the first error is the same, at the same line.
INVALID_1X = {
    "implied_data_from_text": _H + "struct D { d @0 :Data; }\nconst a :D = \"str\";\n",
    "implied_data_from_binary": _H + "struct D { d @0 :Data; }\nconst a :D = 0x\"00\";\n",
    "implied_list": _H + "struct L { l @0 :List(Int8); }\nconst a :L = [1, 2];\n",
    "implied_first_is_group": _H + "struct G { g :group { x @0 :Int8; } y @1 :Int8; }\n"
                               "const a :G = 5;\n",
    "implied_not_nested": _H + "struct T { t @0 :Text; }\nstruct N { n @0 :T; }\n"
                           "const a :N = \"x\";\n",
    "implied_enum_name": _H + "enum En { p @0; q @1; }\nstruct E { e @0 :En; }\n"
                          "const a :E = q;\n",
    "implied_group_struct": _H + "struct T { t @0 :Text; }\nstruct O { g :group { t @0 :T; } }\n"
                             "const a :O = (g = \"x\");\n",
    "implied_out_of_range": _H + "struct U { u @0 :UInt8; }\nconst a :U = 300;\n",
    "implied_negative_unsigned": _H + "struct U { u @0 :UInt8; }\nconst a :U = -1;\n",
    "implied_empty_struct": _H + "struct E {}\nconst a :E = 1;\n",
}


@pytest.mark.parametrize("key", sorted(VALID_1X))
def test_1x_snippet_same_nodes_as_libcapnp_1x(tmp_path: Path, key: str) -> None:
    (tmp_path / "x.capnp").write_bytes(VALID_1X[key].encode())
    assert pycapnp_first_error("x.capnp", cwd=tmp_path) is None
    theirs = pycapnp_nodes(["x.capnp"], cwd=tmp_path)
    _same_nodes("x.capnp", _compile("x.capnp", tmp_path, []), theirs)


@pytest.mark.parametrize("key", sorted(INVALID_1X))
def test_1x_snippet_same_first_error_as_libcapnp_1x(tmp_path: Path, key: str) -> None:
    (tmp_path / "x.capnp").write_bytes(INVALID_1X[key].encode())
    want = pycapnp_first_error("x.capnp", cwd=tmp_path)
    assert want is not None
    with pytest.raises(SchemaError) as info:
        _compile("x.capnp", tmp_path, [])
    # libcapnp's message names the line only; cara's adds the columns.
    first = info.value.diagnostics[0]
    location, message = first.split(": error: ", 1)
    line = location.split(":")[1]
    assert f"x.capnp:{line}: {message}" == want
