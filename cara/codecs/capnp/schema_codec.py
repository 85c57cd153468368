"""Schema-driven Cap'n Proto binary: Python values <-> bytes for any struct of a compiled schema.

The Python side is plain values: a struct is a ``dict`` keyed by field name (a group or named
union nests as a ``dict``; of an unnamed union only the set member's key is present), a list is
a ``list``, an enum its ``int``, Text ``str``, Data ``bytes``, Void ``None``, an interface its
index in the message's cap table, and an ``AnyPointer`` an :class:`~.reader.AnyPointerReader`
(encode also takes a :class:`~cara.schema.model.PointerValue`, which says its type).

A null pointer decodes to the field's explicit default when the schema gives one, and to
``None`` otherwise (so "unset" survives a round trip); a missing key encodes as the default.

Speed comes from a per-struct :class:`StructPlan`: field offsets, kinds and XOR defaults are
worked out once, then turned into one specialised Python function per direction (source
generated from the plan and compiled with ``exec``). All non-union scalars of a struct are read
or written with a single precompiled ``struct.Struct`` call; a struct smaller than the schema
expects (an older writer) takes a checked path that substitutes defaults. The plan is the
reusable part: the runtime layer can drive the same functions with its own containers
(``keys="ordinal"`` keys struct dicts by ``@N`` instead of by name, ``keys="index"`` by the
field's index in its node, as cara's runtime structs are keyed; ``sparse=True`` leaves out what
the wire cannot tell from unset, and ``instances=True`` builds the caller's own struct, list and
enum objects while decoding; see ``SchemaCodec.__init__``).

Generic structs get one plan per brand: a field whose type is a bound parameter is encoded and
decoded as the bound type (``plan_for_type`` with a branded ``Type``); an unbound one stays an
AnyPointer. Lazy reading (attribute access) is in :mod:`.views`; errors in values name the field
path (``TestAllTypes.structList[1].textField``), found by a slow walk run only on failure.
"""

from __future__ import annotations

import copy
import functools
import struct
from collections.abc import Callable, Mapping
from typing import Any

from cara.errors import DecodeError, EncodeError, ValueTypeError
from cara.schema import model

from . import unknown
from .bits import pack_bits, unpack_bits
from .builder import MessageBuilder, copy_pointer
from .plans import FieldPlan, PlanKey, StructPlan
from .reader import (
    DEFAULT_NESTING_LIMIT,
    DEFAULT_TRAVERSAL_LIMIT,
    EXT_CAPNP_MESSAGE,
    AnyPointerReader,
    Message,
    charge_elements,
    data_at,
    list_at,
    pointer_from_ext,
    read_message,
    resolve,
    struct_at,
    text_at,
)
from .unknown import SEEN, record_of, regions
from .views import StructView, ViewLayout, view_list, view_struct

__all__ = ["FieldPlan", "PlanKey", "SchemaCodec", "StructPlan"]


# type name -> (struct format char, byte size, list element size code)
_SCALAR = {
    "int8": ("b", 1, 2), "uint8": ("B", 1, 2), "int16": ("h", 2, 3), "uint16": ("H", 2, 3),
    "int32": ("i", 4, 4), "uint32": ("I", 4, 4), "int64": ("q", 8, 5), "uint64": ("Q", 8, 5),
    "float32": ("f", 4, 4), "float64": ("d", 8, 5), "enum": ("H", 2, 3),
}
_FLOAT_BITS = {"float32": ("f", "I"), "float64": ("d", "Q")}
_POINTER_KINDS = {"text", "data", "list", "struct", "interface", "anyPointer"}
_PTR = struct.Struct("<iI")
_ENCODE_FAILURES = (struct.error, TypeError, AttributeError, OverflowError, ValueError,
                    UnicodeEncodeError)
_INT_RANGES = {
    "int8": (-(1 << 7), 1 << 7), "int16": (-(1 << 15), 1 << 15),
    "int32": (-(1 << 31), 1 << 31), "int64": (-(1 << 63), 1 << 63),
    "uint8": (0, 1 << 8), "uint16": (0, 1 << 16), "uint32": (0, 1 << 32),
    "uint64": (0, 1 << 64), "enum": (0, 1 << 16),
}


Bindings = dict[tuple[int, int], "model.Type | None"]


def _bindings(brand: model.Brand) -> Bindings:
    """``(scopeId, parameterIndex) -> bound type`` (None: unbound, i.e. AnyPointer)."""
    env: Bindings = {}
    for scope in brand.scopes:
        if scope.which == "bind" and scope.bind is not None:
            for i, binding in enumerate(scope.bind):
                env[scope.scopeId, i] = binding.type if binding.which == "type" else None
    return env


def _substitute(t: model.Type, env: Bindings) -> model.Type:
    """``t`` with the generic parameters that ``env`` binds replaced by their types."""
    w = t.which
    if w == "anyPointer" and t.anyPointer is not None and t.anyPointer.which == "parameter":
        p = t.anyPointer.parameter
        assert p is not None
        if (p.scopeId, p.parameterIndex) in env:
            bound = env[p.scopeId, p.parameterIndex]
            if bound is not None:
                return bound
            return model.Type(which="anyPointer", anyPointer=model.AnyPointerType(
                which="unconstrained", unconstrained=model.AnyPointerUnconstrained()))
        return t
    if w == "list" and t.list is not None:
        return model.Type(which="list",
                          list=model.TypeList(_substitute(t.list.elementType, env)))
    branded = getattr(t, w, None) if w in ("struct", "interface", "enum") else None
    if isinstance(branded, model.TypeBranded) and branded.brand.scopes:
        scopes = []
        for scope in branded.brand.scopes:
            if scope.which == "bind" and scope.bind is not None:
                scopes.append(model.BrandScope(scope.scopeId, "bind", [
                    model.BrandBinding(b.which, _substitute(b.type, env)
                                       if b.type is not None else None)
                    for b in scope.bind]))
                continue
            inherited = sorted(i for (sid, i) in env if sid == scope.scopeId)
            if not inherited:
                scopes.append(scope)
                continue
            bind = []
            for i in range(inherited[-1] + 1):
                bound = env.get((scope.scopeId, i))
                bind.append(model.BrandBinding("type" if bound is not None else "unbound",
                                               bound))
            scopes.append(model.BrandScope(scope.scopeId, "bind", bind))
        out = model.Type(which=t.which)
        setattr(out, w, model.TypeBranded(branded.typeId, model.Brand(scopes)))
        return out
    return t


def _value_of(value: model.Value) -> Any:
    """The Python value a schema default stands for."""
    which = value.which
    if which in ("list", "struct", "anyPointer"):
        pv = getattr(value, which)
        return None if pv is None else pv.value
    if which in ("void", "interface"):  # `= null` is the only interface default
        return None
    return getattr(value, which)


def _float_bits(kind: str, value: float) -> int:
    f, i = _FLOAT_BITS[kind]
    return struct.unpack("<" + i, struct.pack("<" + f, value))[0]


