"""Turns schema text into statements made of tokens, as capnp's lexer does.

A Cap'n Proto schema is a sequence of *statements*: a run of tokens ended by ``;`` or by a
``{ ... }`` block of further statements. Bracketed and parenthesised comma lists are single
tokens holding their items, so the parser never has to find matching brackets itself. The
comment lines right after ``;``, ``{`` or ``}`` are the statement's doc comment.

The lexer is iterative (an explicit stack instead of recursion) so that deeply nested or hostile
input cannot exhaust Python's stack; nesting beyond :data:`MAX_NESTING` is reported as an error.
Like capnp, a file that does not lex is reported as a single ``Parse error.`` at the first place
where it stops making sense; nothing else of that file is compiled.
"""

from __future__ import annotations

import re

from cara.schema._record import field, record

#: ``typing.TYPE_CHECKING`` without importing typing (a tenth of a cold ``cara compile``);
#: type checkers take any ``TYPE_CHECKING`` as true.
TYPE_CHECKING = False

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["MAX_NESTING", "LexError", "Statement", "Token", "tokenize"]

#: Deepest nesting of brackets, parentheses and blocks accepted. Real schemas stay below 10.
MAX_NESTING = 64

#: capnp reads integer literals as 64-bit unsigned numbers that wrap around on overflow.
_U64 = (1 << 64) - 1
_IDENT_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_0123456789")
_DIGITS = frozenset("0123456789")
_HEX = frozenset("0123456789abcdefABCDEF")
_OCT = frozenset("01234567")
_LINE_SPACE = frozenset(" \t\f\v")
_SPACE = frozenset(" \t\f\v\r\n")
#: Space and comments, then the commonest tokens: a name, an operator, a plain decimal integer
#: (not part of a float, a hex/octal literal or a name; those take the general path).
_NEXT = re.compile(r"(?:[ \t\f\v\r\n]+|#[^\n]*\n?)*"
                   r"(?:([A-Za-z_][A-Za-z0-9_]*)|([!$%&*+\-./:<=>?@^|~]+)"
                   r"|(0|[1-9][0-9]{0,17})(?![0-9A-Za-z_.]))?")
#: Where a doc comment may follow a statement's end: a comment on this or the next line.
_DOC_AHEAD = re.compile(r"[ \t\f\v]*(?:\n|\r\n?)?[ \t\f\v]*#")
_SIMPLE_ESCAPES = {
    "a": 7, "b": 8, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11,
    "'": 39, '"': 34, "\\": 92, "?": 63,
}


@record(slots=True)
class Token:
    """One token. ``kind`` is ``identifier``, ``string``, ``binary``, ``integer``, ``float``,
    ``operator``, ``parenList`` or ``bracketList``; the two list kinds hold their comma-separated
    items in ``items`` (an empty list for ``()``; an empty last item, a trailing comma, is
    dropped as capnp drops it)."""

    kind: str
    start: int
    end: int
    value: object = None
    items: list[list[Token]] | None = None


@record(slots=True)
class Statement:
    """Tokens ended by ``;`` (``block`` is None) or by a ``{...}`` block."""

    tokens: list[Token]
    start: int
    end: int
    block: list[Statement] | None = None
    doc: str | None = None


class LexError(Exception):
    """The text cannot be split into statements; ``offset`` is where it went wrong."""

    def __init__(self, offset: int, message: str = "Parse error.") -> None:
        super().__init__(message)
        self.offset = offset
        self.message = message


@record(slots=True)
class _Block:
    """A ``{ ... }`` block of statements."""

    statements: list[Statement] = field(default_factory=list)
    tokens: list[Token] = field(default_factory=list)
    # For a nested block: the tokens and start of the statement that owns it, its doc comment.
    owner_tokens: list[Token] | None = None
    owner_start: int = 0
    owner_doc: str | None = None
    open_pos: int = 0


@record(slots=True)
class _List:
    """A bracketed, comma-separated list of token sequences."""

    kind: str
    start: int
    items: list[list[Token]] = field(default_factory=list)
    tokens: list[Token] = field(default_factory=list)


def tokenize(text: str) -> list[Statement]:
    """Split ``text`` into top-level statements, or raise :class:`LexError`."""
    return _Lexer(text).run()


