"""Cap'n Proto's text format: the struct literals ``capnp convert ...:text`` prints and parses.

A message in text form is a schema-language value expression, e.g.
``(name = "Alice", phones = [(number = "555", type = mobile)])``. This module writes such text
from plain, schema-driven values (what :class:`~cara.codecs.capnp.schema_codec.SchemaCodec`
decodes: a struct is a ``dict`` by field name, groups nest as ``dict``, lists are ``list``,
enums ``int``, Text ``str``, Data ``bytes``, Void ``None``) and parses it back into such values.

The writer reproduces the reference tool byte for byte, because users diff its output:

* which fields appear: every scalar field, every non-null pointer, and the set union member
  (left out only when it is the union's first member holding a null pointer), the union member
  placed by its index among the fields;
* numbers as KJ formats them (``%.15g``/``%.6g`` widened to 17/8 digits when that does not
  read back, no ``+`` in exponents; ``inf``, ``-inf``, ``nan``);
* strings and Data as C-escaped literals, bytes >= 0x80 passed through raw;
* the pretty layout: a record or list stays on one line when each item is at most 24 bytes and a
  record's items add up to at most 64 bytes; otherwise one item per line, indented two spaces per
  level.

Because Data bytes are written raw, :func:`format_text` returns a ``str`` in which undecodable
bytes are carried as surrogates; encode it with ``errors="surrogateescape"`` (or use
:func:`format_text_bytes`).
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from cara.errors import DecodeError
from cara.schema import model

__all__ = [
    "MAX_TEXT_NESTING",
    "format_float32",
    "format_float64",
    "format_text",
    "format_text_bytes",
    "parse_text",
    "scalar_default",
    "struct_fields",
]

#: Deepest nesting of parentheses/brackets the parser accepts (untrusted input must not be able
#: to exhaust the interpreter stack).
MAX_TEXT_NESTING = 100

_F32 = struct.Struct("<f")
_F32_MIN_NORMAL = 1.1754943508222875e-38
_POINTER_TYPES = frozenset({"text", "data", "list", "struct", "interface", "anyPointer"})
_INT_RANGES = {
    "int8": (-(1 << 7), (1 << 7) - 1), "int16": (-(1 << 15), (1 << 15) - 1),
    "int32": (-(1 << 31), (1 << 31) - 1), "int64": (-(1 << 63), (1 << 63) - 1),
    "uint8": (0, 0xFF), "uint16": (0, 0xFFFF), "uint32": (0, 0xFFFFFFFF),
    "uint64": (0, 0xFFFFFFFFFFFFFFFF),
}

# ----------------------------------------------------------------------------- number format


def _to_f32(value: float) -> float:
    try:
        return _F32.unpack(_F32.pack(value))[0]
    except OverflowError:
        return math.copysign(math.inf, value)


def format_float64(value: float) -> str:
    """A Float64 as KJ prints it: shortest of 15 or 17 significant digits that reads back."""
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    text = f"{value:.15g}"
    if float(text) != value:
        text = f"{value:.17g}"
    return text.replace("+", "")


def format_float32(value: float) -> str:
    """A Float32 as KJ prints it: 6 significant digits, or 8 when 6 do not read back."""
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    text = f"{value:.6g}"
    back = _to_f32(float(text))
    # KJ widens to 8 digits when 6 do not read back; a subnormal reading counts as not reading
    # back (strtof reports it as a range error).
    if back != value or (back != 0.0 and abs(back) < _F32_MIN_NORMAL):
        text = f"{value:.8g}"
    return text.replace("+", "")


# ------------------------------------------------------------------------------ schema helpers


def struct_fields(nodes: Mapping[int, model.Node], struct_id: int) -> list[model.Field]:
    """The fields of struct (or group) node ``struct_id``, in index (ordinal) order."""
    try:
        node = nodes[struct_id]
    except KeyError:
        raise DecodeError(f"the schema has no struct node @0x{struct_id:016x}") from None
    if node.which != "struct" or node.struct is None:
        raise DecodeError(f"{node.displayName} is not a struct")
    return node.struct.fields


def scalar_default(field: model.Field) -> Any:
    """The value a scalar field reads as when its bits are zero (its schema default)."""
    slot = field.slot
    assert slot is not None
    which = slot.type.which
    if which == "void":
        return None
    value = slot.defaultValue
    if value.which == which:
        return getattr(value, which)
    return False if which == "bool" else (0.0 if which.startswith("float") else 0)


# ------------------------------------------------------------------------------------- writer

_C_ESCAPES = {
    0x07: b"\\a", 0x08: b"\\b", 0x0C: b"\\f", 0x0A: b"\\n", 0x0D: b"\\r", 0x09: b"\\t",
    0x0B: b"\\v", 0x27: b"\\'", 0x22: b'\\"', 0x5C: b"\\\\",
}
_C_TABLE: list[bytes] = []
for _b in range(256):
    if _b in _C_ESCAPES:
        _C_TABLE.append(_C_ESCAPES[_b])
    elif _b < 0x20 or _b == 0x7F:
        _C_TABLE.append(b"\\%03o" % _b)
    else:
        _C_TABLE.append(bytes([_b]))
#: Data also escapes bytes >= 0x80 (they are not text); Text keeps its UTF-8 as it is.
_DATA_TABLE = _C_TABLE[:0x80] + [b"\\%03o" % b for b in range(0x80, 0x100)]
_NEEDS_ESCAPE = re.compile(rb"[\x00-\x1f\x7f'\"\\]")


def _c_literal(raw: bytes, *, data: bool = False) -> str:
    if data:
        return '"' + b"".join([_DATA_TABLE[b] for b in raw]).decode("ascii") + '"'
    if _NEEDS_ESCAPE.search(raw):
        raw = b"".join([_C_TABLE[b] for b in raw])
    return '"' + raw.decode("utf-8", "surrogateescape") + '"'


def _nbytes(text: str) -> int:
    if text.isascii():
        return len(text)
    return len(text.encode("utf-8", "surrogateescape"))


_BARE, _PREFIXED = 0, 1
_MAX_INLINE_VALUE = 24
_MAX_INLINE_RECORD = 64


def _delimit(items: list[str], amount: int, mode: int, record: bool) -> str:
    """Join printed items the way KJ's pretty printer does (``amount`` 0 means one line)."""
    if amount == 0 or _all_inline(items, record):
        return ", ".join(items)
    delim = ",\n" + "  " * amount
    head = " " if mode == _BARE else delim[1:]
    return head + delim.join(items) + " "