class SchemaCodec:
    """Encoder and decoder for the structs of one set of schema nodes.

    ``nodes`` maps node id to :class:`~cara.schema.model.Node` (or is a sequence of nodes, or a
    ``CodeGeneratorRequest``). Plans are compiled on first use and cached.
    """

    def __init__(self, nodes: Mapping[int, model.Node] | list[model.Node] |
                 model.CodeGeneratorRequest, *, pointer_defaults: bool = True,
                 keys: str = "name", sparse: bool = False, instances: bool = False) -> None:
        """``pointer_defaults=False`` decodes a null pointer as ``None`` even where the schema
        gives a default: the raw form, for values that will be written back verbatim (schema
        default values inside a CodeGeneratorRequest).

        ``keys`` chooses the dict keys of struct values: ``"name"`` (field names),
        ``"ordinal"`` (the ``@N`` numbers; groups and named unions, having none, keep their
        names) or ``"index"`` (the field's index in its node's ``fields`` list, groups
        included: the numbers cara's runtime structs are keyed by).

        ``sparse=True`` (with ``pointer_defaults=False``) decodes a struct to only what differs
        from its zero bits: no null pointers, no scalars equal to their default (bit for bit:
        -0.0 is kept where the default is 0.0), no groups left empty. Union members stay (which
        one is set matters), except the discriminant-0 member holding its default, as an empty
        union already reads as that member. This is the form cara's runtime structs hold, so a
        decoded message needs no second pass to drop what the wire could not tell from unset.

        ``instances=True`` (with ``sparse=True``) makes the decoder build the caller's objects
        directly: a struct (or group) of plan tag ``t`` becomes ``dict.__new__(C_t)`` filled
        with its fields, an enum field ``k`` holds ``EV_t_k.get(n)`` (else ``EC_t_k(n)``), and a
        list field ``k`` holds ``LM_t_k(list)``; the caller puts those names in ``self.ns``
        for every plan it decodes before decoding (cara's runtime does, for its classes).
        """
        if sparse and pointer_defaults:
            raise ValueError("sparse=True needs pointer_defaults=False")
        if instances and not sparse:
            raise ValueError("instances=True needs sparse=True")
        self.sparse = sparse
        self.instances = instances
        if keys not in ("name", "ordinal", "index"):
            raise ValueError(f"keys must be 'name', 'ordinal' or 'index', not {keys!r}")
        self.keys = keys
        self.pointer_defaults = pointer_defaults
        if isinstance(nodes, model.CodeGeneratorRequest):
            nodes = nodes.nodes
        if not isinstance(nodes, Mapping):
            nodes = {n.id: n for n in nodes}
        self.nodes: Mapping[int, model.Node] = nodes
        self.plans: dict[PlanKey, StructPlan] = {}
        self._ns: dict[str, Any] = self._namespace()
        #: the generated code's globals (see ``instances``). A caller may replace
        #: ``cap_encode(buf, ptr_pos, value)``, ``cap_decode(msg, seg, pos)``,
        #: ``any_encode(buf, ptr_pos, value)`` and ``any_decode(msg, seg, pos, nest)`` before
        #: the first encode or decode, to give capabilities and AnyPointer values its own
        #: form (the RPC layer turns capability objects into cap-table indexes and back).
        #: ``kept_target(buf, source)``, if set, is the builder (a
        #: :class:`~.builder.MessageBuilder` writing into ``buf``) that pointers kept as
        #: unknown data are copied into from their received message ``source`` (the RPC layer
        #: describes the capabilities among them anew).
        self.ns = self._ns
        self._counter = 0
        self._list_codecs: dict[str, tuple[str, str]] = {}
        self.layouts: dict[PlanKey, ViewLayout] = {}
        self._brands: dict[PlanKey, model.Brand] = {}
        self._tags: dict[PlanKey, str] = {}

    # ------------------------------------------------------------------------------ public API

    def plan(self, struct_id: PlanKey) -> StructPlan:
        """The compiled plan of struct node ``struct_id`` (compiling it and every struct it
        reaches on first use). A ``(node_id, brand)`` key, as :meth:`plan_for_type` makes,
        selects a generic struct with its parameters bound."""
        plan = self.plans.get(struct_id)
        if plan is None:
            plan = self._compile(struct_id)
        return plan

    def plan_for_type(self, t: model.Type) -> StructPlan:
        """The plan of struct type ``t``, with the generic parameters its brand binds."""
        return self.plan(self._key_of(t))

    def _key_of(self, t: model.Type) -> PlanKey:
        assert t.struct is not None
        brand = t.struct.brand
        if not brand.scopes:
            return t.struct.typeId
        key = (t.struct.typeId, repr(brand))
        self._brands.setdefault(key, brand)
        return key

    def _tag(self, key: PlanKey) -> str:
        tag = self._tags.get(key)
        if tag is None:
            tag = f"{key:x}" if isinstance(key, int) else f"{key[0]:x}_{len(self._tags)}"
            self._tags[key] = tag
        return tag

    def encode(self, struct_id: PlanKey, value: Mapping[str, Any], *, packed: bool = False,
               flat: bool = False, canonical: bool = False) -> bytes:
        """``value`` as a message whose root is a ``struct_id`` struct (stream framing unless
        ``flat``; packed if asked). ``canonical`` gives the canonical form instead (flat,
        unpacked, as ``capnp convert binary:canonical`` writes it)."""
        builder = self.build(struct_id, value)
        if canonical:
            from .canonical import canonicalize
            from .framing import read_flat

            return canonicalize(Message(read_flat(builder.segment())))
        if flat:
            out = builder.segment()
            if packed:
                from .packing import pack

                return pack(out)
            return out
        return builder.to_packed() if packed else builder.to_bytes()

    def build(self, struct_id: PlanKey, value: Mapping[str, Any]) -> MessageBuilder:
        plan = self.plan(struct_id)
        builder = MessageBuilder()
        buf = builder.buf
        if SEEN[0]:
            u = record_of(value)
            if u is not None and u.loc is not None:
                try:
                    unknown.encode_struct(self, plan, buf, 0, value, u)
                except _ENCODE_FAILURES as exc:
                    raise self._diagnose(plan, value, exc) from None
                return builder
        dw, pc = plan.data_words, plan.pointer_count
        if dw + pc == 0:
            _PTR.pack_into(buf, 0, -4, 0)
        else:
            buf += bytes((dw + pc) * 8)
            _PTR.pack_into(buf, 0, 0, dw | pc << 16)
        assert plan.encode is not None
        try:
            plan.encode(buf, 8, 8 + dw * 8, value)
        except _ENCODE_FAILURES as exc:
            raise self._diagnose(plan, value, exc) from None
        return builder

    def decode(self, struct_id: int, data: bytes | bytearray | memoryview, *,
               packed: bool = False, flat: bool = False,
               traversal_limit_in_words: int = DEFAULT_TRAVERSAL_LIMIT,
               nesting_limit: int = DEFAULT_NESTING_LIMIT) -> dict[str, Any]:
        """Decode a whole message whose root is a ``struct_id`` struct into plain values."""
        msg = read_message(data, packed=packed, flat=flat,
                           traversal_limit_in_words=traversal_limit_in_words,
                           nesting_limit=nesting_limit)
        return self.decode_message(struct_id, msg)

    def decoder(self, struct_id: PlanKey) -> Callable[[bytes | bytearray | memoryview], Any]:
        """``decode(struct_id, data)`` (default limits, unpacked, framed) as one function with
        the plan looked up once: for callers that decode many messages of one type. A
        single-segment message, the usual case, is framed without the general reader."""
        plan = self.plan(struct_id)
        decode = plan.decode
        assert decode is not None
        one = struct.Struct("<I").unpack_from
        limit = DEFAULT_NESTING_LIMIT
        traversal = DEFAULT_TRAVERSAL_LIMIT

        def decode_bytes(data: bytes | bytearray | memoryview) -> Any:
            n = len(data)
            if type(data) is bytes and n >= 16 and data[:4] == b"\0\0\0\0" and \
                    one(data, 4)[0] * 8 + 8 == n:
                msg = Message((data, [(8, n)]), traversal_limit_in_words=traversal,
                              nesting_limit=limit)
            else:
                msg = read_message(data)
            try:
                loc = struct_at(msg, 0, msg.bounds[0][0], limit)
                if loc is None:
                    return decode(msg, 0, 0, 0, 0, 0, limit)
                return decode(msg, *loc)
            except RecursionError:
                raise DecodeError("message nests deeper than Python's recursion limit allows "
                                  "(lower the nesting limit)", msg.bounds[0][0]) from None
        return decode_bytes

    def decode_message(self, struct_id: int, msg: Message) -> dict[str, Any]:
        plan = self.plan(struct_id)
        assert plan.decode is not None
        loc = struct_at(msg, 0, msg.bounds[0][0], msg.nesting_limit)
        try:
            if loc is None:
                return plan.decode(msg, 0, 0, 0, 0, 0, msg.nesting_limit)
            return plan.decode(msg, *loc)
        except RecursionError:
            raise DecodeError("message nests deeper than Python's recursion limit allows "
                              "(lower the nesting limit)", msg.bounds[0][0]) from None

    def view(self, struct_id: int, data: bytes | bytearray | memoryview, *,
             packed: bool = False, flat: bool = False,
             traversal_limit_in_words: int = DEFAULT_TRAVERSAL_LIMIT,
             nesting_limit: int = DEFAULT_NESTING_LIMIT) -> StructView:
        """A lazy view of the message's root struct: fields are decoded when accessed."""
        msg = read_message(data, packed=packed, flat=flat,
                           traversal_limit_in_words=traversal_limit_in_words,
                           nesting_limit=nesting_limit)
        return self.view_message(struct_id, msg)

    def view_message(self, struct_id: int, msg: Message) -> StructView:
        layout = self.layout(struct_id)
        loc = struct_at(msg, 0, msg.bounds[0][0], msg.nesting_limit)
        if loc is None:
            return layout.cls(layout, msg, (0, 0, 0, 0, 0, msg.nesting_limit))
        return layout.cls(layout, msg, loc)

    def reaches(self, struct_id: PlanKey, kinds: frozenset[str]) -> bool:
        """Whether a ``struct_id`` value can hold, at any depth, a field of one of ``kinds``
        (type names such as ``"anyPointer"``; groups are looked into)."""
        seen: set[PlanKey] = set()
        pending = [struct_id]
        while pending:
            key = pending.pop()
            if key in seen:
                continue
            seen.add(key)
            for fp in self.plan(key).fields:
                if fp.kind in kinds:
                    return True
                if fp.kind == "group":
                    pending.append(fp.group_id)
                    continue
                t = fp.type
                while t is not None and t.which == "list" and t.list is not None:
                    if t.list.elementType.which in kinds:
                        return True
                    t = t.list.elementType
                if t is not None and t.which == "struct":
                    pending.append(self._key_of(t))
        return False

    def layout(self, struct_id: PlanKey) -> ViewLayout:
        """The lazy-view getters of a struct (compiled on first use)."""
        layout = self.layouts.get(struct_id)
        if layout is None:
            layout = self._build_layout(self.plan(struct_id))
            self.layouts[struct_id] = layout
        return layout

    def _build_layout(self, plan: StructPlan) -> ViewLayout:
        """Compile the getters of ``plan`` (fields of struct kind become view constructors;
        a struct field's layout is found through a cell filled on first use, as layouts of
        recursive structs cannot all be built up front)."""
        layout = ViewLayout(plan)
        props: dict[str, property] = {}
        for fp in plan.fields:
            if fp.kind == "group":
                lc = self._const([], "LC")
                gk = self._const(fp.group_id, "GK")
                expr = (f"SVIEW(({lc}[0] if {lc} else LAYOUT_FILL({lc}, {gk})), msg, seg, "
                        f"dpos, dbytes, ppos, nptrs, nest)")
            elif fp.kind == "struct" or _is_struct_list(fp.type):
                assert fp.type is not None
                helper = "VIEW_STRUCT" if fp.kind == "struct" else "VIEW_LIST"
                factory = "None"
                if fp.default is not None:
                    factory = self._const(self._default_factory(fp), "DF")
                sid = self._const(self._key_of(_element_type(fp.type)), "SK")
                lc = self._const([], "LC")
                expr = (f"{helper}(({lc}[0] if {lc} else LAYOUT_FILL({lc}, {sid})), msg, seg, "
                        f"ppos, nptrs, {fp.pointer}, nest, {factory})")
            else:
                expr = self._field_expr(fp, True)
            name = self._name("G")
            src = (f"def {name}(msg, seg, dpos, dbytes, ppos, nptrs, nest):\n"
                   f"    buf = msg.buf\n"
                   f"    return {expr}\n")
            prop = self._name("V")
            psrc = (f"def {prop}(self):\n"
                    f"    msg = self._msg\n"
                    f"    seg, dpos, dbytes, ppos, nptrs, nest = self._loc\n"
                    + ("    buf = msg.buf\n" if "buf" in expr else "")
                    + f"    return {expr}\n")
            code = compile(src + psrc, f"<cara capnp view {plan.name}.{fp.name}>", "exec")
            exec(code, self._ns)
            layout.getters[fp.name] = self._ns[name]
            props[fp.name] = property(self._ns[prop])
        reserved = set(dir(StructView))
        layout.cls = type(f"{plan.name}View", (StructView,),
                          {"__slots__": (), **{k: v for k, v in props.items()
                                               if k not in reserved}})
        return layout

    def _fill_layout_cell(self, cell: list[ViewLayout], sid: PlanKey) -> ViewLayout:
        if not cell:
            cell.append(self.layout(sid))
        return cell[0]

    def decode_struct(self, struct_id: int, msg: Message, seg: int, pos: int,
                      nesting: int) -> dict[str, Any] | None:
        """Decode the struct the pointer at byte ``pos`` points to (``None`` if null)."""
        plan = self.plan(struct_id)
        assert plan.decode is not None
        loc = struct_at(msg, seg, pos, nesting)
        return None if loc is None else plan.decode(msg, *loc)

    def decode_pointer(self, type_: model.Type, ptr: AnyPointerReader) -> Any:
        """Interpret an uninterpreted pointer as a value of ``type_`` (a pointer type)."""
        if ptr.pos < 0:
            return None
        dec_name = self._pointer_decoder(type_)
        return self._ns[dec_name](ptr.msg, ptr.seg, ptr.pos, ptr.nesting)

    def encode_pointer(self, type_: model.Type, buf: bytearray, ptr_pos: int,
                       value: Any) -> None:
        """Write ``value`` of pointer type ``type_`` at the pointer word ``ptr_pos``."""
        if value is None:
            return
        enc_name = self._pointer_encoder(type_)
        try:
            self._ns[enc_name](buf, ptr_pos, value)
        except _ENCODE_FAILURES as exc:
            path, reason = _find_bad_value(self, type_, value, "")
            raise ValueTypeError(path, reason or str(exc)) from None

    def _diagnose(self, plan: StructPlan, value: Any, exc: Exception) -> ValueTypeError:
        """Name the field at fault after the fast encoder failed (the fast path carries no
        per-field bookkeeping; this slow walk runs only on failure)."""
        if isinstance(exc, ValueTypeError) and exc.path:
            return exc
        path, reason = _find_bad_struct(self, plan, value, plan.name)
        return ValueTypeError(path, reason or str(exc))

    # ------------------------------------------------------------------------------ namespace

    def _namespace(self) -> dict[str, Any]:
        ns: dict[str, Any] = {
            "struct_at": struct_at, "list_at": list_at, "text_at": text_at,
            "data_at": data_at, "resolve": resolve, "AnyPointerReader": AnyPointerReader,
            "DecodeError": DecodeError, "ValueTypeError": ValueTypeError,
            "EncodeError": EncodeError, "struct_error": struct.error,
            "PP": _PTR.pack_into, "deepcopy": copy.deepcopy,
            "PADT": [bytes(8 - k) for k in range(8)],
            "PADD": [bytes(-k & 7) for k in range(8)],
            "any_decode": _decode_any, "any_encode": self._encode_any,
            "cap_decode": _decode_cap, "cap_encode": _encode_cap,
            "unpack_from": struct.unpack_from, "pack_into": struct.pack_into,
            "spack": struct.pack, "DNEW": dict.__new__, "DU": dict.update,
            "DGET": dict.get.__get__, "DHAS": dict.__contains__.__get__,
            "SVIEW": _group_view, "VIEW_STRUCT": view_struct, "VIEW_LIST": view_list,
            "LAYOUT_FILL": self._fill_layout_cell,
            "WORD": unknown.word, "POINTER": unknown.pointer, "KEEP": unknown.keep,
            "KEEP_GROUP": unknown.keep_group, "SEEN": SEEN, "RECORD_OF": record_of,
            "KEEP_STRUCT": functools.partial(unknown.encode_struct, self),
        }
        return ns

    def _name(self, prefix: str) -> str:
        self._counter += 1
        return f"{prefix}{self._counter}"

    def _const(self, value: Any, prefix: str = "K") -> str:
        name = self._name(prefix)
        self._ns[name] = value
        return name

    # ----------------------------------------------------------------------------- planning

    def _make_plan(self, key: PlanKey) -> StructPlan:
        node_id = key if isinstance(key, int) else key[0]
        brand = self._brands.get(key)
        env = _bindings(brand) if brand is not None else {}
        try:
            node = self.nodes[node_id]
        except KeyError:
            raise EncodeError(f"no struct node @0x{node_id:016x} in the schema") from None
        st = node.struct
        if node.which != "struct" or st is None:
            raise EncodeError(f"node {node.displayName} is not a struct")
        plan = StructPlan(node_id, node.shortName or node.displayName, st.dataWordCount,
                          st.pointerCount, key=key, tag=self._tag(key))
        plan.is_group = st.isGroup
        if st.discriminantCount:
            plan.discriminant_offset = st.discriminantOffset * 2
        for index, f in enumerate(st.fields):
            ordinal = f.ordinal.explicit if f.ordinal.which == "explicit" else None
            dict_key: str | int = f.name
            if self.keys == "ordinal" and ordinal is not None:
                dict_key = ordinal
            elif self.keys == "index":
                dict_key = index
            if f.which == "group":
                assert f.group is not None
                group_key: PlanKey = f.group.typeId
                if brand is not None:  # a group shares its struct's generic parameters
                    group_key = (f.group.typeId, repr(brand))
                    self._brands.setdefault(group_key, brand)
                plan.fields.append(FieldPlan(f.name, "group", group_id=group_key,
                                             discriminant=f.discriminantValue,
                                             ordinal=ordinal, key=dict_key))
                continue
            slot = f.slot
            assert slot is not None
            ftype = _substitute(slot.type, env) if env else slot.type
            kind = ftype.which
            ap = ftype.anyPointer
            if kind == "anyPointer" and ap is not None and ap.which == "unconstrained" and \
                    ap.unconstrained is not None and ap.unconstrained.which == "capability":
                kind = "interface"  # `Capability`: a cap-table index like an interface field
            fp = FieldPlan(f.name, kind, discriminant=f.discriminantValue, type=ftype,
                           explicit_default=slot.hadExplicitDefault, ordinal=ordinal,
                           key=dict_key)
            if kind in _POINTER_KINDS:
                fp.pointer = slot.offset
                # A non-explicit pointer default is always "null": keep None so that an unset
                # pointer survives a round trip (pycapnp-style "" / [] would be re-written).
                if slot.hadExplicitDefault and self.pointer_defaults:
                    fp.default = _value_of(slot.defaultValue)
            elif kind == "bool":
                fp.offset = slot.offset
                fp.default = bool(_value_of(slot.defaultValue))
            elif kind == "void":
                pass
            else:
                fp.offset = slot.offset * _SCALAR[kind][1]
                fp.default = _value_of(slot.defaultValue) or 0
            plan.fields.append(fp)
        return plan

    def _compile(self, root_key: PlanKey) -> StructPlan:
        """Plan and generate code for ``root_key`` and every struct/group reachable from it."""
        pending = [root_key]
        new: list[StructPlan] = []
        while pending:
            key = pending.pop()
            if key in self.plans:
                continue
            plan = self._make_plan(key)
            self.plans[key] = plan
            new.append(plan)
            for fp in plan.fields:
                if fp.kind == "group":
                    pending.append(fp.group_id)
                elif fp.type is not None:
                    pending.extend(self._struct_keys(fp.type))
        for plan in new:
            self._ns[f"D_{plan.tag}"] = None
            self._ns[f"E_{plan.tag}"] = None
        for plan in new:
            self._generate(plan)
        return self.plans[root_key]

    def _struct_keys(self, t: model.Type) -> list[PlanKey]:
        if t.which == "struct" and t.struct is not None:
            return [self._key_of(t)]
        if t.which == "list" and t.list is not None:
            return self._struct_keys(t.list.elementType)
        return []

    # --------------------------------------------------------------------------- generation

    def _generate(self, plan: StructPlan) -> None:
        src = self._decoder_source(plan) + "\n" + self._encoder_source(plan)
        code = compile(src, f"<cara capnp codec {plan.name}>", "exec")
        exec(code, self._ns)
        plan.decode = self._ns[f"D_{plan.tag}"]
        plan.encode = self._ns[f"E_{plan.tag}"]

    def _scalar_expr(self, fp: FieldPlan, checked: bool) -> str:
        """Expression reading scalar field ``fp`` from ``buf``/``dpos``/``dbytes``."""
        kind = fp.kind
        if kind == "void":
            return "None"
        if kind == "bool":
            byte, bit = fp.offset >> 3, fp.offset & 7
            expr = f"(buf[dpos + {byte}] >> {bit} & 1)"
            if fp.default:
                expr = f"not {expr}"
            else:
                expr = f"{expr} == 1"
            return f"({expr} if dbytes > {byte} else {bool(fp.default)!r})" if checked else expr
        ch, size, _ = _SCALAR[kind]
        if kind in _FLOAT_BITS and fp.default:
            bits = _float_bits(kind, fp.default)
            f, i = _FLOAT_BITS[kind]
            raw = f"unpack_from('<{i}', buf, dpos + {fp.offset})[0]"
            if checked:
                raw = f"({raw} if dbytes >= {fp.offset + size} else 0)"
            return f"unpack_from('<{f}', spack('<{i}', {raw} ^ {bits}))[0]"
        raw = f"unpack_from('<{ch}', buf, dpos + {fp.offset})[0]"
        if checked:
            raw = f"({raw} if dbytes >= {fp.offset + size} else 0)"
        if fp.default:
            return f"({raw} ^ {fp.default!r})"
        return raw

    def _pointer_expr(self, fp: FieldPlan, checked: bool) -> str:
        assert fp.type is not None
        pos = f"(ppos + {fp.pointer * 8})"
        kind = fp.kind
        if kind == "text":
            expr = f"text_at(msg, seg, {pos})"
        elif kind == "data":
            expr = f"data_at(msg, seg, {pos})"
        elif kind == "interface":
            expr = f"cap_decode(msg, seg, {pos})"
        elif kind == "anyPointer":
            expr = f"any_decode(msg, seg, {pos}, nest)"
        else:
            expr = f"{self._pointer_decoder(fp.type)}(msg, seg, {pos}, nest)"
        if fp.default is not None:
            k = self._const(self._default_factory(fp), "DF")
            expr = f"(_v if (_v := {expr}) is not None else {k}())"
            if checked:
                expr = f"({expr} if nptrs > {fp.pointer} else {k}())"
        elif checked:
            expr = f"({expr} if nptrs > {fp.pointer} else None)"
        return expr

    def _default_factory(self, fp: FieldPlan) -> Callable[[], Any]:
        """A function returning a fresh copy of a pointer field's default.

        A default still held as an uninterpreted pointer (schema defaults decoded from a
        request) is decoded on first use, with this codec, so defaults that refer to other
        structs' defaults need no particular order.
        """
        default = fp.default
        type_ = fp.type
        cache: list[Any] = []
        busy: list[bool] = []

        def factory() -> Any:
            if not cache:
                if busy:
                    # A default that contains itself (through a null pointer whose default
                    # is the same value): materialising it eagerly would never end, so the
                    # inner occurrence stays null, as it is on the wire.
                    return None
                busy.append(True)
                try:
                    value = default
                    if isinstance(value, AnyPointerReader) and type_ is not None and \
                            type_.which != "anyPointer":
                        value = self.decode_pointer(type_, value)
                finally:
                    busy.clear()
                cache.append(value)
            value = cache[0]
            return copy.deepcopy(value) if isinstance(value, (list, dict)) else value
        return factory

    def _field_expr(self, fp: FieldPlan, checked: bool) -> str:
        if fp.kind == "group":
            return f"D_{self._tag(fp.group_id)}(msg, seg, dpos, dbytes, ppos, nptrs, nest)"
        if fp.kind in _POINTER_KINDS:
            return self._pointer_expr(fp, checked)
        return self._scalar_expr(fp, checked)

    def _decoder_source(self, plan: StructPlan) -> str:
        if self.sparse:
            return self._sparse_decoder_source(plan)
        name = f"D_{plan.tag}"
        plain = [f for f in plan.fields if f.discriminant == model.NO_DISCRIMINANT]
        members = [f for f in plan.fields if f.discriminant != model.NO_DISCRIMINANT]
        lines = [f"def {name}(msg, seg, dpos, dbytes, ppos, nptrs, nest):", "    buf = msg.buf"]

        def body(checked: bool, indent: str) -> list[str]:
            out: list[str] = []
            combined = [] if checked else [
                f for f in plain if f.kind in _SCALAR and not
                (f.kind in _FLOAT_BITS and f.default)]
            combined.sort(key=lambda f: f.offset)
            items: list[str] = []
            if combined:
                fmt = "<"
                at = 0
                for f in combined:
                    ch, size, _ = _SCALAR[f.kind]
                    if f.offset > at:
                        fmt += f"{f.offset - at}x"
                    fmt += ch
                    at = f.offset + size
                sname = self._const(struct.Struct(fmt).unpack_from, "S")
                names = [f"_s{i}" for i in range(len(combined))]
                out.append(f"{indent}{', '.join(names)}, = {sname}(buf, dpos)")
                for f, n in zip(combined, names, strict=False):
                    expr = f"{n} ^ {f.default!r}" if f.default else n
                    items.append(f"{f.key!r}: {expr}")
            done = {f.name for f in combined}
            for f in plain:
                if f.name not in done:
                    items.append(f"{f.key!r}: {self._field_expr(f, checked)}")
            out.append(f"{indent}d = {{{', '.join(items)}}}")
            if members:
                off = plan.discriminant_offset
                disc = f"unpack_from('<H', buf, dpos + {off})[0]"
                if checked:
                    disc = f"({disc} if dbytes >= {off + 2} else 0)"
                out.append(f"{indent}disc = {disc}")
                for i, f in enumerate(members):
                    kw = "if" if i == 0 else "elif"
                    out.append(f"{indent}{kw} disc == {f.discriminant}:")
                    out.append(f"{indent}    d[{f.key!r}] = {self._field_expr(f, checked)}")
                # a member of a newer schema: marked, so that no writer takes the union for
                # its default member (see .unknown)
                out += [f"{indent}else:", f"{indent}    d = KEEP_GROUP(d, disc)"]
            return out

        lines.append(f"    if dbytes >= {plan.data_words * 8} and nptrs >= {plan.pointer_count}:")
        lines += body(False, "        ")
        lines.append("    else:")
        lines += body(True, "        ")
        lines.append("    return d")
        return "\n".join(lines) + "\n"

    def _raw_scalar(self, fp: FieldPlan, checked: bool) -> str:
        """Expression for scalar ``fp``'s stored bits as an int (0 iff the field holds its
        default; floats are read as unsigned ints so -0.0 and NaNs are told from 0.0)."""
        if fp.kind == "bool":
            byte, bit = fp.offset >> 3, fp.offset & 7
            expr = f"(buf[dpos + {byte}] >> {bit} & 1)"
            return f"({expr} if dbytes > {byte} else 0)" if checked else expr
        ch, size, _ = _SCALAR[fp.kind]
        if fp.kind in _FLOAT_BITS:
            ch = _FLOAT_BITS[fp.kind][1]
        raw = f"unpack_from('<{ch}', buf, dpos + {fp.offset})[0]"
        return f"({raw} if dbytes >= {fp.offset + size} else 0)" if checked else raw

    def _from_raw(self, fp: FieldPlan, raw: str) -> str:
        """Expression for scalar ``fp``'s value from its stored bits ``raw`` (a name)."""
        if fp.kind == "bool":
            return repr(not fp.default)  # (only used when the bit is set)
        if fp.kind in _FLOAT_BITS:
            f, i = _FLOAT_BITS[fp.kind]
            bits = f" ^ {_float_bits(fp.kind, fp.default)}" if fp.default else ""
            return f"unpack_from('<{f}', spack('<{i}', {raw}{bits}))[0]"
        return f"({raw} ^ {fp.default!r})" if fp.default else raw

    def _empty_member(self, f: FieldPlan, tag: str) -> str | None:
        """The expression for a union member's value when its pointer is null (no default)."""
        if f.kind == "text":
            return "''"
        if f.kind == "data":
            return "b''"
        if f.kind == "list":
            return f"LM_{tag}_{f.key}([])" if self.instances else "[]"
        if f.kind == "struct" and f.type is not None:
            if not self.instances:
                return "{}"
            return f"DNEW(C_{self.plan(self._key_of(f.type)).tag})"
        return None  # a capability or AnyPointer: null is its value

    def _sparse_decoder_source(self, plan: StructPlan) -> str:
        """The ``sparse=True`` decoder (see ``__init__``): fields are stored only when their
        bits are not zero; same key order as the full decoder's dict."""
        name = f"D_{plan.tag}"
        inst = self.instances
        tag = plan.tag

        def value(f: FieldPlan, raw: str) -> str:
            expr = self._from_raw(f, raw)
            if inst and f.kind == "enum":
                return (f"(_e if (_e := EV_{tag}_{f.key}.get({expr})) is not None else "
                        f"EC_{tag}_{f.key}({expr}))")
            return expr
        plain = [f for f in plan.fields if f.discriminant == model.NO_DISCRIMINANT]
        members = [f for f in plan.fields if f.discriminant != model.NO_DISCRIMINANT]
        lines = [f"def {name}(msg, seg, dpos, dbytes, ppos, nptrs, nest):", "    buf = msg.buf"]
        # Unknown data (see .unknown): ``u`` becomes -1 when bits or pointers turn up where
        # this schema has none, or the discriminant when it names no member.
        reg = regions(self, plan)
        pad_data, pad_ptrs = (0, 0) if plan.is_group else reg.padding()
        marked = "_g._cara_unknown_ is not None" if inst else "type(_g) is not dict"
        lines.append("    u = None")

        def unknown_bits(data: int, ptrs: int, checked: bool) -> str:
            """A condition true when any of ``data``'s bits or ``ptrs``'s pointers is set."""
            parts = []
            for i in range(plan.data_words):
                mask = data >> (64 * i) & 0xFFFFFFFFFFFFFFFF
                if mask:
                    read = f"WORD(buf, dpos, dbytes, {i})" if checked else \
                        f"unpack_from('<Q', buf, dpos + {8 * i})[0]"
                    parts.append(f"{read} & {mask:#x}")
            for j in range(plan.pointer_count):
                if ptrs >> j & 1:
                    parts.append(f"POINTER(buf, ppos, nptrs, {j})" if checked else
                                 f"unpack_from('<Q', buf, ppos + {8 * j})[0]")
            return " or ".join(parts)

        def member(f: FieldPlan, checked: bool, ind: str, keep: bool) -> list[str]:
            """Store ``f`` if it is not at its zero bits (or always, if ``keep``)."""
            k = f.key
            if f.kind == "void":
                return [f"{ind}d[{k!r}] = None"] if keep else []
            if f.kind == "group":
                expr = self._field_expr(f, checked)
                if not regions(self, self.plan(f.group_id)).may_signal():
                    if keep:
                        return [f"{ind}d[{k!r}] = {expr}"]
                    return [f"{ind}_g = {expr}", f"{ind}if _g:", f"{ind}    d[{k!r}] = _g"]
                # the group tells its struct about unknown data it found by a mark (kept
                # with the group when it is an unknown discriminant: see unknown.keep_group)
                if keep:
                    return [f"{ind}_g = {expr}", f"{ind}d[{k!r}] = _g",
                            f"{ind}if {marked}:", f"{ind}    u = -1"]
                return [f"{ind}_g = {expr}", f"{ind}if {marked}:", f"{ind}    u = -1",
                        f"{ind}    if _g or _g._cara_unknown_.disc is not None:",
                        f"{ind}        d[{k!r}] = _g",
                        f"{ind}elif _g:", f"{ind}    d[{k!r}] = _g"]
            if f.kind in _POINTER_KINDS:
                stored = f"LM_{tag}_{k}(_v)" if inst and f.kind == "list" else "_v"
                out = [f"{ind}_v = {self._pointer_expr(f, checked)}",
                       f"{ind}if _v is not None:", f"{ind}    d[{k!r}] = {stored}"]
                empty = self._empty_member(f, tag) if keep else None
                if empty is not None:
                    # a union member chosen with a null pointer (libcapnp writes these):
                    # stored as its empty value, so which() still names it
                    out += [f"{ind}else:", f"{ind}    d[{k!r}] = {empty}"]
                return out
            raw = self._raw_scalar(f, checked)
            if keep:
                if f.kind == "bool":
                    return [f"{ind}d[{k!r}] = {self._scalar_expr(f, checked)}"]
                return [f"{ind}_r = {raw}", f"{ind}d[{k!r}] = {value(f, '_r')}"]
            return [f"{ind}_r = {raw}", f"{ind}if _r:",
                    f"{ind}    d[{k!r}] = {value(f, '_r')}"]

        def body(checked: bool, indent: str) -> list[str]:
            out = [f"{indent}d = {{}}"]
            # (the full decoder's split, so that keys come in the same order)
            combined = [] if checked else [
                f for f in plain if f.kind in _SCALAR and not
                (f.kind in _FLOAT_BITS and f.default)]
            combined.sort(key=lambda f: f.offset)
            pad_left = pad_data
            if combined:
                # Bytes that are all padding are read with the scalars (when the section is
                # as large as the schema's), so checking them for unknown data costs no call
                # of its own.
                fmt = "<"
                at = 0
                names = [f"_s{i}" for i in range(len(combined))]
                targets: list[str] = []
                pads: list[str] = []

                def gap(start: int, end: int) -> str:
                    nonlocal pad_left
                    chars = ""
                    i = start
                    while i < end:
                        n = 0
                        while i + n < end and pad_data >> (8 * (i + n)) & 0xFF == 0xFF:
                            n += 1
                        if not n:
                            chars += "x"
                            i += 1
                            continue
                        for size, ch in ((8, "Q"), (4, "I"), (2, "H"), (1, "B")):
                            while n >= size:
                                chars += ch
                                pads.append(f"_z{len(pads)}")
                                targets.append(pads[-1])
                                pad_left &= ~(((1 << (8 * size)) - 1) << (8 * i))
                                i += size
                                n -= size
                    return chars
                for f, n in zip(combined, names, strict=True):
                    ch, size, _ = _SCALAR[f.kind]
                    if f.kind in _FLOAT_BITS:
                        ch = _FLOAT_BITS[f.kind][1]
                    if f.offset > at:
                        fmt += gap(at, f.offset)
                    fmt += ch
                    targets.append(n)
                    at = f.offset + size
                fmt += gap(at, plan.data_words * 8)
                sname = self._const(struct.Struct(fmt.rstrip("x")).unpack_from, "S")
                out.append(f"{indent}{', '.join(targets)}, = {sname}(buf, dpos)")
                for f, n in zip(combined, names, strict=False):
                    out.append(f"{indent}if {n}:")
                    out.append(f"{indent}    d[{f.key!r}] = {value(f, n)}")
                if pads:
                    out += [f"{indent}if {' or '.join(pads)}:", f"{indent}    u = -1"]
            done = {f.name for f in combined}
            for f in plain:
                if f.name not in done:
                    out += member(f, checked, indent, False)
            padding = unknown_bits(pad_left, pad_ptrs, checked)
            if padding:
                out += [f"{indent}if {padding}:", f"{indent}    u = -1"]
            if members:
                off = plan.discriminant_offset
                disc = f"unpack_from('<H', buf, dpos + {off})[0]"
                if checked:
                    disc = f"({disc} if dbytes >= {off + 2} else 0)"
                out.append(f"{indent}disc = {disc}")
                for i, f in enumerate(members):
                    kw = "if" if i == 0 else "elif"
                    out.append(f"{indent}{kw} disc == {f.discriminant}:")
                    out += member(f, checked, indent + "    ", f.discriminant != 0) or \
                        [f"{indent}    pass"]
                    inactive = unknown_bits(*reg.inactive(f), checked)
                    if inactive:
                        out += [f"{indent}    if {inactive}:", f"{indent}        u = -1"]
                out += [f"{indent}else:", f"{indent}    u = disc"]
            return out

        lines.append(f"    if dbytes >= {plan.data_words * 8} and nptrs >= {plan.pointer_count}:")
        lines += body(False, "        ")
        lines.append("    else:")
        lines += body(True, "        ")
        if inst:
            lines += [f"    s = DNEW(C_{tag})", "    DU(s, d)"]
        else:
            lines.append("    s = d")
        if not plan.is_group:
            lines += [f"    if u is not None or dbytes > {plan.data_words * 8} or "
                      f"nptrs > {plan.pointer_count}:",
                      f"        s = KEEP(s, u, msg, seg, dpos, dbytes, ppos, nptrs, nest, "
                      f"{plan.data_words * 8}, {plan.pointer_count})"]
        else:
            lines += ["    if u is not None:", "        s = KEEP_GROUP(s, u)"]
        lines.append("    return s")
        return "\n".join(lines) + "\n"

    # ------------------------------------------------------------------------------ encoding

    def _scalar_store(self, fp: FieldPlan, value: str, indent: str) -> list[str]:
        kind = fp.kind
        if kind == "void":
            return []
        if kind == "bool":
            byte, bit = fp.offset >> 3, fp.offset & 7
            cond = f"not {value}" if fp.default else f"{value}"
            return [f"{indent}if {cond}:", f"{indent}    buf[dpos + {byte}] |= {1 << bit}"]
        ch, _size, _ = _SCALAR[kind]
        if kind in _FLOAT_BITS and fp.default:
            bits = _float_bits(kind, fp.default)
            f, i = _FLOAT_BITS[kind]
            return [f"{indent}pack_into('<{i}', buf, dpos + {fp.offset}, "
                    f"unpack_from('<{i}', spack('<{f}', {value}))[0] ^ {bits})"]
        expr = f"{value} ^ {fp.default!r}" if fp.default else value
        return [f"{indent}pack_into('<{ch}', buf, dpos + {fp.offset}, {expr})"]

    def _pointer_store(self, fp: FieldPlan, value: str, indent: str) -> list[str]:
        assert fp.type is not None
        pos = f"(ppos + {fp.pointer * 8})"
        kind = fp.kind
        if kind == "text":
            return [f"{indent}_r = {value}.encode()",
                    f"{indent}_p = len(buf)",
                    f"{indent}_n = len(_r)",
                    f"{indent}buf += _r",
                    f"{indent}buf += PADT[_n & 7]",
                    f"{indent}PP(buf, {pos}, (_p - {pos} - 8) >> 1 | 1, (_n + 1) << 3 | 2)"]
        if kind == "data":
            return [f"{indent}_p = len(buf)",
                    f"{indent}_n = len({value})",
                    f"{indent}buf += {value}",
                    f"{indent}buf += PADD[_n & 7]",
                    f"{indent}PP(buf, {pos}, (_p - {pos} - 8) >> 1 | 1, _n << 3 | 2)"]
        if kind == "interface":
            return [f"{indent}cap_encode(buf, {pos}, {value})"]
        if kind == "anyPointer":
            return [f"{indent}any_encode(buf, {pos}, {value})"]
        if kind == "struct":
            assert fp.type.struct is not None
            sub = self.plans[self._key_of(fp.type)]
            dw, pc = sub.data_words, sub.pointer_count
            if dw + pc == 0:
                out = [f"{indent}PP(buf, {pos}, -4, 0)",
                       f"{indent}E_{sub.tag}(buf, len(buf), len(buf), {value})"]
            else:
                zeros = self._const(bytes((dw + pc) * 8), "Z")
                out = [f"{indent}_p = len(buf)",
                       f"{indent}buf += {zeros}",
                       f"{indent}PP(buf, {pos}, (_p - {pos} - 8) >> 1, {dw | pc << 16})",
                       f"{indent}E_{sub.tag}(buf, _p, _p + {dw * 8}, {value})"]
            # a struct decoded with data its schema does not know (see .unknown): a runtime
            # struct or decoded dict carries it as an attribute, a plain dict under key -1
            kept = self._const(sub, "PL")
            if self.keys == "index":
                found = (f"type({value}) is not dict and (_u := getattr({value}, "
                         f"'_cara_unknown_', None)) is not None")
            else:
                found = f"(_u := RECORD_OF({value})) is not None"
            return [f"{indent}if SEEN[0] and {found} and _u.loc is not None:",
                    f"{indent}    KEEP_STRUCT({kept}, buf, {pos}, {value}, _u)",
                    f"{indent}else:", *("    " + line for line in out)]
        return [f"{indent}{self._pointer_encoder(fp.type)}(buf, {pos}, {value})"]

    def _field_store(self, fp: FieldPlan, value: str, indent: str) -> list[str]:
        if fp.kind == "group":
            return [f"{indent}E_{self._tag(fp.group_id)}(buf, dpos, ppos, {value})"]
        if fp.kind in _POINTER_KINDS:
            return self._pointer_store(fp, value, indent)
        return self._scalar_store(fp, value, indent)

    def _encoder_source(self, plan: StructPlan) -> str:
        name = f"E_{plan.tag}"
        plain = [f for f in plan.fields if f.discriminant == model.NO_DISCRIMINANT]
        members = [f for f in plan.fields if f.discriminant != model.NO_DISCRIMINANT]
        # Index-keyed values may be dict subclasses (cara's runtime structs, whose own get and
        # `in` map names): the dict's methods are used directly.
        index = self.keys == "index"
        lines = [f"def {name}(buf, dpos, ppos, v):"]
        if index:
            lines += ["    if isinstance(v, dict):", "        get = DGET(v)",
                      *(["        has = DHAS(v)"] if members else []),
                      "    else:", "        get = v.get",
                      *(["        has = v.__contains__"] if members else [])]
        else:
            lines.append("    get = v.get")
        ind = "    "
        combined = [f for f in plain if f.kind in _SCALAR and not
                    (f.kind in _FLOAT_BITS and f.default)]
        combined.sort(key=lambda f: f.offset)
        # One pack_into per run of scalars. A struct's own function runs first on a zeroed
        # section, so its run may span gaps (written as zero pad bytes); a group shares the
        # section with its parent and siblings, so its runs must stop at every gap.
        runs: list[list[FieldPlan]] = []
        for f in combined:
            if runs and (not plan.is_group or
                         runs[-1][-1].offset + _SCALAR[runs[-1][-1].kind][1] == f.offset):
                runs[-1].append(f)
            else:
                runs.append([f])
        for run in runs:
            fmt = "<"
            at = run[0].offset
            args = []
            for f in run:
                ch, size, _ = _SCALAR[f.kind]
                if f.offset > at:
                    fmt += f"{f.offset - at}x"
                fmt += ch
                at = f.offset + size
                if f.default:
                    args.append(f"get({f.key!r}, {f.default!r}) ^ {f.default!r}")
                else:
                    args.append(f"get({f.key!r}, 0)")
            sname = self._const(struct.Struct(fmt).pack_into, "P")
            lines.append(f"{ind}{sname}(buf, dpos + {run[0].offset}, {', '.join(args)})")
        done = {f.name for f in combined}
        for f in plain:
            if f.name in done or f.kind == "void":
                continue
            if f.kind == "bool":
                lines += self._scalar_store(f, f"get({f.key!r}, {bool(f.default)!r})", ind)
                continue
            if f.kind in _SCALAR:
                lines.append(f"{ind}_x = get({f.key!r}, {f.default!r})")
            else:
                lines.append(f"{ind}_x = get({f.key!r})")
                lines.append(f"{ind}if _x is not None:")
                lines += self._field_store(f, "_x", ind + "    ")
                continue
            lines += self._field_store(f, "_x", ind)
        if members:
            off = plan.discriminant_offset
            for i, f in enumerate(members):
                kw = "if" if i == 0 else "elif"
                lines.append(f"{ind}{kw} has({f.key!r}):" if index else
                             f"{ind}{kw} {f.key!r} in v:")
                lines.append(f"{ind}    pass")
                if f.discriminant:
                    lines.append(f"{ind}    pack_into('<H', buf, dpos + {off}, "
                                 f"{f.discriminant})")
                if f.kind != "void":
                    lines.append(f"{ind}    _x = get({f.key!r})")
                    if f.kind in _SCALAR or f.kind == "bool":
                        lines += self._field_store(f, "_x", ind + "    ")
                    else:
                        lines.append(f"{ind}    if _x is not None:")
                        lines += self._field_store(f, "_x", ind + "        ")
        lines.append("    return")
        return "\n".join(lines) + "\n"

    # ---------------------------------------------------------------------- pointer codecs

    def _type_key(self, t: model.Type) -> str:
        w = t.which
        if w == "list" and t.list is not None:
            return f"L({self._type_key(t.list.elementType)})"
        if w == "struct" and t.struct is not None:
            return f"S{self._key_of(t)!r}"
        return w

    def _pointer_decoder(self, t: model.Type) -> str:
        """Name of a function ``(msg, seg, pos, nest) -> value or None`` for pointer type t."""
        return self._pointer_codecs(t)[0]

    def _pointer_encoder(self, t: model.Type) -> str:
        """Name of a function ``(buf, ptr_pos, value)`` for pointer type t."""
        return self._pointer_codecs(t)[1]

    def _pointer_codecs(self, t: model.Type) -> tuple[str, str]:
        key = self._type_key(t)
        names = self._list_codecs.get(key)
        if names is not None:
            return names
        w = t.which
        ns = self._ns
        dname, ename = self._name("PD"), self._name("PE")
        if w == "struct":
            skey = self._key_of(t)
            self.plan(skey)
            ns[dname] = _struct_decoder(self, skey)
            ns[ename] = _struct_encoder(self, skey)
        elif w == "text":
            ns[dname] = text_at_nest
            ns[ename] = _encode_text
        elif w == "data":
            ns[dname] = data_at_nest
            ns[ename] = _encode_data
        elif w == "anyPointer":
            # (list elements, like fields, go through the namespace's any_/cap_ functions,
            # which a caller may replace: see ``ns``)
            ns[dname] = lambda msg, seg, pos, nest: ns["any_decode"](msg, seg, pos, nest)
            ns[ename] = lambda buf, ptr_pos, value: ns["any_encode"](buf, ptr_pos, value)
        elif w == "interface":
            ns[dname] = lambda msg, seg, pos, nest: ns["cap_decode"](msg, seg, pos)
            ns[ename] = lambda buf, ptr_pos, value: ns["cap_encode"](buf, ptr_pos, value)
        elif w == "list":
            assert t.list is not None
            dec, enc = self._list_functions(t.list.elementType)
            ns[dname] = dec
            ns[ename] = enc
        else:
            raise EncodeError(f"type {w} is not a pointer type")
        self._list_codecs[key] = (dname, ename)
        return dname, ename

    def _list_functions(self, et: model.Type) -> tuple[Callable[..., Any], Callable[..., Any]]:
        w = et.which
        if w == "void":
            return _void_list_decoder, _void_list_encoder
        if w == "bool":
            return _bool_list_decoder, _bool_list_encoder
        if w in _SCALAR:
            ch, size, code = _SCALAR[w]
            return _scalar_list_decoder(ch, size, code), _scalar_list_encoder(ch, size, code)
        if w == "struct":
            plan = self.plan_for_type(et)
            return (_struct_list_decoder(plan),
                    _struct_list_encoder(plan, self))
        dname, ename = self._pointer_codecs(et)
        return (_pointer_list_decoder(self._ns, dname), _pointer_list_encoder(self._ns, ename))

    def _encode_any(self, buf: bytearray, ptr_pos: int, value: Any) -> None:
        """Write an AnyPointer field: a copied reader, or a typed :class:`PointerValue`."""
        if value is None:
            return
        if isinstance(value, AnyPointerReader):
            shim = MessageBuilder.__new__(MessageBuilder)
            shim.buf = buf
            copy_pointer(shim, ptr_pos, value.msg, value.seg, value.pos, value.nesting)
            return
        if isinstance(value, model.PointerValue):
            if value.value is not None:
                self.encode_pointer(value.type, buf, ptr_pos, value.value)
            return
        if _is_capnp_ext(value):  # an AnyPointerReader that went through msgpack
            self._encode_any(buf, ptr_pos, pointer_from_ext(value.data))
            return
        raise ValueTypeError("", _ANY_POINTER_VALUES + type(value).__name__)