class _Lexer:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        if text.startswith("\ufeff"):
            self.pos = 1

    def run(self) -> list[Statement]:
        text = self.text
        n = len(text)
        stack: list[_Block | _List] = [_Block()]
        # _NEXT always matches (every part of it is optional).
        match: Callable[[str, int], re.Match[str]] = _NEXT.match  # type: ignore[assignment]
        while True:
            m = match(text, self.pos)
            kind = m.lastindex
            top = stack[-1]
            if kind is not None:
                start, end = m.span(kind)
                token = m.group(kind)
                self.pos = end
                if kind == 1:
                    top.tokens.append(Token("identifier", start, end, token))
                elif kind == 2:
                    top.tokens.append(Token("operator", start, end, token))
                else:
                    top.tokens.append(Token("integer", start, end, int(token)))
                continue
            pos = self.pos = m.end()
            if pos >= n:
                if len(stack) != 1 or isinstance(top, _List) or top.tokens:
                    raise LexError(n)
                assert isinstance(top, _Block)
                return top.statements
            # Names, operators and plain integers took the fast path above.
            c = text[pos]
            current = top.tokens
            if c in "([":
                if len(stack) >= MAX_NESTING:
                    raise LexError(pos, f"Nesting is too deep (more than {MAX_NESTING} levels).")
                stack.append(_List("parenList" if c == "(" else "bracketList", pos))
                self.pos = pos + 1
            elif c == ",":
                if not isinstance(top, _List):
                    raise LexError(pos)
                top.items.append(top.tokens)
                top.tokens = []
                self.pos = pos + 1
            elif c in ")]":
                if not isinstance(top, _List) or (c == ")") != (top.kind == "parenList"):
                    raise LexError(pos)
                stack.pop()
                items = top.items
                # As in capnp's lexer: "()" has no items, and an empty *last* item is dropped,
                # so a trailing comma is allowed in every list ("[1, 2,]", "(a, b,)"). Any other
                # empty item ("[,]", "[1,,2]") stays, for the parser to report.
                if top.tokens:
                    items.append(top.tokens)
                token = Token(top.kind, top.start, pos + 1, None, items)
                stack[-1].tokens.append(token)
                self.pos = pos + 1
            elif c == ";":
                if not isinstance(top, _Block):
                    raise LexError(pos)
                self.pos = pos + 1
                doc = self._doc_comment()
                start = top.tokens[0].start if top.tokens else pos
                top.statements.append(Statement(top.tokens, start, self.pos, None, doc))
                top.tokens = []
            elif c == "{":
                if not isinstance(top, _Block):
                    raise LexError(pos)
                if len(stack) >= MAX_NESTING:
                    raise LexError(pos, f"Nesting is too deep (more than {MAX_NESTING} levels).")
                self.pos = pos + 1
                doc = self._doc_comment()
                start = top.tokens[0].start if top.tokens else pos
                stack.append(_Block(owner_tokens=top.tokens, owner_start=start, owner_doc=doc,
                                    open_pos=pos))
                top.tokens = []
            elif c == "}":
                if not isinstance(top, _Block) or len(stack) == 1 or top.tokens:
                    raise LexError(pos)
                stack.pop()
                self.pos = pos + 1
                late = self._doc_comment()
                parent = stack[-1]
                assert isinstance(parent, _Block) and top.owner_tokens is not None
                doc = top.owner_doc if top.owner_doc is not None else late
                parent.statements.append(Statement(
                    top.owner_tokens, top.owner_start, self.pos, top.statements, doc))
            elif c in _DIGITS:
                current.append(self._number())
                if self.pos < n and text[self.pos] in _IDENT_CHARS:
                    # "1x": capnp reads no number glued to a name. It blames the first character
                    # its number reader could not use ("9ex" gets as far as the "x").
                    bad = self.pos
                    if text[bad] in "eE":
                        bad += 1
                        if bad < n and text[bad] in "+-":
                            bad += 1
                    raise LexError(bad)
            elif c == '"':
                value, end = self._string(pos)
                current.append(Token("string", pos, end, value))
                self.pos = end
            elif c == "`":
                # Cap'n Proto 1.x block text: the rest of the line (up to "\r" or "\n") plus a
                # "\n", whatever the file's line endings. capnp 0.9.2 has no such token.
                end = pos + 1
                while end < n and text[end] not in "\r\n":
                    end += 1
                current.append(Token("string", pos, end, text[pos + 1:end] + "\n"))
                self.pos = end
            else:
                raise LexError(pos)

    # ------------------------------------------------------------------ pieces

    def _doc_comment(self) -> str | None:
        """Comment lines right after a statement end: at most one line break before them and no
        blank line between them. Each line loses ``#`` and one following space."""
        if _DOC_AHEAD.match(self.text, self.pos) is None:
            return None
        text = self.text
        n = len(text)
        pos = self.pos
        while pos < n and text[pos] in _LINE_SPACE:
            pos += 1
        if pos < n and text[pos] == "\n":
            pos += 1
        elif pos < n and text[pos] == "\r":
            pos += 1
            if pos < n and text[pos] == "\n":
                pos += 1
        lines: list[str] = []
        while True:
            p = pos
            while p < n and text[p] in _LINE_SPACE:
                p += 1
            if p >= n or text[p] != "#":
                break
            p += 1
            if p < n and text[p] == " ":
                p += 1
            end = text.find("\n", p)
            if end < 0:
                lines.append(text[p:])
                pos = n
            else:
                lines.append(text[p:end])
                pos = end + 1
        if not lines:
            return None
        self.pos = pos
        return "".join(line + "\n" for line in lines)

    def _number(self) -> Token:
        text = self.text
        n = len(text)
        start = self.pos
        if text.startswith('0x"', start):
            return self._binary(start)
        if text.startswith("0x", start) and (start + 2 >= n or text[start + 2] not in _HEX):
            raise LexError(start + 2)  # "0x" without digits
        if text.startswith("0x", start):
            end = start + 2
            while end < n and text[end] in _HEX:
                end += 1
            self.pos = end
            return Token("integer", start, end, int(text[start + 2:end], 16) & _U64)
        end = start
        while end < n and text[end] in _DIGITS:
            end += 1
        is_float = False
        if end < n and text[end] == ".":
            # "1.5", and also "1." (capnp reads both as floats)
            is_float = True
            end += 1
            while end < n and text[end] in _DIGITS:
                end += 1
        if end < n and text[end] in "eE":
            e = end + 1
            if e < n and text[e] in "+-":
                e += 1
            if e < n and text[e] in _DIGITS:
                is_float = True
                end = e
                while end < n and text[end] in _DIGITS:
                    end += 1
        self.pos = end
        literal = text[start:end]
        if is_float:
            return Token("float", start, end, float(literal))
        if literal.startswith("0") and len(literal) > 1:
            if any(ch not in _OCT for ch in literal):
                raise LexError(start)
            return Token("integer", start, end, int(literal, 8) & _U64)
        return Token("integer", start, end, _decimal(literal))

    def _binary(self, start: int) -> Token:
        text = self.text
        n = len(text)
        pos = start + 3
        out = bytearray()
        while True:
            while pos < n and text[pos] in _SPACE:
                pos += 1
            if pos >= n:
                raise LexError(pos)
            if text[pos] == '"':
                break
            if pos + 1 < n and text[pos] in _HEX and text[pos + 1] in _HEX:
                out.append(int(text[pos:pos + 2], 16))
                pos += 2
            else:
                raise LexError(pos)
        self.pos = pos + 1
        return Token("binary", start, pos + 1, bytes(out))

    def _string(self, start: int) -> tuple[str, int]:
        text = self.text
        n = len(text)
        pos = start + 1
        out = bytearray()
        while True:
            if pos >= n:
                raise LexError(pos)
            c = text[pos]
            if c == '"':
                pos += 1
                break
            if c == "\n":
                raise LexError(pos)
            if c != "\\":
                chunk_end = pos + 1
                while chunk_end < n and text[chunk_end] not in '"\\\n':
                    chunk_end += 1
                out += text[pos:chunk_end].encode("utf-8", "surrogatepass")
                pos = chunk_end
                continue
            pos += 1
            if pos >= n:
                raise LexError(pos)
            e = text[pos]
            if e in _SIMPLE_ESCAPES:
                out.append(_SIMPLE_ESCAPES[e])
                pos += 1
            elif e == "x" and pos + 1 < n and text[pos + 1] in _HEX:
                end = pos + 1
                while end < n and end < pos + 3 and text[end] in _HEX:
                    end += 1
                out.append(int(text[pos + 1:end], 16))
                pos = end
            elif e in _OCT:
                end = pos
                while end < n and end < pos + 3 and text[end] in _OCT:
                    end += 1
                out.append(int(text[pos:end], 8) & 0xFF)
                pos = end
            else:
                raise LexError(pos)
        return out.decode("utf-8", "surrogateescape"), pos


def _decimal(literal: str) -> int:
    """A decimal literal modulo 2**64, without building a huge number for a huge literal."""
    value = 0
    for start in range(0, len(literal), 18):
        chunk = literal[start:start + 18]
        value = (value * 10 ** len(chunk) + int(chunk)) & _U64
    return value