def _all_inline(items: list[str], record: bool) -> bool:
    total = 0
    for item in items:
        if len(item) > _MAX_INLINE_VALUE or "\n" in item:
            return False
        size = _nbytes(item)
        if size > _MAX_INLINE_VALUE:
            return False
        if record:
            total += size
            if total > _MAX_INLINE_RECORD:
                return False
    return True


class _Printer:
    def __init__(self, nodes: Mapping[int, model.Node]) -> None:
        self.nodes = nodes

    def struct(self, struct_id: int, value: Mapping[str, Any] | None, amount: int,
               mode: int) -> str:
        fields = struct_fields(self.nodes, struct_id)
        value = value or {}
        next_amount = amount + 1 if amount else 0
        union_at = -1
        union_text = ""
        for index, field in enumerate(fields):
            if field.discriminantValue != model.NO_DISCRIMINANT and field.name in value:
                member = value[field.name]
                if field.discriminantValue != 0 or self._has(field, member):
                    union_at = index
                    union_text = f"{field.name} = " + self.field(field, member, next_amount)
                break
        items: list[str] = []
        for index, field in enumerate(fields):
            if field.discriminantValue != model.NO_DISCRIMINANT:
                continue
            if 0 <= union_at < index:
                items.append(union_text)
                union_at = -1
            member = value.get(field.name)
            if field.which == "slot" and field.name not in value:
                member = scalar_default(field) if self._is_scalar(field) else None
            if self._has(field, member):
                items.append(f"{field.name} = " + self.field(field, member, next_amount))
        if union_at >= 0:
            items.append(union_text)
        return "(" + _delimit(items, amount, mode, True) + ")"

    @staticmethod
    def _is_scalar(field: model.Field) -> bool:
        return field.slot is not None and field.slot.type.which not in _POINTER_TYPES

    @staticmethod
    def _has(field: model.Field, member: Any) -> bool:
        if field.which == "group" or field.slot is None:
            return True
        if field.slot.type.which in _POINTER_TYPES:
            return member is not None
        return True

    def field(self, field: model.Field, member: Any, amount: int) -> str:
        if field.which == "group":
            assert field.group is not None
            return self.struct(field.group.typeId, member, amount, _PREFIXED)
        assert field.slot is not None
        return self.value(field.slot.type, member, amount, _PREFIXED)

    def value(self, type_: model.Type, member: Any, amount: int, mode: int) -> str:
        which = type_.which
        if which == "void":
            return "void"
        if which == "bool":
            return "true" if member else "false"
        if which in _INT_RANGES:
            return str(int(member))
        if which == "float64":
            return format_float64(float(member))
        if which == "float32":
            return format_float32(float(member))
        if which == "text":
            return _c_literal((member or "").encode())
        if which == "data":
            return _c_literal(bytes(member or b""), data=True)
        if which == "enum":
            assert type_.enum is not None
            return self.enumerant(type_.enum.typeId, int(member))
        if which == "struct":
            assert type_.struct is not None
            return self.struct(type_.struct.typeId, member, amount, mode)
        if which == "list":
            assert type_.list is not None
            element = type_.list.elementType
            inner = amount + 1 if amount else 0
            items = [self.value(element, item, inner, _BARE) for item in (member or [])]
            return "[" + _delimit(items, amount, mode, False) + "]"
        if which == "interface":
            return "<external capability>"
        return "<opaque pointer>"

    def enumerant(self, enum_id: int, raw: int) -> str:
        node = self.nodes.get(enum_id)
        if node is not None and node.enum is not None and 0 <= raw < len(node.enum.enumerants):
            return node.enum.enumerants[raw].name
        return f"({raw})"


