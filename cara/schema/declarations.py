"""What the compiler knows about declarations while it compiles them.

A :class:`DeclNode` is a declaration that becomes a schema node (file, struct, enum, interface,
const, annotation): its id, display name, generic parameters and the scope it opens for name
lookup (nested nodes and ``using`` aliases). Its translation state and results live here too,
because declarations are translated lazily, when first needed.
"""

from __future__ import annotations

from cara.schema import model
from cara.schema._record import field, record
from cara.schema.ast import Declaration, Expression
from cara.schema.brands import BrandedDecl, BrandScope, ErrorAt, ResolvedDecl, ResolvedParameter
from cara.schema.diagnostics import Diagnostics, SourceText
from cara.schema.loader import SourceFile, SourceLoader
from cara.schema.values import Dyn, StructShape, ValueTranslator

#: ``typing.TYPE_CHECKING`` without importing typing (a tenth of a cold ``cara compile``);
#: type checkers take any ``TYPE_CHECKING`` as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Protocol
else:  # the protocol classes are only ever read by type checkers
    Protocol = object

__all__ = ["Alias", "CompilerServices", "DeclNode", "ImplicitParams", "ParsedFile",
           "RecursiveDependency"]


class RecursiveDependency(Exception):
    """A declaration needed its own result while computing it."""


@record(eq=False)
class ParsedFile:
    """A parsed source file with its declarations."""

    source: SourceFile
    text: SourceText
    root: Declaration
    node: DeclNode | None = None


@record(eq=False)
class Alias:
    """A ``using`` alias being resolved: its declaration, scope and what it names."""

    decl: Declaration
    scope: DeclNode
    state: str = "new"  # new, busy, done
    result: ResolvedDecl | ResolvedParameter | None = None


@record(eq=False)
class ImplicitParams:
    """The implicit generic parameters of a method."""

    scope_id: int = 0
    names: list[str] = field(default_factory=list)


class CompilerServices(Protocol):
    """What the modules under the compiler (declarations, translator, value_context, request)
    ask of it; :class:`cara.schema.compiler.Compiler` provides it. Naming the interface here
    keeps those modules below ``compiler.py``: they never import it."""

    diag: Diagnostics
    loader: SourceLoader
    values: ValueTranslator
    nodes_by_id: dict[int, DeclNode]
    aux_by_id: dict[int, model.Node]

    def compile_decl_expression(self, expr: Expression, node: DeclNode, brand: BrandScope,
                                implicit: ImplicitParams) -> BrandedDecl | None: ...

    def compile_type(self, expr: Expression, node: DeclNode, implicit: ImplicitParams | None = None,
                     brand: BrandScope | None = None) -> model.Type | None: ...

    def compile_value(self, expr: Expression, type_: model.Type,
                      scope: DeclNode) -> Dyn | None: ...

    def compile_alias(self, alias: Alias) -> ResolvedDecl | ResolvedParameter | None: ...

    def bootstrap(self, node: DeclNode) -> None: ...

    def finish(self, node: DeclNode) -> None: ...

    def import_file(self, file: ParsedFile, name: str) -> ParsedFile | None: ...


class DeclNode:
    """One schema node being compiled, with its scope for name lookup."""

    def __init__(self, compiler: CompilerServices, file: ParsedFile, decl: Declaration,
                 parent: DeclNode | None, kind: str, node_id: int, display_name: str,
                 prefix_len: int) -> None:
        self.compiler = compiler
        self.file = file
        self.decl = decl
        self.parent = parent
        self.kind = kind
        self.id = node_id
        self.display_name = display_name
        self.prefix_len = prefix_len
        self.params = [str(p.value) for p in decl.parameters] if kind != "file" else []
        self._local_brand: BrandScope | None = None
        self.nested: dict[str, DeclNode] = {}
        self.ordered: list[DeclNode] = []
        self.aliases: dict[str, Alias] = {}
        self.state = "new"  # new, busy, bootstrapped, finishing, finished
        self.model: model.Node | None = None
        self.aux: list[model.Node] = []
        self.source_info: list[model.SourceInfo] = []
        self.deferred: list[tuple[Expression, model.Type, model.Value, DeclNode]] = []
        # Struct shapes of this node and of its groups, for struct literals.
        self.shapes: dict[int, StructShape] = {}
        self.enumerant_ordinals: dict[str, int] = {}

    @property
    def name_span(self) -> tuple[int, int]:
        if self.kind == "file":
            return 0, 0
        if self.decl.name is not None:
            return self.decl.name.start, self.decl.name.end
        return self.decl.start, self.decl.end

    def error_on_node(self, message: str) -> None:
        start, end = self.name_span
        self.compiler.diag.error(self.file.text, start, end, message)

    def type_error(self) -> ErrorAt:
        """Reports a problem at an expression of this node's file (at 1:1 without one)."""
        diag, text = self.compiler.diag, self.file.text

        def report(expr: Expression | None, message: str) -> None:
            if expr is None:
                diag.error(text, 0, 0, message)
            else:
                diag.error(text, expr.start, expr.end, message)
        return report

    def is_generic(self) -> bool:
        node: DeclNode | None = self
        while node is not None:
            if node.params:
                return True
            node = node.parent
        return False

    def resolved(self) -> ResolvedDecl:
        scope_id = self.parent.id if self.parent is not None else 0
        return ResolvedDecl(self.id, len(self.params), scope_id, self.kind, self)

    def local_brand(self) -> BrandScope:
        """The brand inside this declaration: its own parameters and its scopes', all still
        open. Made once (brands are not changed after they are made: binding makes new ones)."""
        brand = self._local_brand
        if brand is None:
            parent = self.parent.local_brand() if self.parent is not None else None
            brand = self._local_brand = BrandScope(self.id, len(self.params), True, [], parent)
        return brand
