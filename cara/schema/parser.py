"""Turns lexed statements into declarations (:mod:`cara.schema.ast`), as capnp's parser does.

Each statement is parsed on its own: a statement that does not parse is reported as ``Parse
error.`` at the token where parsing could get no further, and the rest of the file is still
parsed. Keywords are contextual: ``struct`` starts a struct declaration only when a name follows,
so ``struct @0 :Int32;`` is a field named ``struct``. Which declarations a block may contain
depends on the enclosing declaration; others get "This kind of declaration doesn't belong here."
"""

from __future__ import annotations

from collections.abc import Callable

from cara.schema import ast
from cara.schema.ast import Declaration, Expression, Located
from cara.schema.lexer import MAX_NESTING, Statement, Token

#: ``typing.TYPE_CHECKING`` without importing typing (a tenth of a cold ``cara compile``);
#: type checkers take any ``TYPE_CHECKING`` as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn

__all__ = ["parse_file"]

ErrorSink = Callable[[int, int, str], None]

_NUMBERED_UNION = (
    "As of Cap'n Proto v0.3, it is no longer necessary to assign numbers to unions. However, "
    "removing the number will break binary compatibility. If this is an old protocol and you "
    "need to retain compatibility, please add an exclamation point after the number to indicate "
    "that it is really needed, e.g. `foo @1! :union {`. If this is a new protocol or "
    "compatibility doesn't matter, just remove the @n entirely. Sorry for the inconvenience, "
    "and thanks for being an early adopter!  :)"
)
_UNION_COLON = (
    "As of Cap'n Proto v0.3, the 'union' keyword should be prefixed with a colon for named "
    "unions, e.g. `foo :union {`."
)

# Which declaration kinds each kind of block may hold.
_MEMBERS: dict[str, frozenset[str]] = {
    "file": frozenset({"using", "const", "enum", "struct", "interface", "annotation", "nakedId",
                       "nakedAnnotation"}),
    "struct": frozenset({"using", "const", "enum", "struct", "interface", "annotation", "field",
                         "union", "group"}),
    "union": frozenset({"field", "union", "group"}),
    "group": frozenset({"field", "union", "group"}),
    "enum": frozenset({"enumerant"}),
    "interface": frozenset({"using", "const", "enum", "struct", "interface", "annotation",
                            "method"}),
}
_KEYWORDS = frozenset({"using", "const", "enum", "struct", "interface", "annotation"})
_BLOCK_KINDS = frozenset({"enum", "struct", "union", "group", "interface"})
_TARGETS = frozenset(ast.TARGET_NAMES)


class _Fail(Exception):
    """This statement does not parse; ``pos`` is the byte offset to blame."""

    def __init__(self, pos: int, top_level: bool = False) -> None:
        self.pos = pos
        self.top_level = top_level


def parse_file(statements: list[Statement], text_end: int, error: ErrorSink) -> Declaration:
    """The file's root declaration, holding every top-level declaration that parsed."""
    root = Declaration("file", None, 0, text_end)
    root.nested = _parse_block(statements, "file", error)
    return root


def _parse_block(statements: list[Statement], context: str,
                 error: ErrorSink) -> list[Declaration]:
    # Depth-first, so that errors come out in file order; the lexer bounds the depth.
    result: list[Declaration] = []
    for statement in statements:
        decl = _parse_statement(statement, context, error)
        if decl is None:
            continue
        if decl.kind not in _MEMBERS.get(context, frozenset()):
            decl.misplaced = True  # reported by the compiler, in its order
        is_block = decl.kind in _BLOCK_KINDS
        if statement.block is not None and not is_block:
            # Reported, and the declaration is kept without its block (as capnp does).
            error(statement.start, statement.end,
                  "This statement should end with a semicolon, not a block.")
        elif statement.block is None and is_block:
            error(statement.start, statement.end,
                  "This statement should end with a block, not a semicolon.")
        result.append(decl)
        if statement.block is not None and is_block:
            decl.nested = _parse_block(statement.block, decl.kind, error)
    return result