def format_text(nodes: Mapping[int, model.Node], struct_id: int, value: Mapping[str, Any],
                *, pretty: bool = True) -> str:
    """``value`` (a struct of node ``struct_id``) in capnp's text format, without a final
    newline. ``pretty`` selects the indented multi-line layout, else one line (``--short``)."""
    return _Printer(nodes).struct(struct_id, value, 1 if pretty else 0, _BARE)


def format_text_bytes(nodes: Mapping[int, model.Node], struct_id: int,
                      value: Mapping[str, Any], *, pretty: bool = True) -> bytes:
    """:func:`format_text` as the bytes the reference tool writes (Data bytes kept raw)."""
    return format_text(nodes, struct_id, value, pretty=pretty).encode("utf-8", "surrogateescape")


# ------------------------------------------------------------------------------------- parser

_TOKEN = re.compile(r"""
    (?P<space>[ \t\r\n\v\f]+|\#[^\n]*)
  | (?P<binary>0x"[^"]*")
  | (?P<float>(?:[0-9]+\.[0-9]+(?:[eE][+-]?[0-9]+)?|[0-9]+[eE][+-]?[0-9]+))
  | (?P<int>0[xX][0-9a-fA-F]+|[0-9]+)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<string>"(?:[^"\\\n]|\\.)*")
  | (?P<op>[-=,()\[\]])
""", re.VERBOSE)

_STRING_ESCAPES = {
    "a": 7, "b": 8, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11, "'": 39, '"': 34, "\\": 92,
    "?": 63,
}


class _Token:
    __slots__ = ("kind", "offset", "text")

    def __init__(self, kind: str, text: str, offset: int) -> None:
        self.kind = kind
        self.text = text
        self.offset = offset


