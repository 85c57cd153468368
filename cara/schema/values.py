"""Evaluating value expressions (defaults, constants, annotation values) against a type.

The rules and messages are capnp's (``ValueTranslator`` in ``node-translator.c++``): a literal
is first interpreted on its own (an integer, a string, a struct literal ...) and then checked
against the expected type, with range checks for integers. Bare names are ``void``, ``true``,
``false``, ``inf``, ``nan`` or an enumerant; anything else must name a constant, qualified with
a scope (``.c``, ``Scope.c``) to avoid confusion with enumerants.

A struct literal becomes a ``dict`` (groups nest as dicts), a list literal a ``list``; see
:class:`cara.schema.model.PointerValue` for the whole Python representation.
"""

from __future__ import annotations

import math

from cara.schema import model
from cara.schema._record import record
from cara.schema.ast import Expression, Located

#: ``typing.TYPE_CHECKING`` without importing typing (a tenth of a cold ``cara compile``);
#: type checkers take any ``TYPE_CHECKING`` as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Protocol
else:  # the protocol classes are only ever read by type checkers
    Protocol = object

__all__ = ["Dyn", "FieldShape", "StructShape", "ValueContext", "ValueTranslator"]


@record
class Dyn:
    """A value before it is fitted to its type: ``kind`` is void, bool, int, float, text, data,
    list, enum or struct; ``type`` identifies lists, enums and structs for the type check."""

    kind: str
    value: object
    type: model.Type | None = None


@record
class FieldShape:
    """What a struct literal needs to know about one field of the struct."""

    name: str
    type: model.Type | None  # None for a group
    group: StructShape | None = None
    discriminant: int = model.NO_DISCRIMINANT
    code_order: int = 0


@record
class StructShape:
    """The shape of a struct value: its type and fields."""

    type_id: int
    short_name: str
    fields: dict[str, FieldShape]
    first_field: str | None = None


class ValueContext(Protocol):
    """What value evaluation asks of the compiler."""

    def error(self, start: int, end: int, message: str) -> None: ...

    def resolve_constant(self, expr: Expression) -> Dyn | None: ...

    def read_embed(self, path: Located, expr: Expression) -> bytes | None: ...

    def struct_shape(self, type_: model.Type) -> StructShape | None: ...

    def enumerants(self, type_id: int) -> dict[str, int]: ...

    def type_name(self, type_: model.Type) -> str: ...

    def decode_embedded_struct(self, data: bytes, type_: model.Type,
                               expr: Expression) -> Dyn | None: ...


_INT_RANGES: dict[str, tuple[int, int]] = {
    "int8": (-(1 << 7), (1 << 7) - 1),
    "int16": (-(1 << 15), (1 << 15) - 1),
    "int32": (-(1 << 31), (1 << 31) - 1),
    "int64": (-(1 << 63), (1 << 63) - 1),
    "uint8": (0, (1 << 8) - 1),
    "uint16": (0, (1 << 16) - 1),
    "uint32": (0, (1 << 32) - 1),
    "uint64": (0, (1 << 64) - 1),
    "float32": (-(1 << 63), (1 << 64) - 1),
    "float64": (-(1 << 63), (1 << 64) - 1),
}


def _is_unbound_parameter(type_: model.Type) -> bool:
    return type_.which == "anyPointer" and type_.anyPointer is not None and \
        type_.anyPointer.which != "unconstrained"


def _any_kind(type_: model.Type) -> str | None:
    if type_.which == "anyPointer" and type_.anyPointer is not None and \
            type_.anyPointer.unconstrained is not None:
        return type_.anyPointer.unconstrained.which
    return None


def _same_type_id(a: model.Type | None, b: model.Type, which: str) -> bool:
    if a is None or a.which != which:
        return False
    return getattr(a, which).typeId == getattr(b, which).typeId


def types_equal(a: model.Type | None, b: model.Type) -> bool:
    """Same type, ignoring brands (which capnp's bootstrap schemas compare loosely)."""
    if a is None or a.which != b.which:
        return False
    if a.which == "list":
        assert a.list is not None and b.list is not None
        return types_equal(a.list.elementType, b.list.elementType)
    if a.which in ("struct", "enum", "interface"):
        return _same_type_id(a, b, a.which)
    if a.which == "anyPointer":
        return a.anyPointer == b.anyPointer
    return True


