"""``cara compile -o-``'s writer: a :class:`~cara.schema.model.CodeGeneratorRequest` straight to
the bytes ``capnp compile -o-`` writes, with schema.capnp's layout (as of Cap'n Proto 0.9.2)
written out here.

The general path (:func:`cara.codecs.capnp.encode_request`) is driven by schema.capnp's own nodes:
it maps the model onto plain values, plans every struct, then lays the values out. That is the
reference, but for a one-shot ``cara compile`` its set-up (importing the binary codec and the
runtime, planning schema.capnp) and its generic walk cost more than compiling test.capnp does.
This writer does the same in one pass over the model, object by object, with the offsets of
schema.capnp's structs spelled out, and allocates exactly as libcapnp's ``MallocMessageBuilder``
does (the rules are in :mod:`cara.codecs.capnp.arena`'s docstring: first segment of 1024
words, an object in its pointer's segment when it fits, else a landing pad and a far pointer in
the newest or a new segment; orphans adopted through a one-word pad or a double-far).

The objects are written in the order capnp builds them (compiler/capnp.c++): the root, its
``capnpVersion``, the nodes (each copied in, so every struct's data, then its pointers in
pointer-section order, each completely before the next), the ``sourceInfo`` list built as an
orphan and adopted, then ``requestedFiles``, each with its import table built as an orphan.

Empty lists and strings are null pointers, except where capnp writes them anyway (the same
table as the general path's). Default values, constants and annotation values
(:class:`~cara.schema.model.PointerValue`) are written from the request's own nodes. What this
writer does not handle (a value of a generic struct type, an AnyPointer or capability value,
an already encoded value) raises :class:`Unsupported`, and the caller uses the general path:
the bytes are the same either way (``tests/cli/test_request_writer.py`` holds them equal).
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from cara.schema import model

#: ``typing.TYPE_CHECKING`` without importing typing (a tenth of a cold ``cara compile``);
#: type checkers take any ``TYPE_CHECKING`` as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["Unsupported", "write_request"]

_PTR = struct.Struct("<iI")
_PACK_PTR = _PTR.pack_into
_U8 = struct.Struct("<B").pack_into
_U16 = struct.Struct("<H").pack_into
_U32 = struct.Struct("<I").pack_into
_U64 = struct.Struct("<Q").pack_into
_NO_DISCRIMINANT = model.NO_DISCRIMINANT

#: ``Type`` and ``Value`` union members in discriminant order.
_TYPE_WHICH = {name: i for i, name in enumerate((
    "void", "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float32", "float64", "text", "data", "list", "enum", "struct", "interface", "anyPointer"))}
_NODE_WHICH = {"file": 0, "struct": 1, "enum": 2, "interface": 3, "const": 4, "annotation": 5}
_UNCONSTRAINED = {"anyKind": 0, "struct": 1, "list": 2, "capability": 3}
_ANY_POINTER = {"unconstrained": 0, "parameter": 1, "implicitMethodParameter": 2}
#: ``Value``'s scalar members: (byte offset, struct format) in its data section.
_VALUE_SCALARS = {
    "int8": (2, "<b"), "int16": (2, "<h"), "int32": (4, "<i"), "int64": (8, "<q"),
    "uint8": (2, "<B"), "uint16": (2, "<H"), "uint32": (4, "<I"), "uint64": (8, "<Q"),
    "float32": (4, "<f"), "float64": (8, "<d"), "enum": (2, "<H"),
}
#: Scalar types of struct values: (size in bytes, struct format, list size code).
_SCALARS = {
    "int8": (1, "b", 2), "uint8": (1, "B", 2), "int16": (2, "h", 3), "uint16": (2, "H", 3),
    "enum": (2, "H", 3), "int32": (4, "i", 4), "uint32": (4, "I", 4), "float32": (4, "f", 4),
    "int64": (8, "q", 5), "uint64": (8, "Q", 5), "float64": (8, "d", 5),
}
_FLOAT_BITS = {"float32": ("<f", "<I"), "float64": ("<d", "<Q")}
FIRST_SEGMENT_WORDS = 1024

if TYPE_CHECKING:
    #: Generic bindings: ``(scopeId, parameterIndex) -> (bound type, the bindings it is
    #: written in)``; an unbound parameter is absent.
    _Env = dict[tuple[int, int], tuple[model.Type, Any]]


class Unsupported(Exception):
    """A value this writer leaves to the general encoder."""


def write_request(request: model.CodeGeneratorRequest) -> bytes:
    """``request`` as ``capnp compile -o-`` writes it (stream framing, unpacked); raises
    :class:`Unsupported` for what only the general encoder handles."""
    return _Writer(request).run()


class _Writer:
    def __init__(self, request: model.CodeGeneratorRequest) -> None:
        self.request = request
        self.segs: list[bytearray] = [bytearray(FIRST_SEGMENT_WORDS * 8)]
        self.used: list[int] = [8]  # bytes used per segment; word 0 is the root pointer
        self.next_size = FIRST_SEGMENT_WORDS
        self.with_space = 0  # the segment new (far or orphaned) objects try first
        self.nodes: dict[int, model.Node] = {}
        self.kinds: dict[int, str] = {}

    # ------------------------------------------------------------------------- allocation

    def _arena(self, words: int) -> tuple[int, int]:
        seg = self.with_space
        pos = self.used[seg]
        if pos + words * 8 <= len(self.segs[seg]):
            self.used[seg] = pos + words * 8
            return seg, pos
        size = max(words, self.next_size)
        self.next_size += size
        self.segs.append(bytearray(size * 8))
        self.used.append(words * 8)
        self.with_space = len(self.segs) - 1
        return self.with_space, 0

    def _place(self, seg: int, ref: int, words: int, kind: int, hi: int) -> tuple[int, int]:
        """Allocate ``words`` for the object the pointer at ``ref`` (in ``seg``) points to and
        write that pointer (through a landing pad when the object goes elsewhere)."""
        used = self.used
        pos = used[seg]
        end = pos + (words << 3)
        buf = self.segs[seg]
        if end <= len(buf):
            used[seg] = end
            _PACK_PTR(buf, ref, (pos - ref - 8) >> 1 | kind, hi)
            return seg, pos
        pad_seg, pad = self._arena(words + 1)
        _PTR.pack_into(self.segs[seg], ref, 2 | (pad >> 3) << 3, pad_seg)
        _PTR.pack_into(self.segs[pad_seg], pad, kind, hi)
        return pad_seg, pad + 8

    def _adopt(self, seg: int, ref: int, obj_seg: int, obj: int, kind: int, hi: int) -> None:
        """Point ``ref`` at an orphan, through a landing pad when it is in another segment."""
        if seg == obj_seg:
            _PTR.pack_into(self.segs[seg], ref, (obj - ref - 8) >> 1 | kind, hi)
            return
        pad = self.used[obj_seg]
        if pad + 8 <= len(self.segs[obj_seg]):
            self.used[obj_seg] = pad + 8
            _PTR.pack_into(self.segs[obj_seg], pad, (obj - pad - 8) >> 1 | kind, hi)
            _PTR.pack_into(self.segs[seg], ref, 2 | (pad >> 3) << 3, obj_seg)
            return
        pad_seg, pad = self._arena(2)
        _PTR.pack_into(self.segs[pad_seg], pad, 2 | (obj >> 3) << 3, obj_seg)
        _PTR.pack_into(self.segs[pad_seg], pad + 8, kind, hi)
        _PTR.pack_into(self.segs[seg], ref, 2 | 4 | (pad >> 3) << 3, pad_seg)

    def _struct(self, seg: int, ref: int, dw: int, pc: int) -> tuple[int, int]:
        if dw + pc == 0:
            _PTR.pack_into(self.segs[seg], ref, -4, 0)
            return seg, ref
        return self._place(seg, ref, dw + pc, 0, dw | pc << 16)

    def _struct_list(self, seg: int, ref: int, count: int, dw: int,
                     pc: int) -> tuple[int, int]:
        """An inline-composite list and its tag; returns its first element."""
        words = count * (dw + pc)
        seg, pos = self._place(seg, ref, 1 + words, 1, words << 3 | 7)
        _PTR.pack_into(self.segs[seg], pos, count << 2, dw | pc << 16)
        return seg, pos + 8

    def _orphan_list(self, count: int, dw: int, pc: int) -> tuple[int, int]:
        """An inline-composite list built before it is attached (see :meth:`_adopt`)."""
        seg, pos = self._arena(1 + count * (dw + pc))
        _PTR.pack_into(self.segs[seg], pos, count << 2, dw | pc << 16)
        return seg, pos

    def _bytes(self, seg: int, ref: int, code: int, count: int, raw: bytes) -> None:
        bits = (0, 1, 8, 16, 32, 64)[code]
        seg, pos = self._place(seg, ref, (count * bits + 63) >> 6, 1, count << 3 | code)
        self.segs[seg][pos:pos + len(raw)] = raw

    def _text(self, seg: int, ref: int, text: str) -> None:
        raw = text.encode()
        size = len(raw) + 1  # and a NUL, which the zeroed segment already holds
        seg, pos = self._place(seg, ref, (size + 7) >> 3, 1, size << 3 | 2)
        self.segs[seg][pos:pos + size - 1] = raw

    def _text_if(self, seg: int, ref: int, text: str) -> None:
        """Text, or a null pointer for an empty one (as capnp leaves most empty strings)."""
        if text:
            self._text(seg, ref, text)

    def _list(self, seg: int, ref: int, items: list[Any], dw: int, pc: int,
              fill: Callable[[int, int, Any], None]) -> None:
        seg, pos = self._struct_list(seg, ref, len(items), dw, pc)
        step = (dw + pc) * 8
        for item in items:
            fill(seg, pos, item)
            pos += step

    # ---------------------------------------------------------------------------- request

    def run(self) -> bytes:
        request = self.request
        self.nodes = {n.id: n for n in request.nodes}
        self.kinds = {n.id: n.which for n in request.nodes}
        seg, root = self._place(0, 0, 4, 0, 4 << 16)
        version = request.capnpVersion
        vseg, vpos = self._struct(seg, root + 16, 1, 0)
        buf = self.segs[vseg]
        _U16(buf, vpos, version.major)
        _U8(buf, vpos + 2, version.minor)
        _U8(buf, vpos + 3, version.micro)
        self._list(seg, root, request.nodes, 5, 6, self._node)
        infos = request.sourceInfo
        oseg, opos = self._orphan_list(len(infos), 1, 2)
        pos = opos + 8
        for info in infos:
            self._source_info(oseg, pos, info)
            pos += 24
        self._adopt(seg, root + 24, oseg, opos, 1, len(infos) * 3 << 3 | 7)
        files = request.requestedFiles
        fseg, pos = self._struct_list(seg, root + 8, len(files), 1, 2)
        for entry in files:
            buf = self.segs[fseg]
            _U64(buf, pos, entry.id)
            self._text_if(fseg, pos + 8, entry.filename)
            imports = entry.imports
            iseg, ipos = self._orphan_list(len(imports), 1, 1)
            at = ipos + 8
            for imp in imports:
                _U64(self.segs[iseg], at, imp.id)
                self._text_if(iseg, at + 8, imp.name)
                at += 16
            self._adopt(fseg, pos + 16, iseg, ipos, 1, len(imports) * 2 << 3 | 7)
            pos += 24
        return self._framed()

    def _framed(self) -> bytes:
        count = len(self.segs)
        head = struct.pack(f"<{count + 1}I", count - 1, *(u // 8 for u in self.used))
        if count % 2 == 0:
            head += b"\0\0\0\0"
        return b"".join([head, *(bytes(s[:u]) for s, u in zip(self.segs, self.used,
                                                              strict=True))])

    def _source_info(self, seg: int, pos: int, info: model.SourceInfo) -> None:
        _U64(self.segs[seg], pos, info.id)
        self._text_if(seg, pos + 8, info.docComment)
        members = info.members
        if members or self.kinds.get(info.id) == "interface":
            self._list(seg, pos + 16, members, 0, 1,
                       lambda seg, pos, member: self._text_if(seg, pos, member.docComment))

    # ------------------------------------------------------------------------------- nodes

    def _node(self, seg: int, pos: int, node: model.Node) -> None:
        buf = self.segs[seg]
        ptrs = pos + 40
        _U64(buf, pos, node.id)
        _U32(buf, pos + 8, node.displayNamePrefixLength)
        _U64(buf, pos + 16, node.scopeId)
        which = node.which
        disc = _NODE_WHICH[which]
        if disc:
            _U16(buf, pos + 12, disc)
        if node.isGeneric:
            buf[pos + 36] |= 1
        group: Any = getattr(node, which) if disc else None
        if which == "struct" and group is not None:
            _U16(buf, pos + 14, group.dataWordCount)
            _U16(buf, pos + 24, group.pointerCount)
            _U16(buf, pos + 26, group.preferredListEncoding)
            if group.isGroup:
                buf[pos + 28] |= 1
            _U16(buf, pos + 30, group.discriminantCount)
            _U32(buf, pos + 32, group.discriminantOffset)
        elif which == "annotation" and group is not None:
            bits = 0
            for i, flag in enumerate((
                    group.targetsFile, group.targetsConst, group.targetsEnum,
                    group.targetsEnumerant, group.targetsStruct, group.targetsField,
                    group.targetsUnion, group.targetsGroup, group.targetsInterface,
                    group.targetsMethod, group.targetsParam, group.targetsAnnotation)):
                if flag:
                    bits |= 1 << i
            buf[pos + 14] |= bits & 0xFF
            buf[pos + 15] |= bits >> 8
        self._text_if(seg, ptrs, node.displayName)
        nested = node.nestedNodes
        if nested or not (which == "struct" and group is not None
                          and (group.isGroup or node.scopeId == 0)):
            self._list(seg, ptrs + 8, nested, 1, 1, self._nested)
        if node.annotations:
            self._list(seg, ptrs + 16, node.annotations, 1, 2, self._annotation)
        if group is not None:
            if which == "struct":
                if group.fields:
                    self._list(seg, ptrs + 24, group.fields, 3, 4, self._field)
            elif which == "enum":
                self._list(seg, ptrs + 24, group.enumerants, 1, 2, self._enumerant)
            elif which == "interface":
                self._list(seg, ptrs + 24, group.methods, 3, 5, self._method)
                self._list(seg, ptrs + 32, group.superclasses, 1, 1, self._superclass)
            elif which == "const":
                self._type(seg, ptrs + 24, group.type)
                self._value(seg, ptrs + 32, group.value, False)
            elif which == "annotation":
                self._type(seg, ptrs + 24, group.type)
        if node.parameters:
            self._list(seg, ptrs + 40, node.parameters, 0, 1, self._parameter)

    def _nested(self, seg: int, pos: int, nested: model.NestedNode) -> None:
        _U64(self.segs[seg], pos, nested.id)
        self._text_if(seg, pos + 8, nested.name)

    def _parameter(self, seg: int, pos: int, param: model.Parameter) -> None:
        self._text_if(seg, pos, param.name)

    def _field(self, seg: int, pos: int, f: model.Field) -> None:
        buf = self.segs[seg]
        ptrs = pos + 24
        _U16(buf, pos, f.codeOrder)
        _U16(buf, pos + 2, f.discriminantValue ^ 0xFFFF)
        ordinal = f.ordinal
        if ordinal.which == "explicit":
            _U16(buf, pos + 10, 1)
            _U16(buf, pos + 12, ordinal.explicit)
        self._text_if(seg, ptrs, f.name)
        if f.annotations:
            self._list(seg, ptrs + 8, f.annotations, 1, 2, self._annotation)
        if f.which == "group":
            _U16(buf, pos + 8, 1)
            if f.group is not None:
                _U64(buf, pos + 16, f.group.typeId)
            return
        slot = f.slot
        if slot is None:
            return
        _U32(buf, pos + 4, slot.offset)
        if slot.hadExplicitDefault:
            buf[pos + 16] |= 1
        self._type(seg, ptrs + 16, slot.type)
        self._value(seg, ptrs + 24, slot.defaultValue, not slot.hadExplicitDefault)

    def _enumerant(self, seg: int, pos: int, e: model.Enumerant) -> None:
        _U16(self.segs[seg], pos, e.codeOrder)
        self._text_if(seg, pos + 8, e.name)
        if e.annotations:
            self._list(seg, pos + 16, e.annotations, 1, 2, self._annotation)

    def _method(self, seg: int, pos: int, m: model.Method) -> None:
        buf = self.segs[seg]
        ptrs = pos + 24
        _U16(buf, pos, m.codeOrder)
        _U64(buf, pos + 8, m.paramStructType)
        _U64(buf, pos + 16, m.resultStructType)
        self._text_if(seg, ptrs, m.name)
        if m.annotations:
            self._list(seg, ptrs + 8, m.annotations, 1, 2, self._annotation)
        self._brand(seg, ptrs + 16, m.paramBrand, False)
        self._brand(seg, ptrs + 24, m.resultBrand, False)
        self._list(seg, ptrs + 32, m.implicitParameters, 0, 1, self._parameter)

    def _superclass(self, seg: int, pos: int, s: model.Superclass) -> None:
        _U64(self.segs[seg], pos, s.id)
        self._brand(seg, pos + 8, s.brand, False)

    def _annotation(self, seg: int, pos: int, a: model.Annotation) -> None:
        _U64(self.segs[seg], pos, a.id)
        self._value(seg, pos + 8, a.value, False)
        self._brand(seg, pos + 16, a.brand, True)

    # ------------------------------------------------------------------------------- types

    def _brand(self, seg: int, ref: int, brand: model.Brand | None, always: bool) -> None:
        if brand is None or not (brand.scopes or always):
            return
        seg, pos = self._struct(seg, ref, 0, 1)
        if brand.scopes:
            self._list(seg, pos, brand.scopes, 2, 1, self._brand_scope)

    def _brand_scope(self, seg: int, pos: int, scope: model.BrandScope) -> None:
        buf = self.segs[seg]
        _U64(buf, pos, scope.scopeId)
        if scope.which == "inherit":
            _U16(buf, pos + 8, 1)
        elif scope.bind is not None:
            self._list(seg, pos + 16, scope.bind, 1, 1, self._binding)

    def _binding(self, seg: int, pos: int, binding: model.BrandBinding) -> None:
        if binding.which == "type":
            _U16(self.segs[seg], pos, 1)
            if binding.type is not None:
                self._type(seg, pos + 8, binding.type)

    def _type(self, seg: int, ref: int, t: model.Type) -> None:
        seg, pos = self._place(seg, ref, 4, 0, 3 | 1 << 16)
        buf = self.segs[seg]
        which = t.which
        disc = _TYPE_WHICH[which]
        if disc:
            _U16(buf, pos, disc)
        if disc < 14:
            return
        if which == "list":
            if t.list is not None:
                self._type(seg, pos + 24, t.list.elementType)
        elif which == "anyPointer":
            ap = t.anyPointer
            if ap is None:
                return
            kind = _ANY_POINTER[ap.which]
            if kind:
                _U16(buf, pos + 8, kind)
            if ap.which == "unconstrained":
                if ap.unconstrained is not None:
                    member = _UNCONSTRAINED[ap.unconstrained.which]
                    if member:
                        _U16(buf, pos + 10, member)
            elif ap.which == "parameter":
                if ap.parameter is not None:
                    _U64(buf, pos + 16, ap.parameter.scopeId)
                    _U16(buf, pos + 10, ap.parameter.parameterIndex)
            elif ap.implicitMethodParameter is not None:
                _U16(buf, pos + 10, ap.implicitMethodParameter.parameterIndex)
        else:
            branded: model.TypeBranded | None = getattr(t, which)
            if branded is not None:
                _U64(buf, pos + 8, branded.typeId)
                self._brand(seg, pos + 24, branded.brand, False)

    # ------------------------------------------------------------------------------ values

    def _value(self, seg: int, ref: int, v: model.Value, implicit: bool) -> None:
        """A ``Value`` struct; an ``implicit`` Text/Data default (a field default the schema
        does not write out) is a null pointer."""
        seg, pos = self._place(seg, ref, 3, 0, 2 | 1 << 16)
        buf = self.segs[seg]
        which = v.which
        disc = _TYPE_WHICH[which]
        if disc:
            _U16(buf, pos, disc)
        if which == "bool":
            if v.bool:
                buf[pos + 2] |= 1
        elif which in _VALUE_SCALARS:
            offset, fmt = _VALUE_SCALARS[which]
            struct.pack_into(fmt, buf, pos + offset, getattr(v, which))
        elif which in ("text", "data"):
            item = getattr(v, which)
            if item is None or (implicit and not item):
                return
            if which == "text":
                self._text(seg, pos + 16, item)
            else:
                self._bytes(seg, pos + 16, 2, len(item), bytes(item))
        elif which in ("list", "struct", "anyPointer"):
            pv: model.PointerValue | None = getattr(v, which)
            if pv is not None and pv.value is not None:
                self._content(seg, pos + 16, pv.type, pv.value, {})

    def _content(self, seg: int, ref: int, t: model.Type, value: Any, env: _Env) -> None:
        """A value of the compiled schema's type ``t`` (a dict for a struct, a list, str,
        bytes) as the general encoder writes it; ``env`` binds the generic parameters ``t``
        may name."""
        if value is None:
            return
        if isinstance(value, model.PointerValue):
            self._content(seg, ref, value.type, value.value, {})
            return
        t, env = _resolve(t, env)
        which = t.which
        if which == "struct" and t.struct is not None and isinstance(value, dict):
            node = self._struct_node(t)
            st = node.struct
            assert st is not None
            dw, pc = st.dataWordCount, st.pointerCount
            seg, pos = self._struct(seg, ref, dw, pc)
            if dw + pc:
                self._fill(seg, pos, pos + dw * 8, node, value, _struct_env(t, env))
        elif which == "text" and isinstance(value, str):
            self._text(seg, ref, value)
        elif which == "data" and isinstance(value, (bytes, bytearray)):
            self._bytes(seg, ref, 2, len(value), bytes(value))
        elif which == "list" and t.list is not None and isinstance(value, list):
            self._content_list(seg, ref, t.list.elementType, value, env)
        else:
            raise Unsupported(f"a {which} value of type {type(value).__name__}")

    def _struct_node(self, t: model.Type) -> model.Node:
        assert t.struct is not None
        node = self.nodes.get(t.struct.typeId)
        if node is None or node.struct is None:
            raise Unsupported("a struct type the request does not carry")
        return node

    def _content_list(self, seg: int, ref: int, et: model.Type, items: list[Any],
                      env: _Env) -> None:
        count = len(items)
        et, env = _resolve(et, env)
        which = et.which
        if which == "struct":
            node = self._struct_node(et)
            inner = _struct_env(et, env)
            st = node.struct
            assert st is not None
            dw, pc = st.dataWordCount, st.pointerCount
            seg, pos = self._struct_list(seg, ref, count, dw, pc)
            for item in items:
                if not isinstance(item, dict):
                    raise Unsupported("a struct list element that is not a dict")
                self._fill(seg, pos, pos + dw * 8, node, item, inner)
                pos += (dw + pc) * 8
        elif which == "void":
            self._bytes(seg, ref, 0, count, b"")
        elif which == "bool":
            raw = bytearray((count + 7) >> 3)
            for i, item in enumerate(items):
                if item:
                    raw[i >> 3] |= 1 << (i & 7)
            self._bytes(seg, ref, 1, count, bytes(raw))
        elif which in _SCALARS:
            _, fmt, code = _SCALARS[which]
            self._bytes(seg, ref, code, count, struct.pack(f"<{count}{fmt}", *items))
        elif which in ("text", "data", "list"):
            seg, pos = self._place(seg, ref, count, 1, count << 3 | 6)
            for i, item in enumerate(items):
                self._content(seg, pos + 8 * i, et, item, env)
        else:
            raise Unsupported(f"a list of {which}")

    def _fill(self, seg: int, dpos: int, ppos: int, node: model.Node,
              value: dict[str, Any], env: _Env) -> None:
        pointers: dict[int, tuple[model.Type, Any]] = {}
        self._fill_data(self.segs[seg], dpos, node, value, pointers)
        for index in sorted(pointers):
            type_, item = pointers[index]
            self._content(seg, ppos + 8 * index, type_, item, env)

    def _fill_data(self, buf: bytearray, dpos: int, node: model.Node, value: dict[str, Any],
                   pointers: dict[int, tuple[model.Type, Any]]) -> None:
        st = node.struct
        assert st is not None
        active = None
        for f in st.fields:
            if f.discriminantValue != _NO_DISCRIMINANT and f.name in value:
                active = f
                break
        if active is not None and active.discriminantValue:
            _U16(buf, dpos + st.discriminantOffset * 2, active.discriminantValue)
        for f in st.fields:
            if f.discriminantValue != _NO_DISCRIMINANT and f is not active:
                continue
            if f.name not in value:
                continue
            item = value[f.name]
            if f.which == "group":
                if item is not None:
                    assert f.group is not None
                    group = self.nodes.get(f.group.typeId)
                    if group is None or group.struct is None or not isinstance(item, dict):
                        raise Unsupported("a group value")
                    self._fill_data(buf, dpos, group, item, pointers)
                continue
            slot = f.slot
            assert slot is not None
            kind = slot.type.which
            if kind == "void":
                continue
            default = _default(slot.defaultValue)
            if kind == "bool":
                if bool(item) != bool(default):
                    buf[dpos + (slot.offset >> 3)] |= 1 << (slot.offset & 7)
            elif kind in _SCALARS:
                size, fmt, _ = _SCALARS[kind]
                at = dpos + slot.offset * size
                if kind in _FLOAT_BITS:
                    if default:
                        ffmt, ifmt = _FLOAT_BITS[kind]
                        raw = struct.unpack(ifmt, struct.pack(ffmt, item))[0]
                        raw ^= struct.unpack(ifmt, struct.pack(ffmt, default))[0]
                        struct.pack_into(ifmt, buf, at, raw)
                    else:
                        struct.pack_into("<" + fmt, buf, at, item)
                else:
                    struct.pack_into("<" + fmt, buf, at, item ^ (default or 0))
            elif item is not None:
                pointers[slot.offset] = (slot.type, item)


def _resolve(t: model.Type, env: _Env) -> tuple[model.Type, _Env]:
    """``t`` with a generic parameter replaced by the type ``env`` binds it to (and that
    type's own bindings); an unbound parameter is left to the general encoder."""
    while t.which == "anyPointer" and t.anyPointer is not None and \
            t.anyPointer.which == "parameter" and t.anyPointer.parameter is not None:
        p = t.anyPointer.parameter
        bound = env.get((p.scopeId, p.parameterIndex))
        if bound is None:
            raise Unsupported("a value of an unbound generic parameter")
        t, env = bound
    return t, env


def _struct_env(t: model.Type, env: _Env) -> _Env:
    """The bindings inside struct type ``t`` (written where ``env`` applies): its brand's
    bound types, and ``env``'s own for the scopes it inherits."""
    assert t.struct is not None
    out: _Env = {}
    for scope in t.struct.brand.scopes:
        if scope.which == "bind":
            for i, binding in enumerate(scope.bind or ()):
                if binding.which == "type" and binding.type is not None:
                    out[scope.scopeId, i] = (binding.type, env)
        else:
            for key, bound in env.items():
                if key[0] == scope.scopeId:
                    out[key] = bound
    return out


def _default(value: model.Value) -> Any:
    """The scalar a field's default stands for (None for a pointer or Void default)."""
    which = value.which
    if which in ("void", "interface", "list", "struct", "anyPointer", "text", "data"):
        return None
    return getattr(value, which)