class _Node:
    """A parsed expression before it is matched against the schema."""

    __slots__ = ("kind", "offset", "value")

    def __init__(self, kind: str, value: Any, offset: int) -> None:
        self.kind = kind  # int float string binary ident struct list
        self.value = value
        self.offset = offset


class TextSyntaxError(DecodeError):
    """Text-format input that cannot be parsed; ``line``/``column`` are 1-based."""

    def __init__(self, message: str, source: str, offset: int) -> None:
        line = source.count("\n", 0, offset) + 1
        column = offset - (source.rfind("\n", 0, offset) + 1) + 1
        self.line = line
        self.column = column
        DecodeError.__init__(self, f"{line}:{column}: {message}", offset)


def _unescape(body: str, source: str, offset: int) -> bytes:
    """The bytes of a C string literal's body (between the quotes)."""
    if "\\" not in body:
        return body.encode("utf-8", "surrogateescape")
    out = bytearray()
    i = 0
    n = len(body)
    while i < n:
        ch = body[i]
        if ch != "\\":
            j = body.find("\\", i)
            j = n if j < 0 else j
            out += body[i:j].encode("utf-8", "surrogateescape")
            i = j
            continue
        if i + 1 >= n:
            raise TextSyntaxError("string ends with a lone backslash", source, offset + i)
        esc = body[i + 1]
        if esc in _STRING_ESCAPES:
            out.append(_STRING_ESCAPES[esc])
            i += 2
        elif esc == "x":
            m = re.match(r"[0-9a-fA-F]{1,2}", body[i + 2:])
            if not m:
                raise TextSyntaxError("\\x escape needs hex digits", source, offset + i)
            out.append(int(m.group(), 16))
            i += 2 + len(m.group())
        elif esc in "01234567":
            m = re.match(r"[0-7]{1,3}", body[i + 1:])
            assert m is not None
            out.append(int(m.group(), 8) & 0xFF)
            i += 1 + len(m.group())
        else:
            raise TextSyntaxError(f"unknown escape \\{esc}", source, offset + i)
    return bytes(out)


_T = TypeVar("_T")