class ValueTranslator:
    """Evaluates expressions for one compilation, reporting problems to ``ctx``."""

    def __init__(self, ctx: ValueContext) -> None:
        self.ctx = ctx

    def _mismatch(self, src: Expression, type_: model.Type) -> None:
        self.ctx.error(src.start, src.end,
                       f"Type mismatch; expected {self.ctx.type_name(type_)}.")

    # ------------------------------------------------------------------ entry points

    def compile(self, src: Expression, type_: model.Type) -> Dyn | None:
        if _is_unbound_parameter(type_):
            self.ctx.error(src.start, src.end,
                           "Cannot interpret value because the type is a generic type parameter "
                           "which is not yet bound. We don't know what type to expect here.")
            return None
        result = self._inner(src, type_)
        if result is None:
            return None
        matched = self._match(src, result, type_)
        if matched is None and type_.which == "struct":
            # Cap'n Proto 1.x: a value that is not the struct may be the value of its first
            # field (the struct's fields[0], lowest ordinal first). One level only, as libcapnp.
            shape = self.ctx.struct_shape(type_)
            first = shape.fields[shape.first_field] if shape and shape.first_field else None
            if first is not None and first.type is not None:
                inner = self._match(src, result, first.type)
                if inner is not None:
                    return Dyn("struct", {first.name: self.to_python(inner, first.type)}, type_)
        if matched is None:
            self._mismatch(src, type_)
        return matched

    def _match(self, src: Expression, result: Dyn, type_: model.Type) -> Dyn | None:
        """``result`` as a value of ``type_`` (integers clamped, after "Integer value out of
        range."), or None if it is not one: capnp's ``matchesType``."""
        which = type_.which
        kind = result.kind
        if kind == "void":
            if which == "void":
                return result
        elif kind == "bool":
            if which == "bool":
                return result
        elif kind == "int":
            value = int(result.value)  # type: ignore[call-overload]
            if which in _INT_RANGES:
                low, high = _INT_RANGES[which]
                if value < low:
                    self.ctx.error(src.start, src.end, "Integer value out of range.")
                    value = low
                elif value > high:
                    self.ctx.error(src.start, src.end, "Integer value out of range.")
                    value = high
                return Dyn("int", value)
        elif kind == "float":
            if which in ("float32", "float64"):
                return result
        elif kind == "text":
            if which == "text":
                return result
        elif kind == "data":
            if which == "data":
                return result
        elif kind == "list":
            if which == "list":
                if types_equal(result.type, type_):
                    return result
            elif _any_kind(type_) in ("anyKind", "list"):
                return result
        elif kind == "enum":
            if which == "enum" and _same_type_id(result.type, type_, "enum"):
                return result
        elif kind == "struct":
            if which == "struct":
                if _same_type_id(result.type, type_, "struct"):
                    return result
            elif _any_kind(type_) in ("anyKind", "struct"):
                return result
        return None

    def _inner(self, src: Expression, type_: model.Type) -> Dyn | None:
        kind = src.kind
        if kind == "relativeName":
            assert isinstance(src.value, Located)
            name = str(src.value.value)
            if type_.which == "enum":
                assert type_.enum is not None
                enumerants = self.ctx.enumerants(type_.enum.typeId)
                if name in enumerants:
                    return Dyn("enum", enumerants[name], type_)
            else:
                literal = _NAMED_LITERALS.get(name)
                if literal is not None:
                    return literal
            return self.ctx.resolve_constant(src)
        if kind in ("absoluteName", "import", "application", "member"):
            return self.ctx.resolve_constant(src)
        if kind == "embed":
            assert isinstance(src.value, Located)
            data = self.ctx.read_embed(src.value, src)
            if data is None:
                return None
            if type_.which == "text":
                return Dyn("text", data.decode("utf-8", "surrogateescape"))
            if type_.which == "data":
                return Dyn("data", data)
            if type_.which == "struct":
                if len(data) % 8:
                    self.ctx.error(src.start, src.end,
                                   "Embedded file is not a valid Cap'n Proto message.")
                    return None
                return self.ctx.decode_embedded_struct(data, type_, src)
            self.ctx.error(src.start, src.end,
                           "Embeds can only be used when Text, Data, or a struct is expected.")
            return None
        if kind == "positiveInt":
            return Dyn("int", src.value)
        if kind == "negativeInt":
            magnitude = int(src.value)  # type: ignore[call-overload]
            if magnitude > (1 << 63):
                self.ctx.error(src.start, src.end, "Integer is too big to be negative.")
                return None
            return Dyn("int", -magnitude)
        if kind == "float":
            return Dyn("float", src.value)
        if kind == "string":
            if type_.which == "data":
                return Dyn("data", str(src.value).encode("utf-8", "surrogateescape"))
            return Dyn("text", src.value)
        if kind == "binary":
            if type_.which != "data":
                self._mismatch(src, type_)
                return None
            return Dyn("data", src.value)
        if kind == "list":
            if type_.which != "list":
                self._mismatch(src, type_)
                return None
            assert type_.list is not None
            element_type = type_.list.elementType
            items: list[object] = []
            for element in src.elements:
                value = self.compile(element, element_type)
                items.append(self.to_python(value, element_type) if value is not None
                             else _zero(element_type))
            return Dyn("list", items, type_)
        if kind == "tuple":
            if type_.which != "struct":
                self._mismatch(src, type_)
                return None
            shape = self.ctx.struct_shape(type_)
            if shape is None:
                return None
            return Dyn("struct", self._fill_struct(shape, src.params), type_)
        return None

    def _fill_struct(self, shape: StructShape, params: list) -> dict[str, object]:
        result: dict[str, object] = {}
        for param in params:
            if param.name is None:
                value_expr: Expression = param.value
                self.ctx.error(value_expr.start, value_expr.end, "Missing field name.")
                continue
            name = str(param.name.value)
            fshape = shape.fields.get(name)
            if fshape is None:
                self.ctx.error(param.name.start, param.name.end,
                               f"Struct has no field named '{name}'.")
                continue
            value_expr = param.value
            if fshape.type is None:
                assert fshape.group is not None
                if value_expr.kind == "tuple":
                    inner = result.get(name)
                    group_dict = inner if isinstance(inner, dict) else {}
                    group_dict.update(self._fill_struct(fshape.group, value_expr.params))
                    self._set_member(result, shape, fshape, group_dict)
                elif value_expr.kind not in ("list", "binary"):
                    # Cap'n Proto 1.x: a group written as the value of its first field.
                    self._fill_group_first(result, shape, fshape, value_expr)
                else:
                    self.ctx.error(value_expr.start, value_expr.end,
                                   "Type mismatch; expected group.")
                continue
            value = self.compile(value_expr, fshape.type)
            if value is not None:
                self._set_member(result, shape, fshape, self.to_python(value, fshape.type))
        return result

    def _fill_group_first(self, result: dict[str, object], shape: StructShape,
                          fshape: FieldShape, value_expr: Expression) -> None:
        group = fshape.group
        assert group is not None
        group_type = model.Type("struct", struct=model.TypeBranded(group.type_id))
        value = self._inner(value_expr, group_type)
        if value is None:
            return  # reported
        first = group.fields[group.first_field] if group.first_field else None
        if first is not None and first.type is not None:
            matched = self._match(value_expr, value, first.type)
            if matched is not None:
                self._set_member(result, shape, fshape,
                                 {first.name: self.to_python(matched, first.type)})
                return
        self.ctx.error(value_expr.start, value_expr.end, "Type mismatch; expected group.")

    @staticmethod
    def _set_member(result: dict[str, object], shape: StructShape, fshape: FieldShape,
                    value: object) -> None:
        if fshape.discriminant != model.NO_DISCRIMINANT:
            # Setting a union member replaces whichever member was set before.
            for other in shape.fields.values():
                if other.discriminant != model.NO_DISCRIMINANT and other.name in result and \
                        other.name != fshape.name:
                    del result[other.name]
        result[fshape.name] = value

    # ------------------------------------------------------------------ conversion

    @staticmethod
    def to_python(value: Dyn, type_: model.Type) -> object:
        """The plain Python form of an evaluated value, as stored inside pointer values."""
        which = type_.which
        if value.kind == "void":
            return None
        if which == "anyPointer":
            # Nothing in the schema says what an AnyPointer holds: keep the value's own type.
            return model.PointerValue(value.type or type_, value.value)
        if which == "float32":
            # Stored as what a Float32 can hold, like every other Float32 value.
            return _round_float32(float(value.value))  # type: ignore[arg-type]
        if which == "float64":
            return float(value.value)  # type: ignore[arg-type]
        return value.value

    def to_model(self, value: Dyn | None, type_: model.Type) -> model.Value:
        """A ``schema.Value`` for ``type_`` holding ``value`` (its zero value when None)."""
        which = type_.which
        if value is None:
            return default_value(type_)
        python = self.to_python(value, type_)
        if which == "void":
            return model.Value("void")
        if which in ("list", "struct", "anyPointer"):
            # An AnyPointer's value already carries its own type (see to_python).
            pv = python if isinstance(python, model.PointerValue) else \
                model.PointerValue(type_, python)
            return model.Value(which, **{which: pv})  # type: ignore[arg-type]
        if which == "interface":
            return model.Value("interface")
        if which == "float32":
            return model.Value("float32", float32=_round_float32(float(python)))  # type: ignore[arg-type]
        return model.Value(which, **{which: python})  # type: ignore[arg-type]


_NAMED_LITERALS = {
    "void": Dyn("void", None),
    "true": Dyn("bool", True),
    "false": Dyn("bool", False),
    "inf": Dyn("float", math.inf),
    "nan": Dyn("float", math.nan),
}


def _round_float32(value: float) -> float:
    import struct as _struct
    try:
        return float(_struct.unpack("<f", _struct.pack("<f", value))[0])
    except OverflowError:
        return math.copysign(math.inf, value)


def _zero(type_: model.Type) -> object:
    which = type_.which
    if which == "bool":
        return False
    if which in ("float32", "float64"):
        return 0.0
    if which in _INT_RANGES or which == "enum":
        return 0
    return None


def default_value(type_: model.Type) -> model.Value:
    """The "default default": zero for numbers, null for pointers (capnp's
    ``compileDefaultDefaultValue``)."""
    which = type_.which
    if which == "text":
        return model.Value("text", text="")
    if which == "data":
        return model.Value("data", data=b"")
    if which in ("list", "struct", "anyPointer"):
        return model.Value(which, **{which: model.PointerValue(type_, None)})  # type: ignore[arg-type]
    return model.Value(which)
