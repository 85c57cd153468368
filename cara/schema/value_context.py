"""How value evaluation reaches into the compiler: constants, embeds and struct shapes.

:class:`cara.schema.values.ValueTranslator` knows the value language but nothing about
declarations; this module answers its questions from the compiler's point of view: the scope an
expression is evaluated in, what a constant name refers to (and capnp's rule that constants
must be qualified), which file ``embed`` reads, and the fields of a struct type with its generic
arguments substituted.
"""

from __future__ import annotations

from cara.schema import model
from cara.schema.ast import Expression, Located
from cara.schema.brands import ResolvedDecl, expression_string, substitute
from cara.schema.declarations import (
    CompilerServices,
    DeclNode,
    ImplicitParams,
    RecursiveDependency,
)
from cara.schema.values import Dyn, FieldShape, StructShape

__all__ = ["CompilerValueContext", "dyn_from_value", "substituted_shape"]

_TYPE_KINDS = frozenset({"struct", "enum", "interface"})
_TYPE_NAMES = {
    "void": "Void", "bool": "Bool", "int8": "Int8", "int16": "Int16", "int32": "Int32",
    "int64": "Int64", "uint8": "UInt8", "uint16": "UInt16", "uint32": "UInt32",
    "uint64": "UInt64", "float32": "Float32", "float64": "Float64", "text": "Text",
    "data": "Data", "anyPointer": "AnyPointer",
}

class CompilerValueContext:
    """Connects value evaluation to the compiler (scope, constants, embeds, struct shapes)."""

    def __init__(self, compiler: CompilerServices) -> None:
        self.compiler = compiler
        #: The declarations whose values are being evaluated (names resolve in the last one).
        self.scopes: list[DeclNode] = []

    @property
    def scope(self) -> DeclNode:
        return self.scopes[-1]

    def error(self, start: int, end: int, message: str) -> None:
        self.compiler.diag.error(self.scope.file.text, start, end, message)

    def resolve_constant(self, expr: Expression) -> Dyn | None:
        compiler = self.compiler
        scope = self.scope
        decl = compiler.compile_decl_expression(expr, scope, scope.local_brand(),
                                                ImplicitParams())
        if decl is None:
            return None
        if decl.kind != "const":
            self.error(expr.start, expr.end,
                       f"'{expression_string(expr)}' does not refer to a constant.")
            return None
        assert isinstance(decl.body, ResolvedDecl) and isinstance(decl.body.target, DeclNode)
        target = decl.body.target
        try:
            compiler.finish(target)
        except RecursiveDependency:
            target.error_on_node("Declaration recursively depends on itself.")
            return None
        if target.model is None or target.model.const is None or target.state != "finished":
            return None
        brand = decl.brand_of(scope.type_error())
        const_type = substitute(target.model.const.type, brand)
        result = dyn_from_value(target.model.const.value, const_type)
        if expr.kind == "relativeName" and target.parent is not None:
            parent = target.parent
            if parent.state == "busy":
                # capnp looks the scope up to word the message, which fails while that scope
                # is itself being compiled.
                parent.error_on_node("Declaration recursively depends on itself.")
                return result
            prefix = "" if parent.kind == "file" else parent.display_name[parent.prefix_len:]
            name = expression_string(expr)
            self.error(expr.start, expr.end,
                       "Constant names must be qualified to avoid confusion.  Please replace "
                       f"'{name}' with '{prefix}.{name}', if that's what you intended.")
        return result

    def read_embed(self, path: Located, expr: Expression) -> bytes | None:
        data = self.compiler.loader.read_embed(self.scope.file.source, str(path.value))
        if data is None:
            self.error(path.start, path.end, f"Couldn't read file for embed: {path.value}")
        return data

    def struct_shape(self, type_: model.Type) -> StructShape | None:
        assert type_.struct is not None
        node = self.compiler.nodes_by_id.get(type_.struct.typeId)
        if node is None:
            return None
        try:
            self.compiler.bootstrap(node)
        except RecursiveDependency:
            return node.shapes.get(node.id)
        shape = node.shapes.get(node.id)
        if shape is None:
            return None
        if type_.struct.brand.scopes:
            return substituted_shape(shape, type_.struct.brand)
        return shape

    def enumerants(self, type_id: int) -> dict[str, int]:
        node = self.compiler.nodes_by_id.get(type_id)
        if node is None:
            return {}
        try:
            self.compiler.bootstrap(node)
        except RecursiveDependency:
            pass
        return node.enumerant_ordinals

    def type_name(self, type_: model.Type) -> str:
        which = type_.which
        if which == "list" and type_.list is not None:
            return f"List({self.type_name(type_.list.elementType)})"
        if which in _TYPE_KINDS:
            node = self.compiler.nodes_by_id.get(getattr(type_, which).typeId)
            return node.display_name[node.prefix_len:] if node is not None else which
        return _TYPE_NAMES[which]

    def struct_node(self, type_id: int) -> model.Node | None:
        node = self.compiler.nodes_by_id.get(type_id)
        if node is None:
            return self.compiler.aux_by_id.get(type_id)
        try:
            self.compiler.bootstrap(node)
        except RecursiveDependency:
            return None
        return node.model

    def decode_embedded_struct(self, data: bytes, type_: model.Type,
                               expr: Expression) -> Dyn | None:
        try:
            from cara.schema.embedded import read_struct_message
            value = read_struct_message(data, type_, self)
        except (ValueError, ImportError) as exc:
            self.error(expr.start, expr.end,
                       f"Embedded file is not a valid Cap'n Proto message: {exc}")
            return None
        return Dyn("struct", value, type_)


def substituted_shape(shape: StructShape, brand: model.Brand) -> StructShape:
    fields: dict[str, FieldShape] = {}
    for name, f in shape.fields.items():
        fields[name] = FieldShape(
            f.name,
            substitute(f.type, brand) if f.type is not None else None,
            substituted_shape(f.group, brand) if f.group is not None else None,
            f.discriminant, f.code_order)
    return StructShape(shape.type_id, shape.short_name, fields, shape.first_field)


def dyn_from_value(value: model.Value, type_: model.Type) -> Dyn:
    which = value.which
    if which == "void":
        return Dyn("void", None)
    if which == "bool":
        return Dyn("bool", value.bool)
    if which in ("float32", "float64"):
        return Dyn("float", getattr(value, which))
    if which in ("text", "data"):
        return Dyn(which, getattr(value, which))
    if which == "enum":
        # capnp 0.9.2 never accepts an enum constant where an enum is expected ("Type mismatch;
        # expected E.", its bootstrap and final enum schemas differ); no type reproduces that.
        return Dyn("enum", value.enum, None)
    if which in ("list", "struct", "anyPointer"):
        pv: model.PointerValue | None = getattr(value, which)
        if pv is None:
            return Dyn("struct" if which == "struct" else which, None, type_)
        kind = pv.type.which if which == "anyPointer" else which
        return Dyn(kind, pv.value, pv.type)
    return Dyn("int", getattr(value, which))