class _Parser:
    def __init__(self, source: str) -> None:
        self.source = source
        self.tokens = self._lex(source)
        self.pos = 0

    def _lex(self, source: str) -> list[_Token]:
        tokens: list[_Token] = []
        pos = 0
        n = len(source)
        match = _TOKEN.match
        while pos < n:
            m = match(source, pos)
            if m is None:
                raise TextSyntaxError(f"unexpected character {source[pos]!r}", source, pos)
            kind = m.lastgroup
            assert kind is not None
            if kind != "space":
                tokens.append(_Token(kind, m.group(), pos))
            pos = m.end()
        tokens.append(_Token("eof", "", n))
        return tokens

    def error(self, message: str, token: _Token) -> TextSyntaxError:
        return TextSyntaxError(message, self.source, token.offset)

    def peek(self) -> _Token:
        return self.tokens[self.pos]

    def take(self) -> _Token:
        token = self.tokens[self.pos]
        if token.kind != "eof":
            self.pos += 1
        return token

    def expect(self, text: str) -> _Token:
        token = self.take()
        if token.text != text or token.kind not in ("op",):
            shown = token.text or "end of input"
            raise self.error(f"expected '{text}', found '{shown}'", token)
        return token

    def expression(self, depth: int) -> _Node:
        if depth > MAX_TEXT_NESTING:
            raise self.error(f"nesting deeper than {MAX_TEXT_NESTING} levels", self.peek())
        token = self.take()
        kind = token.kind
        if kind == "op" and token.text == "-":
            inner = self.take()
            if inner.kind == "int":
                number = self.integer(inner)
                if number == 0:
                    return _Node("negzero", 0, token.offset)
                return _Node("int", -number, token.offset)
            if inner.kind == "float":
                return _Node("float", -float(inner.text), token.offset)
            if inner.kind == "ident" and inner.text == "inf":
                return _Node("float", -math.inf, token.offset)
            raise self.error("'-' must be followed by a number", inner)
        if kind == "int":
            return _Node("int", self.integer(token), token.offset)
        if kind == "float":
            return _Node("float", float(token.text), token.offset)
        if kind == "ident":
            return _Node("ident", token.text, token.offset)
        if kind == "string":
            parts = [_unescape(token.text[1:-1], self.source, token.offset + 1)]
            while self.peek().kind == "string":
                more = self.take()
                parts.append(_unescape(more.text[1:-1], self.source, more.offset + 1))
            return _Node("string", b"".join(parts), token.offset)
        if kind == "binary":
            digits = re.sub(r"\s+", "", token.text[3:-1])
            if len(digits) % 2 or not re.fullmatch(r"[0-9a-fA-F]*", digits):
                raise self.error("a binary literal needs an even number of hex digits", token)
            return _Node("binary", bytes.fromhex(digits), token.offset)
        if kind == "op" and token.text == "[":
            items = self.separated("]", "in a list", lambda: self.expression(depth + 1))
            return _Node("list", items, token.offset)
        if kind == "op" and token.text == "(":
            ahead = self.tokens[self.pos:self.pos + 2]
            if len(ahead) == 2 and ahead[0].kind == "int" and ahead[1].text == ")":
                # "(7)": an enum value without a name, as the writer prints unknown enumerants
                self.pos += 2
                return _Node("enumnum", self.integer(ahead[0]), token.offset)
            return self.struct_body(token, depth)
        shown = token.text or "end of input"
        raise self.error(f"expected a value, found '{shown}'", token)

    def integer(self, token: _Token) -> int:
        """An integer literal: ``0x`` hex, leading-``0`` octal, or decimal."""
        text = token.text
        if len(text) > 40:
            raise self.error("integer literal is too long", token)
        try:
            return int(text, 8) if _is_octal(text) else int(text, 0)
        except ValueError:
            raise self.error(f"invalid integer literal '{text}'", token) from None

    def struct_body(self, open_token: _Token, depth: int) -> _Node:
        def assignment() -> tuple[str, _Node, int]:
            name = self.take()
            if name.kind != "ident":
                raise self.error("expected a field name", name)
            self.expect("=")
            return name.text, self.expression(depth + 1), name.offset

        assigns = self.separated(")", "after a field value", assignment)
        return _Node("struct", assigns, open_token.offset)

    def separated(self, close: str, where: str, item: Callable[[], _T]) -> list[_T]:
        """Comma-separated items up to the ``close`` operator, a trailing comma allowed (the
        opener is already taken); ``where`` ends the error for a missing separator."""
        items: list[_T] = []
        if self.peek().kind == "op" and self.peek().text == close:
            self.take()
            return items
        while True:
            items.append(item())
            sep = self.take()
            if sep.kind == "op" and sep.text == close:
                break
            if sep.kind != "op" or sep.text != ",":
                raise self.error(f"expected ',' or '{close}' {where}", sep)
            if self.peek().kind == "op" and self.peek().text == close:
                self.take()
                break
        return items


def _is_octal(text: str) -> bool:
    return len(text) > 1 and text[0] == "0" and text[1] not in "xX"