# ------------------------------------------------------------------------- pointer helpers

_ANY_POINTER_VALUES = ("the binary form can write an AnyPointer value only as an "
                       "AnyPointerReader (as decoded from a message, also after msgpack), a "
                       "PointerValue or None, not ")


def _is_capnp_ext(value: Any) -> bool:
    """Whether ``value`` is msgpack's ``ExtType`` of an AnyPointerReader."""
    return type(value).__name__ == "ExtType" and getattr(value, "code", None) == \
        EXT_CAPNP_MESSAGE


def _is_struct_list(t: model.Type | None) -> bool:
    return (t is not None and t.which == "list" and t.list is not None
            and t.list.elementType.which == "struct")


def _element_type(t: model.Type) -> model.Type:
    if t.which == "list":
        assert t.list is not None
        t = t.list.elementType
    return t


def _group_view(layout: ViewLayout, msg: Message, seg: int, dpos: int, dbytes: int, ppos: int,
                nptrs: int, nest: int) -> StructView:
    return layout.cls(layout, msg, (seg, dpos, dbytes, ppos, nptrs, nest))


def text_at_nest(msg: Message, seg: int, pos: int, nest: int) -> str | None:
    return text_at(msg, seg, pos)


def data_at_nest(msg: Message, seg: int, pos: int, nest: int) -> bytes | None:
    return data_at(msg, seg, pos)


