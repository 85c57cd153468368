"""The schema compiler: parsed files in, the ``CodeGeneratorRequest`` capnp would produce out.

The work is split the way capnp splits it (``compiler.c++`` and ``node-translator.c++``), because
that is what makes the output and the diagnostics the same. This module holds the
:class:`Compiler`: it loads and parses files, creates a :class:`~.declarations.DeclNode` (with
its id) for every declaration, resolves names across scopes, imports and generic brands, and
translates nodes on demand. The rest lives beside it:

* :mod:`.translator`: one declaration into its schema nodes (layout, types, methods, annotations);
* :mod:`.value_context` and :mod:`.values`: defaults, constants and annotation values;
* :mod:`.request`: which nodes the request carries (capnp's eager traversal), and the request.

Translation happens in two steps per node, as in capnp: its own structure first (types, layout,
primitive values), then, when the node is *finished*, the struct, list and AnyPointer values,
which may need the structure of other struct types.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from cara.errors import SchemaError
from cara.schema import ids, model
from cara.schema.ast import Declaration, Expression, Located
from cara.schema.brands import (
    BrandedDecl,
    BrandScope,
    DeclEnvironment,
    ResolvedDecl,
    ResolvedParameter,
    builtin_decl,
    evaluate_brand,
    expression_string,
)
from cara.schema.declarations import (
    Alias,
    DeclNode,
    ImplicitParams,
    ParsedFile,
    RecursiveDependency,
)
from cara.schema.diagnostics import Diagnostics, SourceText
from cara.schema.lexer import LexError, tokenize
from cara.schema.loader import SourceFile, SourceLoader
from cara.schema.parser import parse_file
from cara.schema.request import Collector, build_request
from cara.schema.translator import NodeTranslator, assign_value
from cara.schema.value_context import CompilerValueContext
from cara.schema.values import Dyn, ValueTranslator, default_value

__all__ = ["Compiler", "compile_files"]

_BUILTIN_NAMES = frozenset({
    "Void", "Bool", "Int8", "Int16", "Int32", "Int64", "UInt8", "UInt16", "UInt32", "UInt64",
    "Float32", "Float64", "Text", "Data", "List", "Object", "AnyPointer", "AnyStruct", "AnyList",
    "Capability",
})
_NODE_KINDS = frozenset({"struct", "enum", "interface", "const", "annotation"})

class Compiler(DeclEnvironment):
    """Compiles a set of schema files; one instance per compilation."""

    def __init__(self, loader: SourceLoader) -> None:
        self.loader = loader
        self.diag = Diagnostics()
        self.files: dict[int, ParsedFile] = {}  # by id(SourceFile)
        self.nodes_by_id: dict[int, DeclNode] = {}
        self.value_context = CompilerValueContext(self)
        self.values = ValueTranslator(self.value_context)
        self._current: list[DeclNode] = []
        self.aux_by_id: dict[int, model.Node] = {}

    # ------------------------------------------------------------------ files

    def add_file(self, source: SourceFile) -> ParsedFile:
        existing = self.files.get(id(source))
        if existing is not None:
            return existing
        text = SourceText(source.shown_name, source.text)
        errors_before = len(self.diag.items)
        try:
            statements = tokenize(source.text)
        except LexError as exc:
            self.diag.error(text, exc.offset, exc.offset, exc.message)
            statements = []
        root = parse_file(statements, len(source.text),
                          lambda s, e, m: self.diag.error(text, s, e, m))
        file = ParsedFile(source, text, root)
        self.files[id(source)] = file
        # capnp asks for a file id only when the file parsed without errors.
        parsed_cleanly = len(self.diag.items) == errors_before
        file_id = self._file_id(file, report_missing=parsed_cleanly)
        node = DeclNode(self, file, root, None, "file", file_id, source.display_name,
                     _file_prefix_length(source.display_name))
        file.node = node
        self._register(node)
        self._expand(node, root.nested)
        return file

    def _file_id(self, file: ParsedFile, report_missing: bool) -> int:
        for decl in file.root.nested:
            if decl.kind == "nakedId" and decl.id is not None:
                return int(decl.id.value)  # type: ignore[call-overload]
        new_id = ids.generate_file_id()
        if report_missing:
            self.diag.error(file.text, 0, 0,
                            "File does not declare an ID.  I've generated one for you.  Add "
                            f"this line to your file: @0x{new_id:016x};")
        return new_id

    def _register(self, node: DeclNode) -> None:
        existing = self.nodes_by_id.get(node.id)
        if existing is not None:
            if node.id & ids.ID_BIT:
                node.error_on_node(f"Duplicate ID @0x{node.id:x}.")
                existing.error_on_node(f"ID @0x{node.id:x} originally used here.")
            node.id = _bogus_id(self.nodes_by_id)
        self.nodes_by_id[node.id] = node

    def _expand(self, scope: DeclNode, decls: list[Declaration]) -> None:
        """Create the nodes and aliases declared directly in ``scope`` (recursively)."""
        for decl in decls:
            if decl.misplaced:
                continue
            if decl.kind == "using":
                if decl.name is not None and decl.name.value:
                    scope.aliases.setdefault(str(decl.name.value), Alias(decl, scope))
                continue
            if decl.kind in ("field", "union", "group", "method"):
                # Nested declarations inside groups and unions are misplaced; methods hold none.
                self._expand_members(scope, decl.nested)
                continue
            if decl.kind not in _NODE_KINDS or decl.name is None:
                continue
            name = str(decl.name.value)
            if decl.id_kind == "uid" and decl.id is not None:
                node_id = int(decl.id.value)  # type: ignore[call-overload]
            else:
                node_id = ids.child_id(scope.id, name)
            if scope.kind == "file":
                display = f"{scope.display_name}:{name}"
            else:
                display = f"{scope.display_name}.{name}"
            node = DeclNode(self, scope.file, decl, scope, decl.kind, node_id, display,
                         len(display) - len(name))
            self._register(node)  # (a second declaration of a name also repeats its id)
            if name in scope.nested:
                continue  # the name clash is reported by the scope's name check
            scope.nested[name] = node
            scope.ordered.append(node)
            self._expand(node, decl.nested)

    def _expand_members(self, scope: DeclNode, decls: list[Declaration]) -> None:
        for decl in decls:
            if decl.kind in ("field", "union", "group"):
                self._expand_members(scope, decl.nested)

    # ------------------------------------------------------------------ resolution

    def resolve_member(self, node: DeclNode, name: str) -> ResolvedDecl | ResolvedParameter | None:
        child = node.nested.get(name)
        if child is not None:
            return child.resolved()
        alias = node.aliases.get(name)
        if alias is not None:
            return self.compile_alias(alias)
        return None

    def resolve(self, node: DeclNode, name: str) -> ResolvedDecl | ResolvedParameter | None:
        scope: DeclNode | None = node
        while scope is not None:
            found = self.resolve_member(scope, name)
            if found is not None:
                return found
            if name in scope.params:
                return ResolvedParameter(scope.id, scope.params.index(name))
            scope = scope.parent
        if name in _BUILTIN_NAMES:
            return builtin_decl(name)
        return None

    def compile_alias(self, alias: Alias) -> ResolvedDecl | ResolvedParameter | None:
        if alias.state == "done":
            return alias.result
        if alias.state == "busy":
            assert alias.decl.name is not None
            self.diag.error(alias.scope.file.text, alias.decl.name.start, alias.decl.name.end,
                            "Declaration recursively depends on itself.")
            return None
        alias.state = "busy"
        assert alias.decl.type is not None
        scope = alias.scope
        decl = self.compile_decl_expression(alias.decl.type, scope, scope.local_brand(),
                                            ImplicitParams())
        result: ResolvedDecl | ResolvedParameter | None = None
        if decl is not None:
            body = decl.body
            if isinstance(body, ResolvedDecl):
                brand = decl.brand_of(scope.type_error()) if decl.brand else model.Brand()
                result = ResolvedDecl(body.id, body.param_count, scope.id, body.kind,
                                      body.target, brand if brand.scopes else None)
            else:
                result = body
        alias.result = result
        alias.state = "done"
        return result

    def _error_at(self, node: DeclNode, start: int, end: int, message: str) -> None:
        self.diag.error(node.file.text, start, end, message)

    def interpret_resolve(self, scope: BrandScope, result: ResolvedDecl | ResolvedParameter,
                          source: Expression | None) -> BrandedDecl:
        if isinstance(result, ResolvedDecl):
            popped = scope.pop(result.scope_id)
            if result.brand is not None:
                brand_scope = evaluate_brand(popped, result, result.brand.scopes, self)
            else:
                brand_scope = popped.push(result.id, result.param_count)
            return BrandedDecl(result, brand_scope, source)
        bound = scope.lookup_parameter(result.id, result.index)
        if bound is not None:
            return bound
        return BrandedDecl(result, None, source)

    def compile_decl_expression(self, expr: Expression, node: DeclNode, brand: BrandScope,
                                implicit: ImplicitParams) -> BrandedDecl | None:
        text = node.file.text
        kind = expr.kind
        if kind in ("positiveInt", "negativeInt", "float", "string", "binary", "list", "tuple",
                    "embed"):
            self.diag.error(text, expr.start, expr.end, "Expected name.")
            return None
        if kind == "relativeName":
            assert isinstance(expr.value, Located)
            name = str(expr.value.value)
            if name in implicit.names:
                index = implicit.names.index(name)
                return BrandedDecl(ResolvedParameter(implicit.scope_id, index), None, expr)
            found = self.resolve(node, name)
            if found is None:
                self.diag.error(text, expr.value.start, expr.value.end, f"Not defined: {name}")
                return None
            return self.interpret_resolve(brand, found, expr)
        if kind == "absoluteName":
            assert isinstance(expr.value, Located)
            name = str(expr.value.value)
            top = node.file.node
            assert top is not None
            found = self.resolve_member(top, name)
            if found is None:
                self.diag.error(text, expr.value.start, expr.value.end, f"Not defined: {name}")
                return None
            return self.interpret_resolve(brand, found, expr)
        if kind == "import":
            assert isinstance(expr.value, Located)
            imported = self.import_file(node.file, str(expr.value.value))
            if imported is None or imported.node is None:
                self.diag.error(text, expr.value.start, expr.value.end,
                                f"Import failed: {expr.value.value}")
                return None
            root = imported.node
            return BrandedDecl(root.resolved(), BrandScope(root.id, 0, True), expr)
        if kind == "application":
            assert expr.function is not None
            decl = self.compile_decl_expression(expr.function, node, brand, implicit)
            if decl is None:
                return None
            params: list[BrandedDecl] = []
            failed = False
            for param in expr.params:
                if param.name is not None:
                    self.diag.error(text, param.name.start, param.name.end,
                                    "Named parameter not allowed here.")
                compiled = self.compile_decl_expression(param.value, node, brand, implicit)
                if compiled is None:
                    failed = True
                else:
                    params.append(compiled)
            if failed:
                return decl
            applied = decl.apply_params(params, expr, node.type_error())
            return applied if applied is not None else decl
        if kind == "member":
            assert expr.parent is not None and expr.name is not None
            decl = self.compile_decl_expression(expr.parent, node, brand, implicit)
            if decl is None:
                return None
            member_name = str(expr.name.value)
            member = None
            if isinstance(decl.body, ResolvedDecl) and isinstance(decl.body.target, DeclNode):
                found = self.resolve_member(decl.body.target, member_name)
                if found is not None:
                    assert decl.brand is not None
                    member = self.interpret_resolve(decl.brand, found, expr)
            if member is None:
                self.diag.error(text, expr.name.start, expr.name.end,
                                f"'{expression_string(expr.parent)}' has no member named "
                                f"'{member_name}'")
            return member
        return None

    def import_file(self, file: ParsedFile, name: str) -> ParsedFile | None:
        found = self.loader.resolve_import(file.source, name)
        if found is None:
            return None
        return self.add_file(found)

    # DeclEnvironment, for brands coming back from aliases.
    def parent_decl(self, decl: ResolvedDecl) -> ResolvedDecl | None:
        target = decl.target
        if isinstance(target, DeclNode) and target.parent is not None:
            return target.parent.resolved()
        return None

    def decl_for_id(self, type_id: int) -> ResolvedDecl:
        return self.nodes_by_id[type_id].resolved()

    def compile_type(self, expr: Expression, node: DeclNode, implicit: ImplicitParams | None = None,
                     brand: BrandScope | None = None) -> model.Type | None:
        decl = self.compile_decl_expression(expr, node, brand or node.local_brand(),
                                            implicit or ImplicitParams())
        if decl is None:
            return None
        return decl.compile_as_type(node.type_error())

    # ------------------------------------------------------------------ translation

    def bootstrap(self, node: DeclNode) -> None:
        """Translate ``node``'s own structure (everything but deferred values)."""
        if node.state != "new":
            if node.state == "busy":
                raise RecursiveDependency()
            return
        node.state = "busy"
        self._current.append(node)
        try:
            NodeTranslator(self, node).translate()
        finally:
            self._current.pop()
        node.state = "bootstrapped"

    def finish(self, node: DeclNode) -> None:
        """Also evaluate the values whose evaluation was deferred."""
        try:
            self.bootstrap(node)
        except RecursiveDependency:
            node.error_on_node("Declaration recursively depends on itself.")
            return
        if node.state != "bootstrapped":
            if node.state == "finishing":
                raise RecursiveDependency()
            return
        node.state = "finishing"
        try:
            for expr, type_, target, scope in node.deferred:
                value = self.compile_value(expr, type_, scope)
                assign_value(target, self.values.to_model(value, type_) if value is not None
                              else default_value(type_))
        finally:
            node.state = "finished"

    def compile_value(self, expr: Expression, type_: model.Type, scope: DeclNode) -> Dyn | None:
        scopes = self.value_context.scopes
        scopes.append(scope)
        try:
            return self.values.compile(expr, type_)
        finally:
            scopes.pop()

    # ------------------------------------------------------------------ traversal


