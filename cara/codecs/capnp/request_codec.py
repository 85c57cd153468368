"""``CodeGeneratorRequest`` <-> Cap'n Proto binary, driven by schema.capnp's own nodes.

There are no hand-written offsets here: the request is encoded and decoded by
:class:`~.schema_codec.SchemaCodec` using the nodes of ``/capnp/schema.capnp`` itself, and the
plain dicts it produces are mapped onto :mod:`cara.schema.model` dataclasses, whose attribute
names are the schema's field names (a union: ``which`` plus the member's attribute).

Bootstrap: schema.capnp's nodes must come from somewhere. A *provider* (a function returning
them) can be injected with :func:`set_schema_nodes_provider` (tests use the reference
compiler's nodes); without one, cara's own compiler (``cara.schema.compile``, the layer below)
compiles the schema.capnp bundled in ``cara/schema/standard/capnp/``. That copy is newer than
capnp 0.9.2's (more fields), which is harmless: decoding follows the usual evolution rules, and
what is encoded reads back the same in 0.9.2-era readers.

``Value``'s pointer members (struct, list, AnyPointer defaults and constants, annotation values)
are typed by their context, not by the Value itself: a field default by ``Field.slot.type``, a
constant by ``Node.const.type``, an annotation value by the annotation node's ``type`` (looked
up by id in the same request). They decode to :class:`~cara.schema.model.PointerValue` holding
that type and the plain value; a value of a generic parameter type stays an
:class:`~.reader.AnyPointerReader`.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Iterable
from typing import Any

from cara.errors import DecodeError
from cara.schema import model

from .builder import MessageBuilder
from .framing import read_flat
from .reader import (
    DEFAULT_NESTING_LIMIT,
    AnyPointerReader,
    Message,
    read_message,
)
from .schema_codec import SchemaCodec

__all__ = [
    "CODE_GENERATOR_REQUEST_ID",
    "RequestCodec",
    "SchemaNodesProvider",
    "bundled_schema_nodes",
    "decode_request",
    "encode_request",
    "set_schema_nodes_provider",
]

#: Node ids fixed by schema.capnp.
CODE_GENERATOR_REQUEST_ID = 0xBFC546F6210AD7CE

SchemaNodesProvider = Callable[[], Iterable[model.Node]]
_provider: SchemaNodesProvider | None = None
_default_codec: RequestCodec | None = None


def set_schema_nodes_provider(provider: SchemaNodesProvider | None) -> None:
    """Register the function that yields schema.capnp's nodes (cara's compiler does this)."""
    global _provider, _default_codec
    _provider = provider
    _default_codec = None


def bundled_schema_nodes() -> list[model.Node]:
    """schema.capnp's nodes, compiled by cara from the copy bundled with cara.schema."""
    from pathlib import Path

    import cara.schema

    path = Path(cara.schema.__file__).parent / "standard" / "capnp" / "schema.capnp"
    return cara.schema.compile([str(path)]).nodes


def _codec() -> RequestCodec:
    global _default_codec
    if _default_codec is None:
        provider = _provider if _provider is not None else bundled_schema_nodes
        _default_codec = RequestCodec(provider())
    return _default_codec


def decode_request(data: bytes | bytearray | memoryview) -> model.CodeGeneratorRequest:
    """Decode a binary (stream-framed) request with the registered schema.capnp nodes."""
    return _codec().decode(data)


def encode_request(request: model.CodeGeneratorRequest) -> bytes:
    """Encode a request (stream-framed, unpacked) with the registered schema.capnp nodes."""
    return _codec().encode(request)


@dataclasses.dataclass
class _Slot:
    name: str
    shape: str  # "scalar", "model", "list-model", "list-scalar", "pointer-value", "void"
    cls: type | None = None
    plan_id: int = 0
    #: what a null pointer means for an active union member ("" for Text, b"" for Data)
    empty: Any = None