def _decode_any(msg: Message, seg: int, pos: int, nest: int) -> AnyPointerReader | None:
    if resolve(msg, seg, pos)[0] < 0:
        return None
    return AnyPointerReader(msg, seg, pos, nest)


def _decode_cap(msg: Message, seg: int, pos: int) -> int | None:
    kind, _s, _t, _lo, hi = resolve(msg, seg, pos)
    if kind < 0:
        return None
    if kind != 3:
        raise DecodeError("expected a capability pointer", pos)
    return hi


def _encode_cap(buf: bytearray, ptr_pos: int, index: int) -> None:
    _PTR.pack_into(buf, ptr_pos, 3, index)


def _encode_text(buf: bytearray, ptr_pos: int, value: str) -> None:
    raw = value.encode()
    pos = len(buf)
    n = len(raw)
    buf += raw
    buf += bytes(8 - (n & 7))
    _PTR.pack_into(buf, ptr_pos, (pos - ptr_pos - 8) >> 1 | 1, (n + 1) << 3 | 2)


def _encode_data(buf: bytearray, ptr_pos: int, value: bytes) -> None:
    pos = len(buf)
    n = len(value)
    buf += value
    buf += bytes(-n & 7)
    _PTR.pack_into(buf, ptr_pos, (pos - ptr_pos - 8) >> 1 | 1, n << 3 | 2)


