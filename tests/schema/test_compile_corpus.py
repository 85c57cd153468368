"""cara's compiler against the reference compiler, file by file over the capnproto corpus.

For each ``.capnp`` file of capnproto v0.9.2, ``capnp compile -I c++/src --no-standard-import
-o-`` (decoded by pycapnp) and ``cara.schema.compile`` with the same options must produce the
same request: the same node set with equal nodes (compared sorted by id, including layouts,
brands, defaults and annotation values), the same source info and requested files. HEAD files
(Cap'n Proto 1.x syntax) must compile, and their values must match what pycapnp (libcapnp 1.x)
loads.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from cara.schema import compile as compile_schema
from cara.schema import model
from tests.schema._compare import request_difference
from tests.support.corpus_files import ALL_SCHEMAS_092
from tests.support.reference import (
    normalise_request_values,
    reference_request,
    require_capnp,
    require_pycapnp,
)

CORPUS_FILES = ALL_SCHEMAS_092

#: Files not yet compiled identically, with the reason (xfail, not strict).
KNOWN_DIFFERENCES: dict[str, str] = {}


@contextmanager
def _cwd(path: Path) -> Iterator[None]:
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def test_corpus_list_is_complete(corpus_092: Path) -> None:
    found = sorted(str(p.relative_to(corpus_092)) for p in corpus_092.glob("c++/**/*.capnp"))
    assert found == sorted(CORPUS_FILES)


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.xfail(reason=KNOWN_DIFFERENCES[n], strict=False))
     if n in KNOWN_DIFFERENCES else n for n in CORPUS_FILES],
)
def test_same_request_as_capnp(corpus_092: Path, name: str) -> None:
    require_capnp()
    require_pycapnp()
    theirs = reference_request([name], cwd=corpus_092, import_path=["c++/src"])
    with _cwd(corpus_092):
        ours = compile_schema([name], import_path=["c++/src"], no_standard_import=True)
    normalise_request_values(ours, theirs)
    difference = request_difference(ours, theirs)
    assert difference is None, difference


@pytest.mark.parametrize("names", [
    ["c++/samples/addressbook.capnp", "c++/src/capnp/rpc.capnp"],
    ["c++/src/capnp/test-import.capnp", "c++/src/capnp/test.capnp"],
    ["c++/src/capnp/schema.capnp", "c++/src/capnp/test-import2.capnp"],
    # json.capnp is imported by json-test.capnp first, so it keeps its imported name.
    ["c++/src/capnp/compat/json-test.capnp", "c++/src/capnp/compat/json.capnp"],
])
def test_several_files_in_one_request(corpus_092: Path, names: list[str]) -> None:
    require_capnp()
    require_pycapnp()
    theirs = reference_request(names, cwd=corpus_092, import_path=["c++/src"])
    with _cwd(corpus_092):
        ours = compile_schema(names, import_path=["c++/src"], no_standard_import=True)
    normalise_request_values(ours, theirs)
    difference = request_difference(ours, theirs)
    assert difference is None, difference


# HEAD (1.x) files against libcapnp 1.x: tests/schema/test_capnp_1x.py.


def test_float_defaults_are_exact(corpus_092: Path) -> None:
    with _cwd(corpus_092):
        request = compile_schema(["c++/src/capnp/test.capnp"], import_path=["c++/src"],
                                 no_standard_import=True)
    consts = {n.shortName: n.const for n in request.nodes if n.const is not None}
    value = consts["float32Const"]
    assert value is not None and value.value.which == "float32"
    assert math.isclose(value.value.float32, 1234.5)
    assert isinstance(model.Value().float64, float)


# ------------------------------------------------------------------------ small snippets

_H = "@0xd508eebdc2dc42b8;\n"
VALID_SNIPPETS = {
    "file_annotation_and_doc": _H + "# file doc\nannotation a(file, struct) :Text;\n$a(\"x\");\n"
                               "struct S $a(\"y\") {}\n",
    "using_forms": _H + "struct A { struct B {} }\nusing A.B;\nusing C = A;\n"
                   "struct S { b @0 :B; c @1 :C; d @2 :C.B; }\n",
    "defaults_all_scalars": _H + "enum E { a @0; b @1; }\nstruct S {\n"
                            " a @0 :Bool = true; b @1 :Int8 = -128; c @2 :Int16 = 0x7fff;\n"
                            " d @3 :Int32 = -0x80000000; e @4 :Int64 = -9223372036854775808;\n"
                            " f @5 :UInt8 = 0377; g @6 :UInt16 = 65535;\n"
                            " h @7 :UInt32 = 4000000000;\n"
                            " i @8 :UInt64 = 0xffffffffffffffff; j @9 :Float32 = -inf;\n"
                            " k @10 :Float64 = nan; l @11 :Float32 = 1e-3; m @12 :E = b;\n"
                            " n @13 :Text = \"a\\tb\\x41\\101\" \"cd\";\n"
                            " o @14 :Data = 0x\"de ad\";\n"
                            " p @15 :Data = \"bytes\"; q @16 :Void = void;\n"
                            " r @17 :Float64 = 7;\n}\n",
    "pointer_defaults": _H + "struct P { x @0 :Int32; l @1 :List(Text); u :union { a @2 :Void;"
                        " b @3 :Int8; } g :group { h @4 :Bool; } }\n"
                        "struct S { p @0 :P = (x = 5, l = [\"a\", \"b\"], u = (b = 3),"
                        " g = (h = true));\n ll @1 :List(List(Int16)) = [[1, 2], [], [3]];\n"
                        " lp @2 :List(P) = [(x = 1), (u = (a = void))];\n"
                        " le @3 :List(Bool) = [true, false, true]; }\n",
    "consts": _H + "const a :Int32 = 5;\nconst b :Int64 = .a;\nstruct S { const c :Text = \"t\";"
              " f @0 :Text = .S.c; g @1 :Int64 = .b; }\nconst l :List(Float32) = [1, 2.5];\n"
              "const s :S = (f = \"x\");\n",
    "unions_and_groups": _H + "struct S {\n a @0 :Int32;\n union { b @1 :Void; c @2 :Int64;"
                         " d :group { e @3 :Bool; f @4 :Text; } }\n n :union { x @5 :Int8;"
                         " y @6 :Int16; z :union { p @7 :Int32; q @8 :Float64; } }\n"
                         " r @9! :union { s @10 :UInt8; t @11 :UInt8; }\n}\n",
    "retro_union": _H + "struct S { a @0 :Int32; u @2! :union { b @1 :Int32; c @3 :Text; } }\n",
    "interfaces": _H + "struct P { a @0 :Int32; }\ninterface A { m @0 (x :Int32 = 5, y :Text"
                  " = \"d\") -> (r :P); }\ninterface B extends(A) { n @0 P -> P; o @1 ();"
                  " p @2 () -> (); }\ninterface C extends(A, B) { struct @0 (enum :Int8); }\n",
    "generics": _H + "struct G(T, U) { t @0 :T; u @1 :U; struct In(V) { v @0 :V;"
                "t @1 :T; } in @2 :In(Text); }\nstruct S { a @0 :G(Text, Data);"
                " b @1 :G(Text, Data).In(S); c @2 :G; d @3 :G(List(Int32), G(Text, Text)); }\n"
                "interface I(T) { m @0 [X] (x :X, t :T) -> (g :G(X, T)); }\n"
                "struct W(T) { i @0 :I(T); j @1 :I(Text); }\n",
    "generic_alias": _H + "struct G(T) { using Self = G(T); using Tx = G(Text); s @0 :Self;"
                     " x @1 :Tx; t @2 :T; }\nstruct S { a @0 :G(Data).Self; b @1 :G(Data).Tx; }\n",
    "annotations_everywhere": _H + "annotation a(*) :Text;\nannotation v(*) :Void;\n"
                              "struct S $a(\"s\") { f @0 :Int32 $a(\"f\") $v; g :group $a(\"g\")"
                              " { h @1 :Int32; }\n"
                              " u :union $a(\"u\") { x @2 :Int8; y @3 :Int8; } }\n"
                              "enum E $a(\"e\") { x @0 $a(\"x\"); }\n"
                              "interface I $a(\"i\") {\n"
                              " m @0 (p :Int32 $a(\"p\")) -> () $a(\"m\"); }\n"
                              "const c :Int8 = 1 $a(\"c\");\n"
                              "annotation n(struct) :Int8 $a(\"n\");\n",
    "struct_annotation_value": _H + "struct O { a @0 :Int32; b @1 :List(Text); }\n"
                               "annotation o(struct) :O;\nstruct S $o(a = 1, b = [\"x\"]) {}\n",
    "keyword_names": _H + "struct S { struct @0 :Int32; enum @1 :Int8; union @2 :Text;"
                     " const @3 :Bool; using @4 :Int8; interface @5 :Int8; annotation @6 :Int8;"
                     " group :group { import @7 :Int8; } }\n",
    "nested_doc_comments": _H + "struct S {\n  # struct doc\n  a @0 :Int32;  # a doc\n"
                           "  # more a\n\n  # orphan\n  b @1 :Int32;\n  g :group {\n"
                           "    # group doc\n    c @2 :Int8;\n  }\n}\n# S late doc\n"
                           "enum E {\n  x @0;\n  # x doc\n}\n",
    "empty_and_void_structs": _H + "struct E {}\nstruct V { a @0 :Void; b @1 :Void; }\n"
                              "struct B { a @0 :Bool; b @1 :Bool; c @2 :Int8; d @3 :Bool; }\n",
    "any_types": _H + "struct S { a @0 :AnyPointer; b @1 :AnyStruct; c @2 :AnyList;"
                 " d @3 :Capability; e @4 :List(AnyList); f @5 :List(Capability); }\n",
    "import_std": _H + 'using Cxx = import "/capnp/c++.capnp";\n$Cxx.namespace("x");\n'
                  'struct S { a @0 :import "/capnp/schema.capnp".Node; }\n',
    "stream_method": _H + "interface I { w @0 (d :Data) -> stream; e @1 (); }\n",
    "gen_nested_iface": _H + "struct G(T) { interface I { m @0 (t :T) -> (u :T); } }\n"
                             "struct S { i @0 :G(Text).I; }\n",
    "gen_superclass": _H + "interface B(T) { m @0 (t :T); }\ninterface D extends(B(Text)) {}\n"
                           "interface E(U) extends(B(U)) {}\n",
    "gen_const": _H + "struct G(T) { t @0 :T; const c :G(Text) = (t = \"x\"); }\n"
                      "const d :G(Data) = (t = \"y\");\n",
    "gen_annotation": _H + "struct G(T) { annotation a(struct) :T; }\n"
                           "struct S $G(Text).a(\"hi\") {}\n",
    "gen_inner_inherit": _H + "struct G(T) { struct In { t @0 :T; } i @0 :In; j @1 :G(Data).In; "
                              "}\n",
    "import_relative": _H + 'struct S { n @0 :import "/capnp/schema.capnp".Node.NestedNode; }\n',
    "enum_in_iface": _H + "interface I { enum E { a @0; } m @0 (e :E = a) -> (f :E); }\n",
    "union_discrim_order": _H + "struct S { union { a @3 :Int8; b @1 :Void; c @0 :Text; "
                                "d @2 :Int64; } }\n",
    "group_in_union_in_group": _H + "struct S { g :group { union { a @0 :Int8; "
                                    "h :group { b @1 :Int16; c @2 :Text; } } } x @3 :Bool; }\n",
    "float_edge": _H + "const a :Float32 = 3.4028235e38;\nconst b :Float64 = -0.0;\n"
                       "const c :Float32 = 1e-45;\nconst d :Float64 = 1.7976931348623157e308;\n"
                       "const e :Float32 = 16777217;\n",
    "list_of_lists_struct": _H + "struct P { a @0 :Int8; }\n"
                                 "const l :List(List(P)) = [[(a = 1)], [], [(a = 2), (a = 3)]];\n"
                                 "const e :List(Text) = [];\n"
                                 "const v :List(Void) = [void, void];\n",
    "const_ref_member": _H + "struct A { const x :Int32 = 7; "
                             "struct B { const y :List(Int32) = [.A.x]; } }\n"
                             "const z :Int32 = A.x;\nconst w :List(Int32) = A.B.y;\n",
    "param_defaults": _H + "struct P { x @0 :Int8; }\n"
                           "interface I { m @0 (a :P = (x = 3), b :List(Int8) = [1], c :Text = "
                           "\"t\", d :I = null) -> (r :Int8 = 5); }\n",
    "nested_unions_retro": _H + "struct S { a @0 :Int8; b @1 :Text; u @3! :union { c @2 :Int8; "
                                "d @4 :Int8; } }\n",
    "data_in_struct": _H + "struct S { d @0 :Data = 0x\"0102\"; t @1 :Text = \"\"; "
                           "e @2 :Data = \"\"; }\n",
    "interface_field": _H + "interface I {}\nstruct S { i @0 :I; l @1 :List(I); }\n",
    "deep_scope_lookup": _H + "struct A { struct B { struct C { x @0 :D; } } struct D {} }\n",
    "annotation_struct_list": _H + "struct O { a @0 :Int32; }\n"
                                   "annotation o(field, struct) :List(O);\n"
                                   "struct S $o([(a = 1), (a = 2)]) { f @0 :Int8 $o([]); }\n",
    "method_annotations_params": _H + "annotation a(param, method) :Int8;\n"
                                      "interface I { m @0 (x :Int8 $a(1), y :Int8) -> (z :Int8 "
                                      "$a(2)) $a(3); }\n",
    "bool_holes": _H + "struct S { a @0 :Bool; b @1 :Int64; c @2 :Bool; d @3 :Int8; e @4 :Int16; "
                       "f @5 :Int32; g @6 :Bool; }\n",
    "struct_constants": _H + "struct S { x @0 :Int8; }\nconst c :S = (x = 5);\n"
                        "const d :S = .c;\nconst e :List(S) = [.c, (x = 1)];\n",
    "embed_self": _H + 'const a :Data = embed "x.capnp";\nconst b :Text = embed "x.capnp";\n',
    "float_overflow": _H + "struct S { x @0 :Float32 = 1e100; y @1 :Float64 = 1e400;"
                      " z @2 :Float32 = -1e-50; }\n",
    "integer_wrap": _H + "struct S { x @0 :Int64 = 9223372036854775807;"
                    " y @1 :UInt64 = 18446744073709551617; }\n",
    "union_constant": _H + "struct S { a @0 :Int8; b @1 :Text; union { c @2 :Void; d @3 :Bool; }"
                      " e @4 :Bool; }\nconst c :S = (a = 1, d = true, e = true, b = \"x\");\n",
    "generic_inner_default": _H + "struct Outer(T) { struct Inner { t @0 :T; } }\n"
                             "struct U { i @0 :Outer(Text).Inner = (t = \"x\"); }\n",
    "any_defaults": _H + "struct P { x @0 :Int8; }\nstruct S { a @0 :AnyPointer = .c;"
                    " b @1 :AnyStruct = .c; }\nconst c :P = (x = 1);\n",
    # A trailing comma (an empty last item) is dropped by capnp's lexer from every list.
    "trailing_comma_values": _H + "struct P { x @0 :Int8; l @1 :List(Int8); }\n"
                             "const a :List(Int8) = [1, 2,];\n"
                             "const b :List(P) = [(x = 1), (x = 2, l = [3,],),];\n"
                             "const c :List(Text) = [\"a\", # a comment\n  \"b\", # another\n];\n"
                             "const d :P = (x = 1,);\nconst e :List(List(Int8)) = [[1,], [],];\n",
    "trailing_comma_generics": _H + "struct G(A, B,) { a @0 :A; b @1 :B; }\n"
                               "struct S { g @0 :G(Text, Data,); }\n"
                               "interface I(T,) { m @0 [U, V,] (u :U, t :T,) -> (v :V,); }\n"
                               "interface J extends(I(Text),) {}\n"
                               "interface K extends(I(Data), J,) {}\n",
    "trailing_comma_annotations": _H + "annotation a(struct, field,) :List(Int8);\n"
                                  "annotation b(*,) :Void;\n"
                                  "struct S $a([1,]) $b { f @0 :Int8 $a([2, 3,],); }\n",
}


@pytest.mark.parametrize("key", sorted(VALID_SNIPPETS))
def test_snippet_same_as_capnp(tmp_path: Path, key: str) -> None:
    require_capnp()
    require_pycapnp()
    (tmp_path / "x.capnp").write_text(VALID_SNIPPETS[key], encoding="utf-8")
    theirs = reference_request(["x.capnp"], cwd=tmp_path, import_path=["/usr/include"])
    with _cwd(tmp_path):
        ours = compile_schema(["x.capnp"], import_path=["/usr/include"],
                              no_standard_import=True)
    normalise_request_values(ours, theirs)
    difference = request_difference(ours, theirs)
    assert difference is None, difference


# ------------------------------------------------------------ which imported nodes appear

_LIB = """@0xd508eebdc2dc42b9;
struct G(T) { t @0 :T; }
struct Arg { x @0 :Int8; struct Inner { y @0 :Int8; } }
struct OnlyConst { z @0 :Int8; }
const libConst :OnlyConst = (z = 4);
enum En { a @0; b @1; }
annotation ann(struct, field) :Arg;
interface Base { m @0 (a :Arg.Inner) -> (); }
struct Unused { u @0 :Int8; }
struct Parent { struct Child { c @0 :Int8; } g :group { h @0 :En; } }
"""
_MAINS = {
    "unused_import": 'using L = import "lib.capnp";\n',
    "brand_arguments": 'using L = import "lib.capnp";\n'
                       "struct S { a @0 :L.G(L.Arg); e @1 :L.G(List(L.Unused)); }\n"
                       "interface J { m @0 () -> L.G(L.Arg.Inner); n @1 L.Arg -> (); }\n",
    "values_are_not_dependencies": 'using L = import "lib.capnp";\n'
                                   "struct S { a @0 :L.OnlyConst = L.libConst; }\n",
    "annotation_and_alias": 'using L = import "lib.capnp";\nusing X = L.Unused;\n'
                            "struct S $L.ann(x = 1) {}\n",
    "parents_and_groups": 'using L = import "lib.capnp";\n'
                          "struct S { d @0 :L.Parent.Child; g @1 :L.G(L.Parent); }\n"
                          "const v :L.G(L.Arg) = (t = (x = 5));\n"
                          "interface I extends(L.Base) {}\n",
    "enum_values": 'using L = import "lib.capnp";\nconst c :L.En = b;\n'
                   "struct S { x @0 :List(L.En) = [a]; }\n",
}


@pytest.mark.parametrize("key", sorted(_MAINS))
def test_imported_nodes_as_capnp_selects_them(tmp_path: Path, key: str) -> None:
    """capnp sends the requested file in full plus, transitively, what its nodes use (types,
    generic arguments, annotations, superclasses) and their enclosing scopes."""
    require_capnp()
    require_pycapnp()
    (tmp_path / "lib.capnp").write_text(_LIB)
    (tmp_path / "main.capnp").write_text(_H + _MAINS[key])
    theirs = reference_request(["main.capnp"], cwd=tmp_path)
    with _cwd(tmp_path):
        ours = compile_schema(["main.capnp"], no_standard_import=True)
    normalise_request_values(ours, theirs)
    difference = request_difference(ours, theirs)
    assert difference is None, difference


# ------------------------------------------------------- HEAD files against capnp 0.9.2

#: HEAD files whose syntax capnp 0.9.2 still reads (the others use 1.x constructs).
HEAD_FILES_092_READS = [
    "c++/samples/addressbook.capnp",
    "c++/samples/calculator.capnp",
    "c++/src/capnp/c++.capnp",
    "c++/src/capnp/compat/byte-stream.capnp",
    "c++/src/capnp/compat/http-over-capnp.capnp",
    "c++/src/capnp/compat/json.capnp",
    "c++/src/capnp/compat/json-test.capnp",
    "c++/src/capnp/persistent.capnp",
    "c++/src/capnp/rpc.capnp",
    "c++/src/capnp/schema.capnp",
    "c++/src/capnp/stream.capnp",
]


@pytest.mark.parametrize("name", HEAD_FILES_092_READS)
def test_head_file_same_request_as_capnp(corpus_head: Path, name: str) -> None:
    require_capnp()
    require_pycapnp()
    theirs = reference_request([name], cwd=corpus_head, import_path=["c++/src"])
    with _cwd(corpus_head):
        ours = compile_schema([name], import_path=["c++/src"], no_standard_import=True)
    normalise_request_values(ours, theirs)
    difference = request_difference(ours, theirs)
    assert difference is None, difference


_BLOCK_TEXT_AS_STRING = (
    'const blockText :Text = "foo bar baz\\n\\"qux\\" `corge` \'grault\'\\n'
    'regular\\"quoted\\"linegarply\\\\nwaldo\\\\tfred\\\\\\"plugh\\\\\\"xyzzy\\\\\\\'thud\\n";'
)
_IMPLIED_WRITTEN_OUT = {
    'textStruct @0 :TextStruct = "foo";': 'textStruct @0 :TextStruct = (text = "foo");',
    'textStruct = "bar",': 'textStruct = (text = "bar"),',
    'textStructList = ["baz", (text = "qux", i = 123)],':
        'textStructList = [(text = "baz"), (text = "qux", i = 123)],',
    "intGroup = 123": "intGroup = (i = 123)",
}


def _without_1x_syntax(text: str) -> str:
    """HEAD test.capnp with its 1.x constructs written the 0.9.2 way (same meaning)."""
    start = text.index("const blockText :Text =")
    end = text.index(";", start) + 1
    text = text[:start] + _BLOCK_TEXT_AS_STRING + text[end:]
    for new_syntax, old_syntax in _IMPLIED_WRITTEN_OUT.items():
        assert new_syntax in text
        text = text.replace(new_syntax, old_syntax)
    return text


def test_head_test_capnp_means_what_092_syntax_means(corpus_head: Path, tmp_path: Path) -> None:
    """cara on HEAD's test.capnp (backtick block text, implied first fields) gives the nodes
    capnp 0.9.2 gives for the same file with those constructs spelled the old way."""
    require_capnp()
    require_pycapnp()
    source = corpus_head / "c++/src/capnp"
    target = tmp_path / "c++/src/capnp"
    target.mkdir(parents=True)
    (target / "test.capnp").write_text(_without_1x_syntax((source / "test.capnp").read_text()))
    for imported in ("c++.capnp", "stream.capnp"):
        (target / imported).symlink_to(source / imported)
    (target / "testdata").symlink_to(source / "testdata")
    name = "c++/src/capnp/test.capnp"
    theirs = reference_request([name], cwd=tmp_path, import_path=["c++/src"])
    with _cwd(corpus_head):
        ours = compile_schema([name], import_path=["c++/src"], no_standard_import=True)
    normalise_request_values(ours, theirs)
    ours.sourceInfo = theirs.sourceInfo  # the two files differ in text, not in meaning
    difference = request_difference(ours, theirs)
    assert difference is None, difference


def test_any_pointer_members_keep_their_type(corpus_092: Path) -> None:
    """A struct value's AnyPointer members are ``PointerValue``s with the type of what they
    hold (the schema cannot say); the content matches what pycapnp reads from capnp's own
    compilation of the same constant."""
    capnp = require_pycapnp()
    with _cwd(corpus_092):
        request = compile_schema(["c++/src/capnp/test.capnp"], import_path=["c++/src"],
                                 no_standard_import=True)
    by_name = {n.displayName: n for n in request.nodes}
    const = by_name["c++/src/capnp/test.capnp:anyPointerConstants"].const
    assert const is not None and const.value.struct is not None
    members = const.value.struct.value
    assert isinstance(members, dict)
    as_struct = members["anyKindAsStruct"]
    as_list = members["anyKindAsList"]
    assert isinstance(as_struct, model.PointerValue) and as_struct.type.which == "struct"
    assert isinstance(as_list, model.PointerValue) and as_list.type.which == "list"
    parser = capnp.SchemaParser()
    module = parser.load(str(corpus_092 / "c++/src/capnp/test.capnp"),
                         imports=[str(corpus_092 / "c++/src")])
    theirs = module.anyPointerConstants.anyKindAsStruct.as_struct(module.TestAllTypes)
    assert isinstance(as_struct.value, dict)
    assert as_struct.value["textField"] == theirs.textField
    assert as_struct.value["int32Field"] == theirs.int32Field
