"""The lexer: tokens, statements and doc comments as capnp's lexer makes them.

Expected values come from the Cap'n Proto language documentation and capnp's own behaviour
(``lexer.c++``); the end-to-end check that the same doc comments come out is in the corpus test
(``sourceInfo`` equals capnp's).
"""

from __future__ import annotations

import pytest

from cara.schema.lexer import MAX_NESTING, LexError, Statement, Token, tokenize


def kinds(tokens: list[Token]) -> list[tuple[str, object]]:
    return [(t.kind, t.value) for t in tokens]


def test_simple_statement() -> None:
    [st] = tokenize("foo @0 :Int32;")
    assert kinds(st.tokens) == [("identifier", "foo"), ("operator", "@"), ("integer", 0),
                                ("operator", ":"), ("identifier", "Int32")]
    assert st.block is None
    assert (st.start, st.end) == (0, 14)


@pytest.mark.parametrize("text, value", [
    ("0x1F", 31), ("017", 15), ("0", 0), ("123", 123),
    ("18446744073709551615", 2**64 - 1),
])
def test_integers(text: str, value: int) -> None:
    [st] = tokenize(f"{text};")
    assert kinds(st.tokens) == [("integer", value)]


@pytest.mark.parametrize("text, value", [("1.5", 1.5), ("1e3", 1000.0), ("2.5E-1", 0.25),
                                         ("1.", 1.0), ("1.5e+3", 1500.0)])
def test_floats(text: str, value: float) -> None:
    [st] = tokenize(f"{text};")
    assert kinds(st.tokens) == [("float", value)]


def test_string_escapes() -> None:
    [st] = tokenize(r'"a\tb\n\x41\101\\\"\'";')
    assert kinds(st.tokens) == [("string", "a\tb\nAA\\\"'")]


def test_binary_literal() -> None:
    [st] = tokenize('0x"de ad BE ef";')
    assert kinds(st.tokens) == [("binary", b"\xde\xad\xbe\xef")]


def test_operators_run_together() -> None:
    [st] = tokenize("a -> b $c .d;")
    assert [t.value for t in st.tokens] == ["a", "->", "b", "$", "c", ".", "d"]


def test_lists_are_single_tokens() -> None:
    [st] = tokenize("f(a, b c, [1, 2]) ();")
    outer, empty = st.tokens[1], st.tokens[2]
    assert outer.kind == "parenList" and outer.items is not None
    assert [kinds(item) for item in outer.items[:2]] == [
        [("identifier", "a")], [("identifier", "b"), ("identifier", "c")]]
    inner = outer.items[2][0]
    assert inner.kind == "bracketList" and inner.items is not None and len(inner.items) == 2
    assert empty.items == []


@pytest.mark.parametrize("text, sizes", [
    # capnp's lexer (commaDelimitedList): "()" has no items; an empty *last* item is dropped
    # (a trailing comma); every other empty item stays for the parser to report.
    ("()", []), ("(a)", [1]), ("(a,)", [1]), ("(a, b,)", [1, 1]), ("(a, # c\n)", [1]),
    ("(,)", [0]), ("( , )", [0]), ("(a,,)", [1, 0]), ("(a,,b)", [1, 0, 1]), ("(,a)", [0, 1]),
    ("[x = 1,]", [3]), ("[,,]", [0, 0]),
])
def test_trailing_comma_is_dropped(text: str, sizes: list[int]) -> None:
    [st] = tokenize(f"{text};")
    [token] = st.tokens
    assert token.items is not None
    assert [len(item) for item in token.items] == sizes


def test_blocks_nest() -> None:
    [st] = tokenize("struct A { x @0 :Int8; struct B { } }")
    assert st.block is not None and len(st.block) == 2
    nested = st.block[1]
    assert isinstance(nested, Statement) and nested.block == []


def test_doc_comments() -> None:
    text = (
        "struct A {\n  # A's doc\n  #second line\n\n  x @0 :Int8;  # x doc\n  # more x\n\n"
        "  # not a doc comment\n  y @1 :Int8;\n}\n# late\n"
    )
    [st] = tokenize(text)
    assert st.doc == "A's doc\nsecond line\n"
    assert st.block is not None
    assert st.block[0].doc == "x doc\nmore x\n"
    assert st.block[1].doc is None


def test_late_doc_comment_used_when_no_early_one() -> None:
    [st] = tokenize("enum E {\n  a @0;\n}\n# E doc\n")
    assert st.doc == "E doc\n"


def test_comments_and_bom_are_skipped() -> None:
    [st] = tokenize("\ufeff# header\n  # more\nusing X = Y; # trailing\n")
    assert [t.value for t in st.tokens] == ["using", "X", "=", "Y"]
    assert st.doc == "trailing\n"


def test_backtick_lines() -> None:
    [st] = tokenize("const x :Text =\n  `foo\n  `bar baz\n  ;")
    strings = [t.value for t in st.tokens if t.kind == "string"]
    assert strings == ["foo\n", "bar baz\n"]


def test_backtick_anywhere_to_the_line_end() -> None:
    """As libcapnp 1.x lexes it: anywhere on a line, up to "\\r" or "\\n", "#" included."""
    [st] = tokenize('x = "a" `b # c;\r\n `\r;')
    assert [t.value for t in st.tokens[2:]] == ["a", "b # c;\n", "\n"]


@pytest.mark.parametrize("text, offset", [
    ("a @0 :Int8", 10),          # no ';' at the end
    ("struct A {", 10),          # unclosed block
    ("a }", 2),                  # '}' without '{'
    ('x = "abc', 8),             # unterminated string
    ('x = "a\nb";', 6),          # raw newline in a string
    ("x = (a, b];", 9),          # mismatched brackets
    ("x = 09;", 4),              # not octal
    ("x = 0X1f;", 5),            # only a lower-case x makes hex
    ("x = 0x;", 6),              # hex without digits
    ("x = 12ab;", 6),            # a number glued to a name
    ("x = \x00;", 4),            # a control character
    ("x = (a; b);", 6),          # ';' inside a list
])
def test_errors_point_where_lexing_stops(text: str, offset: int) -> None:
    with pytest.raises(LexError) as info:
        tokenize(text)
    assert info.value.offset == offset
    assert info.value.message == "Parse error."


def test_nesting_limit() -> None:
    ok = "x = " + "(" * (MAX_NESTING - 1) + ")" * (MAX_NESTING - 1) + ";"
    assert len(tokenize(ok)) == 1
    with pytest.raises(LexError) as info:
        tokenize("x = " + "[" * 1_000_000 + ";")
    assert "too deep" in info.value.message


def test_large_input_is_linear() -> None:
    text = "".join(f"f{i} @{i} :Int32;\n" for i in range(50_000))
    assert len(tokenize(text)) == 50_000