def _struct_decoder(codec: SchemaCodec, sid: PlanKey) -> Callable[..., Any]:
    def decode(msg: Message, seg: int, pos: int, nest: int) -> Any:
        loc = struct_at(msg, seg, pos, nest)
        if loc is None:
            return None
        return codec.plans[sid].decode(msg, *loc)  # type: ignore[misc]
    return decode


def _struct_encoder(codec: SchemaCodec, sid: PlanKey) -> Callable[..., None]:
    def encode(buf: bytearray, ptr_pos: int, value: Mapping[str, Any]) -> None:
        u = record_of(value) if SEEN[0] else None
        unknown.encode_struct(codec, codec.plans[sid], buf, ptr_pos, value, u)
    return encode


def _void_list_decoder(msg: Message, seg: int, pos: int, nest: int) -> list[None] | None:
    loc = list_at(msg, seg, pos, nest)
    if loc is None:
        return None
    return [None] * loc[2]


def _void_list_encoder(buf: bytearray, ptr_pos: int, value: list[None]) -> None:
    pos = len(buf)
    _PTR.pack_into(buf, ptr_pos, (pos - ptr_pos - 8) >> 1 | 1, len(value) << 3)


def _bool_list_decoder(msg: Message, seg: int, pos: int, nest: int) -> list[bool] | None:
    loc = list_at(msg, seg, pos, nest)
    if loc is None:
        return None
    _seg, start, count, _step, _db, _np, size, _n = loc
    if size != 1:
        raise DecodeError("expected a list of Bool (bit list), found another element size",
                          pos)
    return unpack_bits(msg.buf, start, count)


