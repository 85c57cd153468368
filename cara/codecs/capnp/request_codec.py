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
import struct
import typing
from collections.abc import Callable, Iterable
from typing import Any

from cara.errors import DecodeError
from cara.schema import model

from .arena import Arena, ArenaWriter, Ref
from .builder import MessageBuilder
from .framing import read_flat
from .reader import (
    DEFAULT_NESTING_LIMIT,
    AnyPointerReader,
    Message,
    read_message,
)
from .schema_codec import PlanKey, SchemaCodec, StructPlan

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
    plan_id: PlanKey = 0
    #: what a null pointer means for an active union member ("" for Text, b"" for Data)
    empty: Any = None


class _PlanCodec(SchemaCodec):
    """A :class:`SchemaCodec` used only for its plans (offsets, sizes, defaults).

    :class:`~.arena.ArenaWriter` reads nothing else, and generating each plan's encoder and
    decoder (``exec``) is most of what a plan costs: for a one-shot ``cara compile -o-`` that
    is a large part of the run. Never call its encode/decode methods."""

    def _generate(self, plan: StructPlan) -> None:
        pass


class RequestCodec:
    """Maps ``CodeGeneratorRequest`` models to and from bytes with a given schema.capnp."""

    def __init__(self, schema_nodes: Iterable[model.Node]) -> None:
        self._nodes = list(schema_nodes)
        #: schema.capnp's plans without generated functions: all the capnp layout needs
        self._plans = _PlanCodec(self._nodes)
        self._plans.plan(CODE_GENERATOR_REQUEST_ID)  # a schema lacking the root fails here
        self._codec: SchemaCodec | None = None
        self._layouts: dict[tuple[type, PlanKey], tuple[list[_Slot], set[str]]] = {}

    @property
    def codec(self) -> SchemaCodec:
        """The generated codec of schema.capnp (built on first use: decoding and the compact
        layout need it, the capnp layout does not)."""
        if self._codec is None:
            self._codec = SchemaCodec(self._nodes)
        return self._codec

    @property
    def root(self) -> StructPlan:
        """The compiled plan of ``CodeGeneratorRequest``."""
        return self.codec.plan(CODE_GENERATOR_REQUEST_ID)

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

    def _layout(self, cls: type, plan_id: PlanKey) -> tuple[list[_Slot], set[str]]:
        key = (cls, plan_id)
        got = self._layouts.get(key)
        if got is not None:
            return got
        plan = self._plans.plan(plan_id)
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
            hint = _strip_optional(_hint(f.type))
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

    def _to_model(self, raw: dict[str, Any], cls: type, plan_id: PlanKey,
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

    def encode(self, request: model.CodeGeneratorRequest, *, layout: str = "capnp") -> bytes:
        """The request as a stream-framed, unpacked message.

        ``layout="capnp"`` (default) lays it out as ``capnp compile -o-`` does (libcapnp's
        segments and far pointers, objects in the compiler's order), so a request decoded from
        capnp re-encodes to the same bytes when schema.capnp's nodes are capnp 0.9.2's.
        ``layout="compact"`` writes one segment with the fast generated encoder.
        """
        if layout not in ("capnp", "compact"):
            raise ValueError(f"layout must be 'capnp' or 'compact', not {layout!r}")
        compact = layout == "compact"
        # The capnp layout writes pointer values straight into its arena, needing only the
        # plans of their types; the compact one encodes them to readers first.
        content = (SchemaCodec if compact else _PlanCodec)(request.nodes_by_id(),
                                                          pointer_defaults=False)
        kinds: dict[int, str] = {n.id: n.which for n in request.nodes}
        raw = self._from_model(request, CODE_GENERATOR_REQUEST_ID, content, kinds, compact)
        if compact:
            return self.codec.encode(CODE_GENERATOR_REQUEST_ID, raw)
        return self._write_like_capnp(raw, content)

    def _from_model(self, obj: Any, plan_id: PlanKey, content: SchemaCodec,
                    kinds: dict[int, str], readers: bool) -> dict[str, Any]:
        """``obj`` as plain values, with null pointers where the compiler leaves them null
        (the model cannot tell an empty list or string from an absent one). Pointer values
        become readers when ``readers`` (for the generated encoder); otherwise they stay
        :class:`~cara.schema.model.PointerValue` objects, which the arena writer lays out
        itself, in the same order and with the same words as a copy of the reader."""
        cls = type(obj)
        slots, members = self._layout(cls, plan_id)
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
            if not value and isinstance(value, (str, bytes, list)) and \
                    not _written_when_empty(obj, name, kinds):
                continue
            shape = slot.shape
            if shape == "model":
                if slot.cls is model.Brand and not value.scopes and \
                        not (cls is model.Annotation and name == "brand"):
                    continue  # only annotations carry an empty brand
                out[name] = self._from_model(value, slot.plan_id, content, kinds, readers)
            elif shape == "list-model":
                out[name] = [self._from_model(v, slot.plan_id, content, kinds, readers)
                             for v in value]
            elif shape == "pointer-value":
                inner = value.value
                if inner is None or isinstance(inner, AnyPointerReader):
                    out[name] = inner
                else:
                    out[name] = _pointer_value_reader(value, content) if readers else value
            else:
                out[name] = value
        if cls is model.FieldSlot and not obj.hadExplicitDefault:
            default = out.get("defaultValue")
            if default is not None:  # an implicit Text/Data default is a null pointer
                for member in ("text", "data"):
                    if default.get(member) in ("", b""):
                        default[member] = None
        return out

    def _write_like_capnp(self, raw: dict[str, Any], content: SchemaCodec) -> bytes:
        """Build the request in the order ``capnp compile`` does (compiler/capnp.c++): root,
        capnpVersion, the nodes list with each node copied in, the sourceInfo list built as an
        orphan and adopted, then requestedFiles, each with its import table adopted."""
        arena = Arena()
        writer = ArenaWriter(self._plans, arena, content)
        plan = self._plans.plan(CODE_GENERATOR_REQUEST_ID)
        fields = {f.name: f for f in plan.fields}
        dw, pc = plan.data_words, plan.pointer_count
        ptr, root = arena.place((0, 0), dw + pc)
        arena.point(ptr, root, 0, dw | pc << 16)
        ppos = root[1] + dw * 8

        def slot(name: str) -> tuple[Ref, model.Type]:
            fp = fields[name]
            assert fp.type is not None
            return (0, ppos + 8 * fp.pointer), fp.type

        ref, type_ = slot("capnpVersion")
        writer.write_pointer(ref, type_, raw.get("capnpVersion") or {})
        ref, type_ = slot("nodes")
        writer.write_pointer(ref, type_, raw.get("nodes") or [])
        if "sourceInfo" in fields:
            ref, type_ = slot("sourceInfo")
            self._adopt_struct_list(writer, ref, type_, raw.get("sourceInfo") or [])
        ref, type_ = slot("requestedFiles")
        files = raw.get("requestedFiles") or []
        assert type_.list is not None and type_.list.elementType.struct is not None
        file_plan = self._plans.plan(type_.list.elementType.struct.typeId)
        imports = next(f for f in file_plan.fields if f.name == "imports")
        fdw, fpc = file_plan.data_words, file_plan.pointer_count
        ptr, obj = arena.place(ref, 1 + len(files) * (fdw + fpc))
        arena.point(ptr, obj, 1, len(files) * (fdw + fpc) << 3 | 7)
        struct.pack_into("<iI", arena.segments[obj[0]], obj[1], len(files) << 2,
                         fdw | fpc << 16)
        base = obj[1] + 8
        for entry in files:
            rest = {k: v for k, v in entry.items() if k != "imports"}
            writer.fill_struct(obj[0], base, base + fdw * 8, file_plan, rest)
            assert imports.type is not None
            self._adopt_struct_list(writer, (obj[0], base + fdw * 8 + 8 * imports.pointer),
                                    imports.type, entry.get("imports") or [])
            base += (fdw + fpc) * 8
        return arena.to_bytes()

    def _adopt_struct_list(self, writer: ArenaWriter, ref: Ref, type_: model.Type,
                           items: list[Any]) -> None:
        """A struct list built as an orphan (in the arena), then attached at ``ref``."""
        assert type_.list is not None and type_.list.elementType.struct is not None
        plan = self._plans.plan(type_.list.elementType.struct.typeId)
        dw, pc = plan.data_words, plan.pointer_count
        arena = writer.arena
        words = len(items) * (dw + pc)
        seg, pos = arena.orphan(1 + words)
        struct.pack_into("<iI", arena.segments[seg], pos, len(items) << 2, dw | pc << 16)
        base = pos + 8
        for item in items:
            writer.fill_struct(seg, base, base + dw * 8, plan, item)
            base += (dw + pc) * 8
        arena.adopt(ref, (seg, pos), 1, words << 3 | 7)


#: (model class, field) pointers the compiler writes even when empty; every other empty list
#: or string is left null (measured on capnp 0.9.2's requests for the corpus schemas).
_ALWAYS_WRITTEN = {
    (model.CodeGeneratorRequest, "nodes"), (model.CodeGeneratorRequest, "requestedFiles"),
    (model.CodeGeneratorRequest, "sourceInfo"), (model.RequestedFile, "imports"),
    (model.NodeInterface, "methods"), (model.NodeInterface, "superclasses"),
    (model.Method, "implicitParameters"), (model.NodeEnum, "enumerants"),
    (model.BrandScope, "bind"), (model.Value, "text"), (model.Value, "data"),
}


def _written_when_empty(obj: Any, name: str, kinds: dict[int, str]) -> bool:
    cls = type(obj)
    if (cls, name) in _ALWAYS_WRITTEN:
        return True
    if cls is model.Node and name == "nestedNodes":
        # every node but groups and method parameter structs gets a (maybe empty) list
        return not (obj.which == "struct" and obj.struct is not None
                    and (obj.struct.isGroup or obj.scopeId == 0))
    if cls is model.SourceInfo and name == "members":
        return kinds.get(obj.id) == "interface"
    return False


def _pointer_value_reader(pv: model.PointerValue, content: SchemaCodec) -> Any:
    """A typed pointer value as a reader the schema.capnp encoder can copy verbatim."""
    if isinstance(pv.value, AnyPointerReader) or pv.value is None:
        return pv.value
    builder = MessageBuilder()
    content.encode_pointer(pv.type, builder.buf, 0, pv.value)
    msg = Message(read_flat(bytes(builder.buf)))
    return AnyPointerReader(msg, 0, 0, DEFAULT_NESTING_LIMIT)


#: Annotation string -> the type it names in cara.schema.model (the model's annotations are
#: strings: ``from __future__ import annotations``).
_HINTS: dict[str, Any] = {}


def _hint(annotation: Any) -> Any:
    """A model field's annotation as a type, evaluated in the model's namespace only (not the
    class's: on Python 3.10 ``Value.bool = False`` would shadow the builtin). Cheaper than
    ``typing.get_type_hints`` of the whole class, which a one-shot encode would pay for every
    model class."""
    if not isinstance(annotation, str):
        return annotation
    hint = _HINTS.get(annotation)
    if hint is None:
        hint = _HINTS[annotation] = eval(annotation, vars(model))
    return hint


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