class _Translator:
    """Matches parsed expressions against the schema and yields plain values."""

    def __init__(self, nodes: Mapping[int, model.Node], parser: _Parser) -> None:
        self.nodes = nodes
        self.parser = parser

    def fail(self, message: str, node: _Node | int) -> TextSyntaxError:
        offset = node if isinstance(node, int) else node.offset
        return TextSyntaxError(message, self.parser.source, offset)

    def struct(self, struct_id: int, node: _Node, where: str) -> dict[str, Any]:
        if node.kind != "struct":
            raise self.fail(f"{where}: expected a struct value '(...)'", node)
        fields = {f.name: f for f in struct_fields(self.nodes, struct_id)}
        out: dict[str, Any] = {}
        union_set: str | None = None
        for name, expr, offset in node.value:
            field = fields.get(name)
            if field is None:
                shown = self.nodes[struct_id].shortName
                raise self.fail(f"{where}: struct {shown} has no field named '{name}'", offset)
            path = f"{where}.{name}" if where else name
            if field.discriminantValue != model.NO_DISCRIMINANT:
                if union_set is not None and union_set != name:
                    out.pop(union_set, None)
                union_set = name
            if field.which == "group":
                assert field.group is not None
                out[name] = self.struct(field.group.typeId, expr, path)
            else:
                assert field.slot is not None
                out[name] = self.value(field.slot.type, expr, path)
        return out

    def value(self, type_: model.Type, node: _Node, where: str) -> Any:
        which = type_.which
        kind = node.kind
        if which == "void":
            if kind == "ident" and node.value == "void":
                return None
            raise self.fail(f"{where}: expected 'void'", node)
        if which == "bool":
            if kind == "ident" and node.value in ("true", "false"):
                return node.value == "true"
            raise self.fail(f"{where}: expected 'true' or 'false'", node)
        if which in _INT_RANGES:
            if kind == "negzero":
                return 0
            if kind != "int":
                raise self.fail(f"{where}: expected an integer", node)
            lo, hi = _INT_RANGES[which]
            if not lo <= node.value <= hi:
                raise self.fail(f"{where}: {node.value} is out of range for {which}", node)
            return node.value
        if which in ("float32", "float64"):
            if kind in ("int", "float"):
                number = float(node.value)
            elif kind == "negzero":
                number = -0.0
            elif kind == "ident" and node.value in ("inf", "nan"):
                number = math.inf if node.value == "inf" else math.nan
            else:
                raise self.fail(f"{where}: expected a number", node)
            return _to_f32(number) if which == "float32" else number
        if which == "text":
            if kind != "string":
                raise self.fail(f"{where}: expected a string", node)
            try:
                return node.value.decode()
            except UnicodeDecodeError:
                raise self.fail(f"{where}: Text must be valid UTF-8", node) from None
        if which == "data":
            if kind not in ("string", "binary"):
                raise self.fail(f"{where}: expected a string or 0x\"...\" binary literal", node)
            return bytes(node.value)
        if which == "enum":
            assert type_.enum is not None
            return self.enumerant(type_.enum.typeId, node, where)
        if which == "struct":
            assert type_.struct is not None
            return self.struct(type_.struct.typeId, node, where)
        if which == "list":
            assert type_.list is not None
            if kind != "list":
                raise self.fail(f"{where}: expected a list '[...]'", node)
            element = type_.list.elementType
            return [self.value(element, item, f"{where}[{i}]")
                    for i, item in enumerate(node.value)]
        raise self.fail(f"{where}: {which} fields cannot be written in text format", node)

    def enumerant(self, enum_id: int, node: _Node, where: str) -> int:
        enum_node = self.nodes.get(enum_id)
        names = [e.name for e in enum_node.enum.enumerants] if (
            enum_node is not None and enum_node.enum is not None) else []
        if node.kind == "ident" and node.value in names:
            return names.index(node.value)
        if node.kind == "enumnum" and 0 <= node.value <= 0xFFFF:
            return int(node.value)
        raise self.fail(f"{where}: expected one of {', '.join(names) or 'no enumerants'}", node)


def parse_text(nodes: Mapping[int, model.Node], struct_id: int, text: str) -> dict[str, Any]:
    """Parse one struct literal of node ``struct_id`` into plain values (a ``dict``).

    Raises :class:`TextSyntaxError` (a :class:`~cara.errors.DecodeError`) naming
    ``line:column`` and the field path on any problem.
    """
    parser = _Parser(text)
    first = parser.take()
    if first.kind != "op" or first.text != "(":
        raise parser.error("expected '(' starting a struct value", first)
    node = parser.struct_body(first, 1)
    end = parser.peek()
    if end.kind != "eof":
        raise parser.error(f"unexpected '{end.text}' after the struct value", end)
    return _Translator(nodes, parser).struct(struct_id, node, "")