def _bool_list_encoder(buf: bytearray, ptr_pos: int, value: list[bool]) -> None:
    count = len(value)
    pos = len(buf)
    buf += pack_bits(value, ((count + 63) >> 6) * 8)
    _PTR.pack_into(buf, ptr_pos, (pos - ptr_pos - 8) >> 1 | 1, count << 3 | 1)


def _scalar_list_decoder(ch: str, size: int, code: int) -> Callable[..., Any]:
    one = struct.Struct("<" + ch).unpack_from

    def decode(msg: Message, seg: int, pos: int, nest: int) -> list[Any] | None:
        loc = list_at(msg, seg, pos, nest)
        if loc is None:
            return None
        _seg, start, count, step, dbytes, _np, esize, _n = loc
        if esize == code:
            return list(struct.unpack_from(f"<{count}{ch}", msg.buf, start))
        if esize == 1 or dbytes < size:
            raise DecodeError(f"list elements of {dbytes * 8 if esize != 1 else 1} data bits "
                              f"cannot be read as {size * 8}-bit values", pos)
        buf = msg.buf
        return [one(buf, start + i * step)[0] for i in range(count)]
    return decode


def _scalar_list_encoder(ch: str, size: int, code: int) -> Callable[..., None]:
    def encode(buf: bytearray, ptr_pos: int, value: list[Any]) -> None:
        count = len(value)
        pos = len(buf)
        buf += struct.pack(f"<{count}{ch}", *value)
        buf += bytes(-(count * size) & 7)
        _PTR.pack_into(buf, ptr_pos, (pos - ptr_pos - 8) >> 1 | 1, count << 3 | code)
    return encode


