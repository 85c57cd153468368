"""The parser: declarations and expressions as in capnp's ``grammar.capnp``."""

from __future__ import annotations

from pathlib import Path

import pytest

from cara.schema.ast import Declaration, Expression
from cara.schema.lexer import tokenize
from cara.schema.parser import parse_file


def parse(text: str) -> tuple[Declaration, list[tuple[int, int, str]]]:
    errors: list[tuple[int, int, str]] = []
    root = parse_file(tokenize(text), len(text), lambda s, e, m: errors.append((s, e, m)))
    return root, errors


def one(text: str) -> Declaration:
    root, errors = parse(text)
    assert errors == []
    assert len(root.nested) == 1
    return root.nested[0]


def test_file_id_and_annotation() -> None:
    root, errors = parse('@0xd508eebdc2dc42b8;\n$Foo.bar("x");\n')
    assert errors == []
    naked_id, naked_ann = root.nested
    assert naked_id.kind == "nakedId" and naked_id.id is not None
    assert naked_id.id.value == 0xD508EEBDC2DC42B8
    assert naked_ann.kind == "nakedAnnotation" and naked_ann.annotation is not None
    assert naked_ann.annotation.value is not None
    assert naked_ann.annotation.value.kind == "string"


def test_struct_with_members() -> None:
    decl = one("struct Foo @0xd508eebdc2dc42b8 (T, U) $a {\n a @0 :Int32 = 5 $b;\n"
               " u :union { x @1 :Void; y @2 :Text; }\n g :group { z @3 :Bool; }\n"
               " union { p @4 :Int8; q @5 :Int8; }\n r @6! :union { s @7 :Int8; t @8 :Int8; }\n"
               " struct Inner {}\n}\n")
    assert decl.kind == "struct" and decl.name is not None and decl.name.value == "Foo"
    assert decl.id_kind == "uid"
    assert [p.value for p in decl.parameters] == ["T", "U"]
    assert len(decl.annotations) == 1
    kinds = [(d.kind, d.name.value if d.name else None) for d in decl.nested]
    assert kinds == [("field", "a"), ("union", "u"), ("group", "g"), ("union", None),
                     ("union", "r"), ("struct", "Inner")]
    field = decl.nested[0]
    assert field.id is not None and field.id.value == 0
    assert field.value is not None and field.value.kind == "positiveInt"
    retro = decl.nested[4]
    assert retro.id is not None and retro.id.value == 6


def test_keywords_are_contextual() -> None:
    decl = one("struct S { struct @0 :Int32; union @1 :Text; const :group { x @2 :Int8; } }")
    assert [(d.kind, d.name.value if d.name else None) for d in decl.nested] == [
        ("field", "struct"), ("field", "union"), ("group", "const")]


def test_interface_methods() -> None:
    decl = one("interface I @0xd508eebdc2dc42b8 extends(A, B(Text)) {\n"
               " a @0 (x :Int32 = 5, y :Text $ann) -> (r :Data);\n"
               " b @1 Params -> Results;\n c @2 [T, U] (t :T) -> stream;\n d @3 ();\n}")
    assert len(decl.superclasses) == 2
    a, b, c, d = decl.nested
    assert a.params is not None and a.params.kind == "namedList"
    assert [p.name.value for p in a.params.named] == ["x", "y"]
    assert a.params.named[0].default is not None
    assert a.results is not None and a.results.kind == "namedList"
    assert b.params is not None and b.params.kind == "type"
    assert [p.value for p in c.parameters] == ["T", "U"]
    assert c.results is not None and c.results.kind == "stream"
    assert d.results is None


def test_annotation_declaration_targets() -> None:
    decl = one("annotation foo @0xd508eebdc2dc42b8 (struct, field) :List(Text);")
    assert decl.targets == {"struct", "field"}
    star = one("annotation bar (*) :Void;")
    assert len(star.targets) == 12


def test_using_and_const() -> None:
    root, errors = parse('using Foo = import "foo.capnp".Bar;\nusing import "x.capnp".Baz;\n'
                         "const c :Int32 = -5;\n")
    assert errors == []
    first, second, const = root.nested
    assert first.name is not None and first.name.value == "Foo"
    assert second.name is not None and second.name.value == "Baz"
    assert const.value is not None and const.value.kind == "negativeInt"
    assert const.value.value == 5


def test_expression_forms() -> None:
    const = one('const c :T = (a = [1, -2.5, -inf, "x" "y", 0x"00", .Abs.b, c.d(e = f)],'
                ' g = embed "file", h = import "other");')
    value = const.value
    assert value is not None and value.kind == "tuple"
    names = [p.name.value for p in value.params if p.name is not None]
    assert names == ["a", "g", "h"]
    items = value.params[0].value.elements
    assert [e.kind for e in items] == ["positiveInt", "float", "float", "string", "binary",
                                       "member", "application"]
    assert items[2].value == float("-inf")
    assert items[3].value == "xy"
    app: Expression = items[6]
    assert app.function is not None and app.function.kind == "member"
    assert app.params[0].name is not None and app.params[0].name.value == "e"


def test_generic_annotation_application() -> None:
    decl = one('struct S $G(Text, Data).ann("foo") {}')
    [ann] = decl.annotations
    assert ann.name.kind == "member"
    assert ann.value is not None and ann.value.kind == "string"


def test_doc_comment_reaches_declaration() -> None:
    decl = one("struct S {\n  # doc\n}\n")
    assert decl.doc == "doc\n"


def test_parse_errors_are_per_statement() -> None:
    root, errors = parse("struct A {}\nconst = 5;\nstruct B {}\nfoo bar baz;\n")
    assert [d.name.value for d in root.nested if d.name] == ["A", "B"]
    assert [m for _, _, m in errors] == ["Parse error.", "Parse error."]


def test_old_union_syntax_messages() -> None:
    _, errors = parse("struct S { u @1 union { a @2 :Int8; b @3 :Int8; } }")
    assert len(errors) == 2
    assert "no longer necessary to assign numbers to unions" in errors[0][2]
    assert "should be prefixed with a colon" in errors[1][2]


def test_bad_annotation_target() -> None:
    _, errors = parse("annotation a (bogus) :Void;")
    assert errors == [(14, 19, "Not a valid annotation target.")]


def test_misplaced_declarations_are_marked() -> None:
    root, _ = parse("struct S { g :group { struct T {} } }")
    assert root.nested[0].nested[0].nested[0].misplaced


def test_every_corpus_file_parses(corpus: Path) -> None:
    files = sorted(corpus.glob("capnproto-*/c++/**/*.capnp"))
    assert files
    for path in files:
        root, errors = parse(path.read_text(encoding="utf-8"))
        assert errors == [], path
        assert root.nested, path


@pytest.mark.parametrize("text", ["struct;", "struct A B {}", "enum E @ {}", "x @0 :;",
                                  "const c :Int32 =;", "struct S { a @0 Int32; }",
                                  "struct S { union @0 { } }"])
def test_malformed_statements(text: str) -> None:
    _, errors = parse(text)
    assert errors and errors[0][2] == "Parse error."