class RequestCodec:
    """Maps ``CodeGeneratorRequest`` models to and from bytes with a given schema.capnp."""

    def __init__(self, schema_nodes: Iterable[model.Node]) -> None:
        self.codec = SchemaCodec(list(schema_nodes))
        self.root = self.codec.plan(CODE_GENERATOR_REQUEST_ID)
        self._layouts: dict[tuple[type, int], tuple[list[_Slot], set[str]]] = {}

    # ---------------------------------------------------------------------------- decoding

    def decode(self, data: bytes | bytearray | memoryview, *,
               traversal_limit_in_words: int = 1 << 40) -> model.CodeGeneratorRequest:
        """Decode; the traversal limit defaults to very large because requests for big
        schemas exceed libcapnp's 8 Mi words default only in theory, and the input is trusted
        compiler output. Pass a smaller limit for untrusted input."""
        msg = read_message(data, traversal_limit_in_words=traversal_limit_in_words)
        raw = self.codec.decode_message(CODE_GENERATOR_REQUEST_ID, msg)
        pending: list[model.PointerValue] = []
        req = self._to_model(raw, model.CodeGeneratorRequest, CODE_GENERATOR_REQUEST_ID,
                             pending)
        if pending:
            self._type_pointer_values(req)
        return typing.cast(model.CodeGeneratorRequest, req)

    def _layout(self, cls: type, plan_id: int) -> tuple[list[_Slot], set[str]]:
        key = (cls, plan_id)
        got = self._layouts.get(key)
        if got is not None:
            return got
        plan = self.codec.plan(plan_id)
        hints = typing.get_type_hints(cls, vars(model))
        by_name = {f.name: f for f in plan.fields}
        members = {f.name for f in plan.fields if f.discriminant != model.NO_DISCRIMINANT}
        slots: list[_Slot] = []
        for f in dataclasses.fields(cls):
            if f.name == "which":
                continue
            fp = by_name.get(f.name)
            if fp is None:
                raise DecodeError(f"model.{cls.__name__}.{f.name} is not a field of "
                                  f"{plan.name} in the given schema.capnp")
            hint = _strip_optional(hints[f.name])
            if hint is model.PointerValue:
                slots.append(_Slot(f.name, "pointer-value"))
            elif dataclasses.is_dataclass(hint):
                sub = fp.group_id if fp.kind == "group" else _struct_id(fp.type)
                slots.append(_Slot(f.name, "model", typing.cast(type, hint), sub))
            elif typing.get_origin(hint) is list:
                (elem,) = typing.get_args(hint)
                if dataclasses.is_dataclass(elem):
                    assert fp.type is not None and fp.type.list is not None
                    slots.append(_Slot(f.name, "list-model", typing.cast(type, elem),
                                       _struct_id(fp.type.list.elementType)))
                else:
                    slots.append(_Slot(f.name, "list-scalar"))
            else:
                empty = {str: "", bytes: b""}.get(hint)
                slots.append(_Slot(f.name, "scalar", empty=empty))
        got = (slots, members)
        self._layouts[key] = got
        return got

    def _to_model(self, raw: dict[str, Any], cls: type, plan_id: int,
                  pending: list[model.PointerValue]) -> Any:
        slots, members = self._layout(cls, plan_id)
        kwargs: dict[str, Any] = {}
        which = None
        if members:
            for name in members:
                if name in raw:
                    kwargs["which"] = which = name
                    break
        for slot in slots:
            value = raw.get(slot.name)
            if value is None:
                if slot.name == which and slot.empty is not None:
                    kwargs[slot.name] = slot.empty
                continue
            shape = slot.shape
            if shape == "scalar" or shape == "list-scalar":
                kwargs[slot.name] = value
            elif shape == "model":
                assert slot.cls is not None
                kwargs[slot.name] = self._to_model(value, slot.cls, slot.plan_id, pending)
            elif shape == "list-model":
                cls_ = slot.cls
                assert cls_ is not None
                kwargs[slot.name] = [
                    self._to_model(v, cls_, slot.plan_id, pending) if v is not None
                    else cls_() for v in value]
            else:
                pv = model.PointerValue(model.Type(), value)
                pending.append(pv)
                kwargs[slot.name] = pv
        return cls(**kwargs)

    def _type_pointer_values(self, req: model.CodeGeneratorRequest) -> None:
        """Give each pointer-valued ``Value`` its type from context and decode its content."""
        nodes = req.nodes_by_id()
        # Raw form: a null pointer inside a default value stays None (not that field's own
        # default), so the value re-encodes to the same words.
        content = SchemaCodec(nodes, pointer_defaults=False)

        def fill(value: model.Value, type_: model.Type) -> None:
            if value.which not in ("list", "struct", "anyPointer"):
                return
            pv = getattr(value, value.which)
            if pv is None:
                return
            pv.type = type_
            reader = pv.value
            if isinstance(reader, AnyPointerReader) and type_.which != "anyPointer":
                pv.value = content.decode_pointer(type_, reader)

        def annotations(anns: list[model.Annotation]) -> None:
            for ann in anns:
                node = nodes.get(ann.id)
                if node is not None and node.annotation is not None:
                    fill(ann.value, node.annotation.type)

        for node in req.nodes:
            annotations(node.annotations)
            if node.struct is not None:
                for f in node.struct.fields:
                    annotations(f.annotations)
                    if f.slot is not None:
                        fill(f.slot.defaultValue, f.slot.type)
            if node.enum is not None:
                for e in node.enum.enumerants:
                    annotations(e.annotations)
            if node.interface is not None:
                for m in node.interface.methods:
                    annotations(m.annotations)
            if node.const is not None:
                fill(node.const.value, node.const.type)

    # ---------------------------------------------------------------------------- encoding

    def encode(self, request: model.CodeGeneratorRequest) -> bytes:
        """The request as a stream-framed, unpacked message."""
        content = SchemaCodec(request.nodes_by_id(), pointer_defaults=False)
        raw = self._from_model(request, CODE_GENERATOR_REQUEST_ID, content)
        return self.codec.encode(CODE_GENERATOR_REQUEST_ID, raw)

    def _from_model(self, obj: Any, plan_id: int, content: SchemaCodec) -> dict[str, Any]:
        slots, members = self._layout(type(obj), plan_id)
        out: dict[str, Any] = {}
        which = getattr(obj, "which", None)
        if members and which is not None:
            out[which] = None  # a Void member; overwritten below when it has a value
        for slot in slots:
            name = slot.name
            if name in members and name != which:
                continue
            value = getattr(obj, name)
            if value is None:
                continue
            shape = slot.shape
            if shape == "model":
                out[name] = self._from_model(value, slot.plan_id, content)
            elif shape == "list-model":
                out[name] = [self._from_model(v, slot.plan_id, content) for v in value]
            elif shape == "pointer-value":
                out[name] = _pointer_value_reader(value, content)
            else:
                out[name] = value
        return out


def _pointer_value_reader(pv: model.PointerValue, content: SchemaCodec) -> Any:
    """A typed pointer value as a reader the schema.capnp encoder can copy verbatim."""
    if isinstance(pv.value, AnyPointerReader) or pv.value is None:
        return pv.value
    builder = MessageBuilder()
    content.encode_pointer(pv.type, builder.buf, 0, pv.value)
    msg = Message(read_flat(bytes(builder.buf)))
    return AnyPointerReader(msg, 0, 0, DEFAULT_NESTING_LIMIT)


def _strip_optional(hint: Any) -> Any:
    args = typing.get_args(hint)
    if args and type(None) in args:
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return inner[0]
    return hint


def _struct_id(t: model.Type | None) -> int:
    if t is None or t.which != "struct" or t.struct is None:
        raise DecodeError("schema.capnp field expected to hold a struct")
    return t.struct.typeId