def _struct_list_decoder(plan: StructPlan) -> Callable[..., Any]:
    words_each = plan.data_words + plan.pointer_count

    def decode(msg: Message, seg: int, pos: int, nest: int) -> list[Any] | None:
        loc = list_at(msg, seg, pos, nest)
        if loc is None:
            return None
        lseg, start, count, step, dbytes, nptrs, esize, inner = loc
        if esize == 1:
            raise DecodeError("a bit list cannot be read as a list of structs", pos)
        if step < words_each * 8:
            charge_elements(msg, count, step, words_each, pos)
        dec = plan.decode
        assert dec is not None
        return [dec(msg, lseg, b, dbytes, b + dbytes, nptrs, inner)
                for b in range(start, start + count * step, step)] if step else \
            [dec(msg, lseg, start, 0, start, 0, inner) for _ in range(count)]
    return decode


def _struct_list_encoder(plan: StructPlan, codec: SchemaCodec) -> Callable[..., None]:
    """(``codec``: the codec whose structs may carry unknown data.)"""
    dw, pc = plan.data_words, plan.pointer_count
    step = (dw + pc) * 8

    def encode(buf: bytearray, ptr_pos: int, value: list[Mapping[str, Any]]) -> None:
        kept = unknown.list_sizes(plan, value) if SEEN[0] else None
        edw, epc, estep = (dw, pc, step) if kept is None else \
            (kept[0], kept[1], (kept[0] + kept[1]) * 8)
        count = len(value)
        pos = len(buf)
        words = count * (edw + epc)
        buf += bytes(8 + words * 8)
        _PTR.pack_into(buf, ptr_pos, (pos - ptr_pos - 8) >> 1 | 1, words << 3 | 7)
        _PTR.pack_into(buf, pos, count << 2, edw | epc << 16)
        enc = plan.encode
        assert enc is not None
        base = pos + 8
        if kept is None:
            for item in value:
                enc(buf, base, base + dw * 8, item)
                base += step
            return
        for item, record in zip(value, kept[2], strict=True):
            enc(buf, base, base + edw * 8, item)
            if record is not None:
                unknown.restore(codec, plan, buf, base, base + edw * 8, item, record)
            base += estep
    return encode