def _parse_statement(statement: Statement, context: str, error: ErrorSink) -> Declaration | None:
    parser = _StatementParser(statement, error)
    try:
        decl = parser.declaration(context)
    except _Fail as fail:
        pos = fail.pos
        tokens = statement.tokens
        if not tokens:
            pos = statement.start  # an empty statement: ";" or "{...}" alone
        elif fail.top_level:
            # capnp blames the token after the furthest one any alternative looked at (or the
            # end of the last token).
            best = parser.best + 1
            pos = tokens[best].start if best < len(tokens) else tokens[-1].end
        error(pos, pos, "Parse error.")
        return None
    decl.start = statement.start
    decl.end = statement.end
    decl.doc = statement.doc
    return decl


class _StatementParser:
    def __init__(self, statement: Statement, error: ErrorSink) -> None:
        self.tokens = statement.tokens
        self.statement = statement
        self.error = error
        self.i = 0
        self.best = -1  # furthest token of the statement looked at, for error positions

    # ------------------------------------------------------------------ token helpers

    def _fail(self, tokens: list[Token] | None = None, i: int | None = None) -> NoReturn:
        tokens = self.tokens if tokens is None else tokens
        i = self.i if i is None else i
        if tokens is self.tokens:
            self.best = max(self.best, min(i, len(tokens) - 1))
            raise _Fail(tokens[i].start if i < len(tokens) else 0, top_level=True)
        if i < len(tokens):
            raise _Fail(tokens[i].start)
        if tokens is self.tokens:
            raise _Fail(self.statement.end - 1 if self.statement.block is None
                        else tokens[-1].end if tokens else self.statement.start)
        raise _Fail(tokens[-1].end if tokens else self.statement.start)

    def _peek(self, offset: int = 0) -> Token | None:
        j = self.i + offset
        if j < len(self.tokens):
            if j > self.best:
                self.best = j
            return self.tokens[j]
        return None

    def _is(self, kind: str, value: str | None = None, offset: int = 0) -> bool:
        """Whether the token at ``offset`` is of ``kind`` (and spelled ``value``); ``_peek``
        inlined, as this is the parser's commonest call."""
        j = self.i + offset
        if j >= len(self.tokens):
            return False
        if j > self.best:
            self.best = j
        t = self.tokens[j]
        return t.kind == kind and (value is None or t.value == value)

    def _expect_ident(self) -> Located:
        t = self._peek()
        if t is None or t.kind != "identifier":
            self._fail()
        self.i += 1
        return Located(t.value, t.start, t.end)

    def _expect_op(self, value: str) -> Token:
        t = self._peek()
        if t is None or t.kind != "operator" or t.value != value:
            self._fail()
        self.i += 1
        return t

    def _at_end(self) -> bool:
        return self.i >= len(self.tokens)

    def _expect_end(self) -> None:
        if not self._at_end():
            # Checking for the end looks at no token: the furthest one looked at stays the last
            # one consumed.
            self.best = max(self.best, self.i - 1)
            raise _Fail(self.tokens[self.i].start, top_level=True)

    # ------------------------------------------------------------------ declarations

    def declaration(self, context: str) -> Declaration:
        t0 = self._peek()
        if t0 is None:
            self._fail()
        if t0.kind == "operator" and t0.value in ("@", "$"):
            if context != "file":
                self._fail(None, 0)  # only a file has a bare id or annotation
            if t0.value == "@":
                return self._naked_id()
            ann = self._annotation()
            self._expect_end()
            return Declaration("nakedAnnotation", None, 0, 0, annotation=ann)
        if t0.kind != "identifier":
            self._fail()
        keyword = t0.value
        # Only a keyword makes capnp look at the next token before trying a member form (which
        # matters for where "Parse error." points).
        if keyword in _KEYWORDS and context != "enum" and (
                self._is("identifier", None, 1)
                or (keyword == "using" and self._is("operator", ".", 1))):
            if keyword == "using":
                return self._using()
            if keyword == "const":
                return self._const()
            if keyword in ("enum", "struct", "interface"):
                return self._type_decl(keyword)
            if keyword == "annotation":
                return self._annotation_decl()
        if keyword == "union" and self._peek(1) is None:
            if context not in ("struct", "group", "union"):
                self._fail(None, 0)
            self.i = 1
            decl = Declaration("union", None, 0, 0, keyword=Located("union", t0.start, t0.end))
            decl.annotations = self._annotations()
            self._expect_end()
            return decl
        # name @N ... : field, named union, group, method, enumerant
        return self._member(context)

    def _naked_id(self) -> Declaration:
        self.i = 1
        t = self._peek()
        if t is None or t.kind != "integer":
            self._fail()
        self.i += 1
        self._check_id(t)
        self._expect_end()
        return Declaration("nakedId", None, 0, 0, id_kind="uid",
                           id=Located(t.value, t.start, t.end))

    def _check_id(self, t: Token) -> None:
        if not (1 << 63) <= int(t.value) < (1 << 64):  # type: ignore[call-overload]
            self.error(t.start, t.end, "Invalid ID.  Please generate a new one with 'capnpc -i'.")

    def _using(self) -> Declaration:
        self.i = 1
        decl = Declaration("using", None, 0, 0)
        if self._is("identifier") and self._is("operator", "=", 1):
            decl.name = self._expect_ident()
            self.i += 1
            decl.type = self._expression()
        else:
            target = self._expression()
            decl.type = target
            if target.kind == "member" and target.name is not None:
                decl.name = Located(target.name.value, target.name.start, target.name.end)
            else:
                self.error(target.start, target.end,
                           "'using' declaration without '=' must specify a named declaration "
                           "from a different scope.")
                decl.name = Located("", target.start, target.end)
        self._expect_end()
        return decl

    def _optional_id(self, decl: Declaration) -> None:
        if self._is("operator", "@"):
            self.i += 1
            t = self._peek()
            if t is None or t.kind != "integer":
                self._fail()
            self.i += 1
            self._check_id(t)
            decl.id_kind = "uid"
            decl.id = Located(t.value, t.start, t.end)

    def _optional_parameters(self, decl: Declaration) -> None:
        t = self._peek()
        if t is not None and t.kind == "parenList":
            self.i += 1
            assert t.items is not None
            for item in t.items:
                name = self._item(item, t, _StatementParser._expect_ident)
                if isinstance(name, Located):
                    decl.parameters.append(name)

    def _target(self) -> Token:
        t = self._peek()
        if t is None or not (t.kind == "identifier" or (t.kind == "operator" and
                                                        t.value == "*")):
            self._fail()
        self.i += 1
        return t

    def _const(self) -> Declaration:
        self.i = 1
        decl = Declaration("const", self._expect_ident(), 0, 0)
        self._optional_id(decl)
        self._expect_op(":")
        decl.type = self._expression()
        self._expect_op("=")
        decl.value = self._expression()
        decl.annotations = self._annotations()
        self._expect_end()
        return decl

    def _type_decl(self, keyword: str) -> Declaration:
        self.i = 1
        decl = Declaration(keyword, self._expect_ident(), 0, 0)  # type: ignore[arg-type]
        if keyword != "enum":
            # The id may come before or after the generic parameters.
            self._optional_id(decl)
            self._optional_parameters(decl)
            if decl.id is None:
                self._optional_id(decl)
        else:
            self._optional_id(decl)
        if keyword == "interface" and self._is("identifier", "extends"):
            t = self._peek(1)
            if t is not None and t.kind == "parenList":
                self.i += 2
                assert t.items is not None
                decl.superclasses = [self._sub_expression(item, t) for item in t.items]
        decl.annotations = self._annotations()
        self._expect_end()
        return decl

    def _annotation_decl(self) -> Declaration:
        self.i = 1
        decl = Declaration("annotation", self._expect_ident(), 0, 0)
        self._optional_id(decl)
        t = self._peek()
        if t is None or t.kind != "parenList":
            self._fail()
        self.i += 1
        assert t.items is not None
        for item in t.items:
            target = self._item(item, t, _StatementParser._target)
            if not isinstance(target, Token):
                continue
            if target.kind == "operator":
                decl.targets.update(_TARGETS)
            elif target.value in _TARGETS:
                decl.targets.add(str(target.value))
            else:
                self.error(target.start, target.end, "Not a valid annotation target.")
        self._expect_op(":")
        decl.type = self._expression()
        decl.annotations = self._annotations()
        self._expect_end()
        return decl

    def _member(self, context: str) -> Declaration:
        # Fields, unions, groups, enumerants and methods only parse inside the blocks they
        # belong to; elsewhere they are plain parse errors (as in capnp).
        if context not in ("struct", "group", "union", "enum", "interface"):
            self._fail(None, 0)
        name = self._expect_ident()
        decl = Declaration("field", name, 0, 0)
        ordinal: Token | None = None
        banged = False
        if self._is("operator", "@"):
            self.i += 1
            ordinal = self._peek()
            if ordinal is None or ordinal.kind != "integer":
                self._fail()
            self.i += 1
            decl.id_kind = "ordinal"
            decl.id = Located(ordinal.value, ordinal.start, ordinal.end)
            if int(ordinal.value) > 65535:  # type: ignore[call-overload]
                self.error(ordinal.start, ordinal.end, "Ordinals cannot be greater than 65535.")
            if self._is("operator", "!"):
                banged = True
                self.i += 1
            elif self._is("operator", "!:"):
                # "@0!:union" lexes the two operators as one token.
                banged = True
                self.tokens = [*self.tokens[: self.i],
                               Token("operator", self.tokens[self.i].start + 1,
                                     self.tokens[self.i].end, ":"),
                               *self.tokens[self.i + 1:]]
        if context in ("enum", "interface"):
            return self._enumerant_or_method(decl, context, ordinal)
        if self._is("operator", ":") and (
                self._is("identifier", "union", 1) or self._is("identifier", "group", 1)) and (
                self._peek(2) is None or self._is("operator", "$", 2)):
            kind = self._peek(1).value  # type: ignore[union-attr]
            if kind == "group" and ordinal is not None:
                # "g @0 :group {": a field whose type is named "group" (and which has a block).
                return self._field_rest(decl)
            self.i += 2
            decl.kind = kind  # type: ignore[assignment]
            if kind == "union" and ordinal is not None and not banged:
                self.error(ordinal.start, ordinal.end, _NUMBERED_UNION)
            decl.annotations = self._annotations()
            self._expect_end()
            return decl
        if ordinal is not None and self._is("identifier", "union") and (
                self._peek(1) is None or self._is("operator", "$", 1)):
            # Pre-0.3 syntax: "foo @1 union {".
            if not banged:
                self.error(ordinal.start, ordinal.end, _NUMBERED_UNION)
            self.error(ordinal.start, ordinal.end, _UNION_COLON)
            self.i += 1
            decl.kind = "union"
            decl.annotations = self._annotations()
            self._expect_end()
            return decl
        if banged:
            self._fail()
        if self._is("operator", ":"):
            if ordinal is None:
                self._fail(None, self.i)
            return self._field_rest(decl)
        self._fail()

    def _enumerant_or_method(self, decl: Declaration, context: str,
                             ordinal: Token | None) -> Declaration:
        if ordinal is None:
            self._fail()
        if context == "enum":
            decl.kind = "enumerant"
            decl.annotations = self._annotations()
            self._expect_end()
            return decl
        return self._method(decl)

    def _field_rest(self, decl: Declaration) -> Declaration:
        """``:Type [= default] $annotations`` of a field."""
        self._expect_op(":")
        decl.type = self._expression()
        if self._is("operator", "="):
            self.i += 1
            decl.value = self._expression()
        decl.annotations = self._annotations()
        self._expect_end()
        return decl

    def _method(self, decl: Declaration) -> Declaration:
        decl.kind = "method"
        t = self._peek()
        if t is not None and t.kind == "bracketList":
            self.i += 1
            assert t.items is not None
            for item in t.items:
                name = self._item(item, t, _StatementParser._expect_ident)
                if isinstance(name, Located):
                    decl.parameters.append(name)
        decl.params = self._param_list()
        if self._is("operator", "->"):
            self.i += 1
            decl.results = self._param_list()
        decl.annotations = self._annotations()
        self._expect_end()
        return decl

    def _param_list(self) -> ast.ParamList:
        t = self._peek()
        if t is None:
            self._fail()
        if t.kind == "parenList":
            assert t.items is not None
            # A parenthesised list is always a named list; bad items are reported one by one.
            self.i += 1
            named = [p for p in (self._item(item, t, _StatementParser._named_param_inner)
                                 for item in t.items) if p is not None]
            return ast.ParamList("namedList", t.start, t.end,
                                 named=named)  # type: ignore[arg-type]
        if t.kind == "identifier" and t.value == "stream":
            nxt = self._peek(1)
            if nxt is None or (nxt.kind == "operator" and nxt.value in ("$", "->")):
                self.i += 1
                return ast.ParamList("stream", t.start, t.end)
        expr = self._expression()
        return ast.ParamList("type", expr.start, expr.end, type=expr)

    def _item(self, item: list[Token], owner: Token,
              parse: Callable[[_StatementParser], object]) -> object | None:
        """Parse one comma-list item on its own. As in capnp, an item that does not parse is
        reported ("Parse error." over the item) and left out; the statement goes on."""
        sub = _StatementParser(self.statement, self.error)
        sub.tokens = item
        try:
            result = parse(sub)
            sub._expect_end()
            return result
        except _Fail:
            if not item:
                # capnp does not know where an empty item is ("[1,,2]"): it blames the list.
                self.error(owner.start, owner.end, "Parse error: Empty list item.")
            elif sub.best + 1 < len(item):
                # From the token after the furthest one looked at to the end of the item.
                self.error(item[sub.best + 1].start, item[-1].end, "Parse error.")
            else:
                self.error(item[0].start, item[-1].end, "Parse error.")
            return None

    def _named_param_inner(self) -> ast.MethodParam:
        sub = self
        item = self.tokens
        name = sub._expect_ident()
        sub._expect_op(":")
        type_ = sub._expression()
        default = None
        if sub._is("operator", "="):
            sub.i += 1
            default = sub._expression()
        annotations = sub._annotations()
        sub._expect_end()
        return ast.MethodParam(name, type_, default, annotations, item[0].start, item[-1].end)

    # ------------------------------------------------------------------ annotations

    def _annotations(self) -> list[ast.AnnotationApplication]:
        result = []
        while self._is("operator", "$"):
            result.append(self._annotation())
        return result

    def _annotation(self) -> ast.AnnotationApplication:
        start = self._expect_op("$").start
        expr = self._expression()
        if expr.kind == "application":
            assert expr.function is not None
            name = expr.function
            params = expr.params
            if len(params) == 1 and params[0].name is None:
                value: Expression | None = params[0].value
            else:
                # capnp builds this tuple without a location: errors over the whole value
                # ("Type mismatch") point at 1:1.
                value = Expression("tuple", 0, 0, params=params)
            return ast.AnnotationApplication(name, value, start, expr.end)
        return ast.AnnotationApplication(expr, None, start, expr.end)

    # ------------------------------------------------------------------ expressions

    def _sub_expression(self, tokens: list[Token], owner: Token) -> Expression:
        """A whole comma-list item as one expression (``unknown`` if it does not parse)."""
        expr = self._item(tokens, owner, _StatementParser._expression)
        if not isinstance(expr, Expression):
            return Expression("unknown", 0, 0)
        return expr

    def _expression(self) -> Expression:
        t = self._peek()
        if t is None:
            self._fail()
        expr: Expression
        if t.kind == "integer":
            self.i += 1
            expr = Expression("positiveInt", t.start, t.end, t.value)
        elif t.kind == "float":
            self.i += 1
            expr = Expression("float", t.start, t.end, t.value)
        elif t.kind == "operator" and t.value == "-":
            nxt = self._peek(1)
            if nxt is None:
                self._fail(None, self.i + 1)
            # capnp locates a negative number at its digits, not at the sign.
            if nxt.kind == "integer":
                expr = Expression("negativeInt", nxt.start, nxt.end, nxt.value)
            elif nxt.kind == "float":
                expr = Expression("float", nxt.start, nxt.end, -nxt.value)  # type: ignore[operator]
            elif nxt.kind == "identifier" and nxt.value == "inf":
                expr = Expression("float", t.start, nxt.end, float("-inf"))
            else:
                self._fail(None, self.i + 1)
            self.i += 2
        elif t.kind == "string":
            parts = []
            end = t.end
            while (s := self._peek()) is not None and s.kind == "string":
                parts.append(str(s.value))
                end = s.end
                self.i += 1
            expr = Expression("string", t.start, end, "".join(parts))
        elif t.kind == "binary":
            self.i += 1
            expr = Expression("binary", t.start, t.end, t.value)
        elif t.kind == "bracketList":
            self.i += 1
            assert t.items is not None
            expr = Expression("list", t.start, t.end,
                              elements=[self._sub_expression(item, t) for item in t.items])
        elif t.kind == "parenList":
            self.i += 1
            assert t.items is not None
            params = self._params(t.items, t)
            if len(params) == 1 and params[0].name is None:
                expr = params[0].value  # "(expr)" is just expr
            else:
                expr = Expression("tuple", t.start, t.end, params=params)
        elif t.kind == "identifier" and t.value in ("import", "embed") and (
                (s := self._peek(1)) is not None and s.kind == "string"):
            self.i += 2
            expr = Expression(t.value, t.start, s.end,
                              Located(s.value, s.start, s.end))
        elif t.kind == "operator" and t.value == ".":
            nxt = self._peek(1)
            if nxt is None or nxt.kind != "identifier":
                self._fail(None, self.i + 1)
            self.i += 2
            expr = Expression("absoluteName", t.start, nxt.end,
                              Located(nxt.value, nxt.start, nxt.end))
        elif t.kind == "identifier":
            self.i += 1
            expr = Expression("relativeName", t.start, t.end, Located(t.value, t.start, t.end))
        else:
            self._fail()
        suffixes = 0
        while True:
            s = self._peek()
            if s is None:
                return expr
            suffixes += 1
            if suffixes > MAX_NESTING:
                # Each ".member" or "(args)" nests the expression one level deeper.
                self.error(s.start, s.start, f"Expression is nested too deeply (more than "
                                             f"{MAX_NESTING} levels).")
                raise _Fail(s.start)
            if s.kind == "operator" and s.value == ".":
                nxt = self._peek(1)
                if nxt is None or nxt.kind != "identifier":
                    self._fail(None, self.i + 1)
                self.i += 2
                expr = Expression("member", expr.start, nxt.end, parent=expr,
                                  name=Located(nxt.value, nxt.start, nxt.end))
            elif s.kind == "parenList":
                self.i += 1
                assert s.items is not None
                expr = Expression("application", expr.start, s.end, function=expr,
                                  params=self._params(s.items, s))
            else:
                return expr

    def _params(self, items: list[list[Token]], owner: Token) -> list[ast.Param]:
        result: list[ast.Param] = []
        for item in items:
            param = self._item(item, owner, _StatementParser._param_inner)
            if not isinstance(param, ast.Param):
                # Like capnp, an item that did not parse stays as an unnamed value without a
                # location (so a struct literal later says "Missing field name." at 1:1).
                param = ast.Param(Expression("unknown", 0, 0))
            result.append(param)
        return result

    def _param_inner(self) -> ast.Param:
        if self._is("identifier") and self._is("operator", "=", 1):
            name = self._expect_ident()
            self.i += 1
            return ast.Param(self._expression(), name)
        return ast.Param(self._expression())

