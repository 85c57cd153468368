"""Diagnostics: the same messages at the same places as capnp 0.9.2.

The golden files of the capnproto test suite (``testdata/errors.txt``, ``errors2.txt``) are
compared line for line, and a set of small broken schemas is run through both ``capnp compile``
and cara, whose ``file:line:col: error:`` lines must be identical.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from cara.errors import SchemaError
from cara.schema import compile as compile_schema
from cara.schema import compile_string
from cara.schema.diagnostics import SourceText
from tests.support.reference import require_capnp

_ID_LINE = re.compile(r"@0x[0-9a-f]{16};$")


def _cara_errors(directory: Path, name: str, **kwargs: object) -> list[str]:
    old = os.getcwd()
    os.chdir(directory)
    try:
        compile_schema([name], no_standard_import=True, **kwargs)  # type: ignore[arg-type]
    except SchemaError as exc:
        return exc.diagnostics
    finally:
        os.chdir(old)
    return []


@pytest.mark.parametrize("name, golden", [
    ("errors.capnp.nobuild", "errors.txt"),
    ("errors2.capnp.nobuild", "errors2.txt"),
])
def test_golden_error_files(corpus_092: Path, name: str, golden: str) -> None:
    testdata = corpus_092 / "c++/src/capnp/testdata"
    got = [re.sub(r"^.*errors2?[.]capnp[.]nobuild:", "file:", line)
           for line in _cara_errors(testdata, name, src_prefix=".")]
    want = (testdata / golden).read_text().splitlines()
    assert got == want


H = "@0xd508eebdc2dc42b8;\n"
SNIPPETS = {
    "missing_id": "struct Foo {}\n",
    "empty_file": "",
    "truncated": H + "struct Foo {\n  a @0 :Int32;\n",
    "missing_semicolon": H + "struct Foo { a @0 :Int32 }\n",
    "bad_escape": H + 'const x :Text = "a\\q";\n',
    "invalid_id": "@0x1234;\n",
    "duplicate_id": H + "struct Foo @0x1234 {}\nstruct Bar @0xd508eebdc2dc42b8 {}\n",
    "ordinal_too_big": H + "enum E { a @0; b @70000; }\n",
    "skipped_method": H + "interface I { a @0 (); b @2 (); }\n",
    "dup_enumerant": H + "enum E { a @0; a @1; }\n",
    "not_a_type": H + "const c :Int32 = 1;\nstruct S { f @0 :c; }\n",
    "not_struct_params": H + "interface I { m @0 Int32 -> (); }\n",
    "not_interface": H + "struct S {}\ninterface I extends(S) {}\n",
    "bad_default_enum": H + "enum E { a @0; }\nstruct S { f @0 :E = b; }\n",
    "bool_mismatch": H + "struct S { f @0 :Bool = 1; }\n",
    "float_for_int": H + "struct S { f @0 :Int8 = 1.5; }\n",
    "list_mismatch": H + "struct S { f @0 :List(Int8) = [1, 300, \"x\"]; }\n",
    "data_from_int": H + "struct S { f @0 :Data = 5; }\n",
    "object_renamed": H + "struct S { f @0 :Object; }\n",
    "group_ordinal": H + "struct S { g @0 :group { a @1 :Int32; } }\n",
    "void_annotation_value": H + "annotation a(struct) :Void;\nstruct S $a(5) {}\n",
    "annotation_target": H + "annotation a(field) :Void;\nstruct S $a {}\n",
    "const_struct_mismatch": H + "struct A {}\nstruct B {}\nconst a :A = ();\n"
                             "struct S { f @0 :B = .a; }\n",
    "unqualified_const_in_scope": H + "struct S { const c :Int32 = 5;\n  f @0 :Int32 = c; }\n",
    "negative_unsigned": H + "const x :UInt8 = -1;\n",
    "generic_primitive": H + "struct G(T) {}\nstruct S { f @0 :G(Int32); }\n",
    "keyword_names_ok_then_error": H + "struct S { struct @0 :Int32; enum @1 :Foo; }\n",
    "method_param_null": H + "interface I { m @0 (a :Int32 = null); }\n",
    "union_in_union": H + "struct S { u :union { a @0 :Int32; b @1 :Int32; union { c @2 :Int8;"
                      " d @3 :Int8; } } }\n",
    "embed_missing": H + 'const x :Data = embed "nope.bin";\n',
    "import_missing": H + 'using X = import "nope.capnp";\n',
    "no_such_member_import": H + 'struct S { f @0 :import "/capnp/c++.capnp".Nope; }\n',
    "trailing_garbage": H + "struct S {} }\n",
    "unicode_name": H + "struct Ünïcode {}\n",
    "gen_method_results": H + "struct G(T) { t @0 :T; }\n"
                              "interface I(A) { m @0 [X] (x :X) -> G(X); n @1 () -> G(A); "
                              "o @2 [Y] (y :G(Y)) -> (z :List(Y)); }\n",
    "gen_param_alias": H + "struct G(T) { using X = T; x @0 :X; l @1 :List(X); }\n",
    "gen_list_of_param": H + "struct G(T) { l @0 :List(T); ll @1 :List(List(T)); }\n"
                             "struct S { g @0 :G(Text); }\n",
    "enum_const": H + "enum E { a @0; b @1; }\nconst e :E = b;\nconst f :E = .e;\n"
                      "const l :List(E) = [a, b, a];\n",
    "gen_file_alias": H + "struct G(T, U) { t @0 :T; u @1 :U; }\nusing GT = G(Text);\n"
                          "struct S { a @0 :GT; }\n",
    "enum_constant_mismatch": H + "enum E { a @0; b @1; }\nconst e :E = b;\n"
                              "const l :List(E) = [.e];\nstruct P { e @0 :E; }\n"
                              "const p :P = (e = .e);\n",
    "list_of_second_param": H + "struct G(T, U) { l @0 :List(U); }\n",
    "list_of_implicit_param": H + "interface I { m @0 [T, U] (a :List(U), b :List(T)); }\n",
    "translate_00": H + 'struct A { x @0 :B; }\n'
                        'struct B { y @0 :Nope; }\n'
                        'const c :A = (x = (y = 1));\n',
    "translate_01": H + 'struct S { a @0 :Int32 $nope; b @1 :Nope; }\n',
    "translate_02": H + 'annotation a(struct) :Int32;\nstruct S $a("x") $a $a(1) { }\n',
    "translate_03": H + 'interface I { a @0 (x :Nope) -> (y :Nope2); b @0 (); }\n',
    "translate_04": H + 'interface I extends(Nope, Int32) {}\n',
    "translate_05": H + 'enum E { a @0; b @2; }\nstruct S { e @0 :E = c; }\n',
    "translate_06": H + 'struct S { u :union { a @0 :Int8; } g :group { } }\n',
    "translate_07": H + 'struct S { a @0 :Int8 = 256; b @1 :Int8 = -129; '
                        'c @2 :UInt64 = -1; d @3 :Float32 = "x"; }\n',
    "translate_08": H + 'const a :Int32 = .b;\nconst b :Int32 = .a;\n',
    "translate_09": H + 'struct S { l @0 :List(Int8) = [1, "x", 300]; s @1 :Text = [1]; }\n',
    "translate_10": H + 'struct S { a @0 :S = (a = (b = 1)); }\n',
    "translate_11": H + 'struct G(T) {}\n'
                        'struct S { a @0 :G(Text).Nope; b @1 :G(Int8); c @2 :G(Text)(Data); }\n',
    "translate_12": H + 'using X = Nope;\nstruct S { a @0 :X; }\n',
    "translate_13": H + 'struct S { a @0 :Int32; a @1 :Text; struct a {} }\n',
    "translate_14": H + 'struct Foo {}\nstruct foo {}\nenum bar { Baz @0; }\n',
    "translate_15": H + 'struct S { d @0 :Data = 0x"zz"; }\n',
    "translate_16": H + 'const t :Text = 0x"00";\nconst l :List(Text) = ["a", 0x"00"];\n',
    "translate_17": H + 'struct S { x @0 :Int32 = .S; y @1 :AnyPointer = 5; }\n',
    "translate_18": H + 'struct S { a @0 :Int32; }\nconst c :S = (a = 1, a = 2);\n',
    "translate_19": H + 'struct S { union { a @0 :Int8; b @1 :Int8; } }\n'
                        'const c :S = (a = 1, b = 2);\n',
    "any_struct_literal": H + "struct S { b @0 :AnyStruct = (); c @1 :AnyList = []; }\n",
    "parse_00": H + 'struct S { u @1 :.Text; }' + "\n",
    "parse_01": H + 'struct S { a @0 :Int32 = ; }' + "\n",
    "parse_02": H + 'struct S { a @0 Int32; }' + "\n",
    "parse_03": H + 'struct S { a :Int32; }' + "\n",
    "parse_04": H + 'struct S { a @x :Int32; }' + "\n",
    "parse_05": H + 'struct S { a @0 :Int32 $; }' + "\n",
    "parse_06": H + 'const c :Int32 5;' + "\n",
    "parse_07": H + 'const = 5;' + "\n",
    "parse_08": H + 'struct S { a @0 :List(; }' + "\n",
    "parse_09": H + 'struct S { a @0 :Int32 = (a = ); }' + "\n",
    "parse_10": H + 'interface I { m @0 (a Int32); }' + "\n",
    "parse_11": H + 'interface I { m @0 () -> ; }' + "\n",
    "parse_12": H + 'interface I { m @0 -> (); }' + "\n",
    "parse_13": H + 'enum E { a; }' + "\n",
    "parse_14": H + 'enum E { a @0 b; }' + "\n",
    "parse_15": H + 'annotation a :Int32;' + "\n",
    "parse_16": H + 'annotation a(foo) :Int32;' + "\n",
    "parse_17": H + 'using = Foo;' + "\n",
    "parse_18": H + 'using X = ;' + "\n",
    "parse_19": H + 'struct S (T {}' + "\n",
    "parse_20": H + 'struct S @0x123 @0x456 {}' + "\n",
    "parse_21": H + 'foo;' + "\n",
    "parse_22": H + 'struct S { a @0 :Int32 = 1 2; }' + "\n",
    "parse_23": H + 'struct S { a @0 :Int32 = [1, 2; }' + "\n",
    "parse_24": H + 'struct S { union @0 { } }' + "\n",
    "parse_25": H + 'struct S { g :group $x(1) 5 { } }' + "\n",
    # Only an empty *last* item is dropped (a trailing comma); any other is capnp's
    # "Empty list item." over the whole list.
    "empty_item_only": H + 'const a :List(Int8) = [,];\n',
    "empty_item_spaced": H + 'const a :List(Int8) = [ , ];\n',
    "empty_item_middle": H + 'const a :List(Int8) = [1,,2];\n',
    "empty_item_two_commas": H + 'const a :List(Int8) = [1,,];\n',
    "empty_item_struct": H + 'struct P { x @0 :Int8; }\nconst b :P = (,);\n',
    "empty_item_params": H + 'interface I { m @0 (,) -> (a :Int8,,); }\n',
    "empty_item_generic": H + 'struct G(A,,B) {}\ninterface I { m @0 [,] () -> (); }\n',
    "empty_item_targets": H + 'annotation a(,struct) :Void;\n',
    "empty_item_extends": H + 'interface I {}\ninterface J extends(I,,) {}\n',
    "trailing_comma_then_error": H + 'const a :List(Int8) = [1, x y,];\n',
    # After a type that does not resolve capnp checks no const value (but does check an
    # annotation's value, against Void).
    "unresolved_const_type": H + 'const c :Nope = (a = 1);\nconst d :Nope = 5;\n'
                                 'const e :List(Nope) = [1, (a = 2)];\nconst f :Nope.X = [1];\n'
                                 'struct G(T) {}\nconst g :G(Nope) = ();\n',
    "unresolved_annotation_type": H + 'annotation a(struct) :Nope;\nstruct S $a(1) {}\n'
                                      'struct T $a {}\nstruct U $a(x = 1) {}\n',
    "annotation_tuple_mismatch": H + 'annotation a(struct) :Int32;\nstruct S $a(x = 1) {}\n'
                                     'struct T $a(x = 1, y = 2) {}\n',
}


@pytest.mark.parametrize("key", sorted(SNIPPETS))
def test_same_errors_as_capnp(tmp_path: Path, key: str) -> None:
    exe = require_capnp()
    path = tmp_path / "x.capnp"
    path.write_text(SNIPPETS[key], encoding="utf-8")
    proc = subprocess.run([exe, "compile", "--no-standard-import", "-I/usr/include", "-o-",
                           "x.capnp"], cwd=tmp_path, capture_output=True, check=False)
    want = [line for line in proc.stderr.decode("utf-8", "replace").splitlines()
            if ": error: " in line]
    old = os.getcwd()
    os.chdir(tmp_path)
    try:
        try:
            compile_schema(["x.capnp"], import_path=["/usr/include"], no_standard_import=True)
            got: list[str] = []
        except SchemaError as exc:
            got = exc.diagnostics
    finally:
        os.chdir(old)
    # The generated id in the missing-id message is random on both sides.
    assert [_ID_LINE.sub("@0x<id>;", line) for line in got] == \
        [_ID_LINE.sub("@0x<id>;", line) for line in want]


def test_several_errors_in_one_run() -> None:
    with pytest.raises(SchemaError) as info:
        compile_string(H + "struct a {}\nstruct B { X @0 :Int32; y_z @1 :Text; }\n")
    assert len(info.value.diagnostics) == 3
    assert str(info.value).count("\n") == 2


def test_location_formats() -> None:
    text = SourceText("f.capnp", "ab\ncdéf\n")
    assert text.location(0, 2) == "f.capnp:1:1-3"
    assert text.location(3, 3) == "f.capnp:2:1"
    assert text.location(0, 5) == "f.capnp:1"
    # Columns count bytes, as capnp's do: "é" is two bytes in UTF-8.
    assert text.location(6, 7) == "f.capnp:2:5-6"


def test_duplicate_parameter_names() -> None:
    """capnp only notices these in its schema validator; cara reports the same first line."""
    with pytest.raises(SchemaError) as info:
        compile_string(H + "interface I { m @0 (a :Int32, a :Text) -> (); }\n", name="x.capnp")
    [line] = info.value.diagnostics
    assert line.startswith("x.capnp:2:11-12: error: Internal compiler bug: Bootstrap schema "
                           "failed validation:")


_BAD = H + "struct S { a @0 :Nope; }\n"
_IMPORTER = "@0xd508eebdc2dc42b9;\nstruct M { s @0 :import \"/sub/e.capnp\".S; }\n"


@pytest.mark.parametrize("cwd, args", [
    ("work", ["{tmp}/other/e.capnp"]),                      # outside the current directory
    ("work", ["../other/e.capnp"]),
    ("other", ["{tmp}/other/e.capnp"]),                     # inside it
    ("work", ["--src-prefix={tmp}", "{tmp}/other/e.capnp"]),
    ("", ["--src-prefix=other", "other/e.capnp"]),
    ("", ["--src-prefix=./other/", "other/e.capnp"]),
    ("", ["-Ipre/", "m.capnp"]),                             # imported through -I
    ("", ["-I./pre", "m.capnp"]),
    ("", ["-I{tmp}/pre", "-Ipre", "m.capnp"]),
    ("", ["-I.", "-Ipre", "m.capnp"]),
])
def test_file_names_in_diagnostics_as_capnp(tmp_path: Path, cwd: str, args: list[str]) -> None:
    """capnp names a file by the directory it was found through, as that directory was given
    (``-I``, ``--src-prefix``), with its leading ``/`` when it is outside the current one."""
    exe = require_capnp()
    for directory in ("work", "other", "pre/sub"):
        (tmp_path / directory).mkdir(parents=True)
    (tmp_path / "other/e.capnp").write_text(_BAD)
    (tmp_path / "pre/sub/e.capnp").write_text(_BAD)
    (tmp_path / "m.capnp").write_text(_IMPORTER)
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    run_in = tmp_path / cwd
    proc = subprocess.run([exe, "compile", "--no-standard-import", "-o-", *args], cwd=run_in,
                          capture_output=True, check=False,
                          env={**os.environ, "PWD": str(run_in)})
    want = [line for line in proc.stderr.decode().splitlines() if ": error: " in line]
    assert want
    files = [a for a in args if not a.startswith("-")]
    import_path = [a[2:] for a in args if a.startswith("-I")]
    prefixes = [a.split("=", 1)[1] for a in args if a.startswith("--src-prefix=")]
    old = os.getcwd()
    os.chdir(run_in)
    try:
        with pytest.raises(SchemaError) as info:
            compile_schema(files, import_path=import_path, no_standard_import=True,
                           src_prefix=prefixes[0] if prefixes else None)
    finally:
        os.chdir(old)
    assert info.value.diagnostics == want