def _pointer_list_decoder(ns: dict[str, Any], dname: str) -> Callable[..., Any]:
    def decode(msg: Message, seg: int, pos: int, nest: int) -> list[Any] | None:
        loc = list_at(msg, seg, pos, nest)
        if loc is None:
            return None
        lseg, start, count, step, dbytes, nptrs, _esize, inner = loc
        if nptrs == 0:
            raise DecodeError("list elements carry no pointer, but pointers were expected", pos)
        dec = ns[dname]
        return [dec(msg, lseg, start + i * step + dbytes, inner) for i in range(count)]
    return decode


def _pointer_list_encoder(ns: dict[str, Any], ename: str) -> Callable[..., None]:
    def encode(buf: bytearray, ptr_pos: int, value: list[Any]) -> None:
        count = len(value)
        pos = len(buf)
        buf += bytes(8 * count)
        _PTR.pack_into(buf, ptr_pos, (pos - ptr_pos - 8) >> 1 | 1, count << 3 | 6)
        enc = ns[ename]
        for i, item in enumerate(value):
            if item is not None:
                enc(buf, pos + 8 * i, item)
    return encode


# ------------------------------------------------------------------------ error diagnosis


def _find_bad_struct(codec: SchemaCodec, plan: StructPlan, value: Any,
                     path: str) -> tuple[str, str]:
    """``(path, reason)`` of the first field of ``value`` that cannot be encoded, or
    ``(path, "")`` when every field looks valid."""
    if not isinstance(value, Mapping):
        return path, f"expected a dict for struct {plan.name}, got {type(value).__name__}"
    members = [f.name for f in plan.fields
               if f.discriminant != model.NO_DISCRIMINANT and f.key in value]
    if len(members) > 1:
        return path, f"more than one member of a union is set: {', '.join(members)}"
    for fp in plan.fields:
        if fp.key not in value:
            continue
        where = f"{path}.{fp.name}"
        item = value[fp.key]
        if fp.kind == "group":
            sub = _find_bad_struct(codec, codec.plan(fp.group_id), item, where)
        elif fp.type is not None:
            sub = _find_bad_value(codec, fp.type, item, where)
        else:
            continue
        if sub[1]:
            return sub
    return path, ""


def _find_bad_value(codec: SchemaCodec, t: model.Type, value: Any,
                    path: str) -> tuple[str, str]:
    w = t.which
    if value is None:
        if w in _SCALAR or w == "bool":
            return path, f"None is not a valid {w}"
        return path, ""
    if w in _INT_RANGES:
        if not isinstance(value, int):
            return path, f"expected an int for {w}, got {type(value).__name__}"
        lo, hi = _INT_RANGES[w]
        if not lo <= value < hi:
            return path, f"{value} is out of range for {w}"
    elif w in ("float32", "float64"):
        if not isinstance(value, (int, float)):
            return path, f"expected a float for {w}, got {type(value).__name__}"
        if w == "float32":
            try:
                struct.pack("<f", value)
            except OverflowError:
                return path, f"{value} is out of range for float32"
    elif w == "text":
        if not isinstance(value, str):
            return path, f"expected str for Text, got {type(value).__name__}"
        try:
            value.encode()
        except UnicodeEncodeError as exc:
            return path, f"text cannot be encoded as UTF-8: {exc.reason}"
    elif w == "data":
        if not isinstance(value, (bytes, bytearray, memoryview)):
            return path, f"expected bytes for Data, got {type(value).__name__}"
    elif w == "interface":
        if not isinstance(value, int):
            return path, f"expected a cap-table index (int), got {type(value).__name__}"
    elif w == "list":
        if not isinstance(value, (list, tuple)):
            return path, f"expected a list, got {type(value).__name__}"
        assert t.list is not None
        for i, item in enumerate(value):
            sub = _find_bad_value(codec, t.list.elementType, item, f"{path}[{i}]")
            if sub[1]:
                return sub
    elif w == "struct":
        assert t.struct is not None
        return _find_bad_struct(codec, codec.plan_for_type(t), value, path)
    elif w == "anyPointer" and not isinstance(value, (AnyPointerReader, model.PointerValue)) \
            and not _is_capnp_ext(value):
        return path, _ANY_POINTER_VALUES + type(value).__name__
    return path, ""