def _file_prefix_length(display_name: str) -> int:
    """capnp's quirk: a file node's short name is what follows the last dot (``capnp``)."""
    dot = display_name.rfind(".")
    return dot + 1 if dot >= 0 else display_name.rfind("/") + 1


def _bogus_id(taken: dict[int, DeclNode]) -> int:
    candidate = 1
    while candidate in taken:
        candidate += 1
    return candidate


def compile_files(paths: Sequence[str | os.PathLike[str]], *, import_path: Sequence[str] = (),
                  no_standard_import: bool = False, src_prefix: str | None = None,
                  cwd: str | os.PathLike[str] | None = None,
                  strings: Sequence[tuple[str, str]] = ()) -> model.CodeGeneratorRequest:
    """Compile files (and in-memory ``(name, text)`` sources) into a request."""
    loader = SourceLoader(import_path, no_standard_import=no_standard_import,
                          src_prefixes=[src_prefix] if src_prefix else [], cwd=cwd)
    compiler = Compiler(loader)
    requested: list[ParsedFile] = []
    collector = Collector()
    try:
        for path in paths:
            requested.append(compiler.add_file(loader.load_root(path)))
            collector.add(compiler, requested[-1])
        for name, text in strings:
            base = Path(os.path.abspath(cwd if cwd is not None else os.getcwd()))
            data = text.encode("utf-8", "surrogatepass")
            source = SourceFile(name, base / name, base, data, text)
            requested.append(compiler.add_file(source))
            collector.add(compiler, requested[-1])
        return build_request(compiler, requested, collector)
    except RecursionError:
        raise SchemaError([*compiler.diag.formatted(),
                           "error: schema nesting is too deep to compile"]) from None
    except SchemaError:
        raise
    except Exception as exc:
        # A bug in cara must not look like a crash on the user's schema: report it as an
        # error of this compilation, after whatever was found before it.
        raise SchemaError([*compiler.diag.formatted(),
                           f"error: internal compiler error: {type(exc).__name__}: {exc}"]) \
            from exc
