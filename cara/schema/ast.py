"""The syntax tree of a schema file, mirroring capnp's ``grammar.capnp``.

Every node keeps the byte span (``start``, ``end``) of the text it came from, because every
diagnostic the compiler gives points at one. Types are expressions too (``List(Int32)`` is an
application of ``List``), exactly as in capnp, which is what makes generics uniform.
"""

from __future__ import annotations

from cara.schema._record import field, record

#: ``typing.TYPE_CHECKING`` without importing typing (a tenth of a cold ``cara compile``);
#: type checkers take any ``TYPE_CHECKING`` as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Literal

__all__ = [
    "AnnotationApplication",
    "Declaration",
    "Expression",
    "Located",
    "Param",
    "ParamList",
]


@record(slots=True)
class Located:
    """A name, path or number together with where it was written."""

    value: object
    start: int
    end: int


if TYPE_CHECKING:
    ExpressionKind = Literal[
        "unknown", "positiveInt", "negativeInt", "float", "string", "binary", "relativeName",
        "absoluteName", "import", "embed", "list", "tuple", "application", "member",
    ]
else:  # typing is not imported at run time: the names are plain strings
    ExpressionKind = str


@record(slots=True)
class Expression:
    """A value or type expression.

    ``value`` holds the literal (int, float, str, bytes) or, for names, imports and embeds, a
    :class:`Located` text. ``list`` has ``elements``; ``tuple`` and ``application`` have
    ``params`` (``application`` also ``function``); ``member`` has ``parent`` and ``name``.
    """

    kind: ExpressionKind
    start: int
    end: int
    value: object = None
    elements: list[Expression] = field(default_factory=list)
    params: list[Param] = field(default_factory=list)
    function: Expression | None = None
    parent: Expression | None = None
    name: Located | None = None


@record(slots=True)
class Param:
    """An element of a tuple or an argument of an application: ``value`` or ``name = value``."""

    value: Expression
    name: Located | None = None


@record(slots=True)
class AnnotationApplication:
    """``$name`` or ``$name(value)``."""

    name: Expression
    value: Expression | None
    start: int
    end: int


@record(slots=True)
class MethodParam:
    """One named parameter of a method: ``name :Type = default $ann``."""

    name: Located
    type: Expression
    default: Expression | None
    annotations: list[AnnotationApplication]
    start: int
    end: int


@record(slots=True)
class ParamList:
    """A method's parameters or results: a named list, a struct type, or ``stream``."""

    kind: Literal["namedList", "type", "stream"]
    start: int
    end: int
    named: list[MethodParam] = field(default_factory=list)
    type: Expression | None = None


if TYPE_CHECKING:
    DeclKind = Literal[
        "file", "using", "const", "enum", "enumerant", "struct", "field", "union", "group",
        "interface", "method", "annotation", "nakedId", "nakedAnnotation",
    ]
else:  # typing is not imported at run time: the names are plain strings
    DeclKind = str

TARGET_NAMES = (
    "file", "const", "enum", "enumerant", "struct", "field", "union", "group", "interface",
    "method", "param", "annotation",
)


@record(slots=True)
class Declaration:
    """One declaration with its nested declarations.

    ``id_kind`` says whether ``id`` is an explicit ``@0x...`` id (``uid``), an ordinal ``@N``
    (``ordinal``) or absent. Members used only by some kinds: ``type`` (const, field, annotation,
    using target), ``value`` (const value, field default), ``superclasses`` (interface),
    ``params``/``results``/``implicit_params`` (method), ``targets`` (annotation).
    """

    kind: DeclKind
    name: Located | None
    start: int
    end: int
    id_kind: Literal["unspecified", "uid", "ordinal"] = "unspecified"
    id: Located | None = None
    parameters: list[Located] = field(default_factory=list)
    nested: list[Declaration] = field(default_factory=list)
    annotations: list[AnnotationApplication] = field(default_factory=list)
    doc: str | None = None
    type: Expression | None = None
    value: Expression | None = None
    superclasses: list[Expression] = field(default_factory=list)
    params: ParamList | None = None
    results: ParamList | None = None
    targets: set[str] = field(default_factory=set)
    annotation: AnnotationApplication | None = None
    # Where the ``union`` keyword of an unnamed union is (for "already defined" messages).
    keyword: Located | None = None
    # Parsed, but not allowed in the enclosing block (the compiler reports it in order).
    misplaced: bool = False
