"""A multi-segment builder that allocates exactly as libcapnp's ``MallocMessageBuilder`` does.

Why: ``capnp compile -o-`` writes its ``CodeGeneratorRequest`` with libcapnp, and some consumers
(tests, and anything that hashes a request) want cara's bytes to be identical. That depends on
libcapnp's allocation policy, reproduced here:

* the first segment holds 1024 words; the root pointer is its first word;
* an object is placed in the segment that holds the pointer to it, if it fits;
* otherwise the arena allocates ``words + 1`` (a landing pad plus the object) in the most
  recently created segment, or in a new segment of ``max(needed, next_size)`` words, after
  which ``next_size`` grows by the new segment's size; the pointer becomes a far pointer to the
  landing pad;
* an *orphan* (an object built before it is attached) is allocated in the arena the same way
  but without a landing pad; attaching it from another segment puts a one-word landing pad in
  the orphan's segment, or a two-word double-far pad anywhere when that segment is full.

The arena writes objects, not values: :mod:`.request_codec` drives it in the order the
compiler builds the request. Every position is a ``(segment, byte offset)`` pair.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from cara.errors import ValueTypeError
from cara.schema import model

from .bits import pack_bits
from .copying import Ref, copy_object, list_words
from .framing import frame_segments
from .reader import AnyPointerReader, Message

if TYPE_CHECKING:
    from .schema_codec import SchemaCodec, StructPlan

__all__ = ["Arena", "ArenaWriter", "Ref"]

FIRST_SEGMENT_WORDS = 1024

_PTR = struct.Struct("<iI")


class Arena:
    """Segments under construction, with libcapnp's placement rules."""

    def __init__(self) -> None:
        self.segments: list[bytearray] = [bytearray(FIRST_SEGMENT_WORDS * 8)]
        self.used: list[int] = [8]  # bytes used per segment; word 0 is the root pointer
        self.next_size = FIRST_SEGMENT_WORDS
        self.with_space = 0  # the segment the arena tries first

    # ------------------------------------------------------------------------- allocation

    def _try(self, seg: int, words: int) -> int | None:
        pos = self.used[seg]
        if pos + words * 8 > len(self.segments[seg]):
            return None
        self.used[seg] = pos + words * 8
        return pos

    def _arena(self, words: int) -> Ref:
        pos = self._try(self.with_space, words)
        if pos is not None:
            return self.with_space, pos
        size = max(words, self.next_size)
        self.next_size += size
        self.segments.append(bytearray(size * 8))
        self.used.append(0)
        self.with_space = len(self.segments) - 1
        pos = self._try(self.with_space, words)
        assert pos is not None
        return self.with_space, pos

    def place(self, ref: Ref, words: int) -> tuple[Ref, Ref]:
        """Allocate ``words`` for the object the pointer at ``ref`` will point to.

        Returns ``(pointer, object)``: where to write the object's struct/list pointer (``ref``
        itself, or a landing pad after a far pointer now written at ``ref``) and where the
        object starts.
        """
        seg = ref[0]
        pos = self._try(seg, words)
        if pos is not None:
            return ref, (seg, pos)
        pad_seg, pad = self._arena(words + 1)
        _PTR.pack_into(self.segments[seg], ref[1], 2 | (pad >> 3) << 3, pad_seg)
        return (pad_seg, pad), (pad_seg, pad + 8)

    def orphan(self, words: int) -> Ref:
        """Allocate an object that no pointer refers to yet."""
        return self._arena(words)

    # --------------------------------------------------------------------------- pointers

    def point(self, ptr: Ref, obj: Ref, kind: int, hi: int) -> None:
        """Write a struct (kind 0) or list (kind 1) pointer at ``ptr`` (same segment)."""
        assert ptr[0] == obj[0]
        _PTR.pack_into(self.segments[ptr[0]], ptr[1], (obj[1] - ptr[1] - 8) >> 1 | kind, hi)

    def adopt(self, ref: Ref, obj: Ref, kind: int, hi: int) -> None:
        """Point ``ref`` at an orphan, through a landing pad when it is in another segment."""
        if ref[0] == obj[0]:
            self.point(ref, obj, kind, hi)
            return
        pad = self._try(obj[0], 1)
        if pad is not None:
            self.point((obj[0], pad), obj, kind, hi)
            _PTR.pack_into(self.segments[ref[0]], ref[1], 2 | (pad >> 3) << 3, obj[0])
            return
        pad_seg, pad = self._arena(2)
        _PTR.pack_into(self.segments[pad_seg], pad, 2 | (obj[1] >> 3) << 3, obj[0])
        _PTR.pack_into(self.segments[pad_seg], pad + 8, kind, hi)
        _PTR.pack_into(self.segments[ref[0]], ref[1], 2 | 4 | (pad >> 3) << 3, pad_seg)

    # ------------------------------------------------------- objects (a copying.CopyTarget)

    def segment(self, seg: int) -> bytearray:
        return self.segments[seg]

    def set_capability(self, ref: Ref, index: int) -> None:
        _PTR.pack_into(self.segments[ref[0]], ref[1], 3, index)

    def init_struct(self, ref: Ref, data_words: int, ptr_count: int) -> Ref:
        """Place a struct for the pointer at ``ref``; return its data section."""
        if data_words + ptr_count == 0:
            _PTR.pack_into(self.segments[ref[0]], ref[1], -4, 0)
            return ref
        ptr, obj = self.place(ref, data_words + ptr_count)
        self.point(ptr, obj, 0, data_words | ptr_count << 16)
        return obj

    def init_list(self, ref: Ref, size_code: int, count: int) -> Ref:
        """Place a list of a non-composite element size (0..6); return its first element."""
        ptr, obj = self.place(ref, list_words(size_code, count))
        self.point(ptr, obj, 1, count << 3 | size_code)
        return obj

    def init_struct_list(self, ref: Ref, count: int, data_words: int, ptr_count: int) -> Ref:
        """Place an inline-composite list and its tag; return its first element."""
        words = count * (data_words + ptr_count)
        ptr, obj = self.place(ref, 1 + words)
        self.point(ptr, obj, 1, words << 3 | 7)
        _PTR.pack_into(self.segments[obj[0]], obj[1], count << 2, data_words | ptr_count << 16)
        return obj[0], obj[1] + 8

    # ----------------------------------------------------------------------------- output

    def segment_bytes(self) -> list[bytes]:
        return [bytes(s[:u]) for s, u in zip(self.segments, self.used, strict=True)]

    def to_bytes(self) -> bytes:
        return frame_segments(self.segment_bytes())


# ---------------------------------------------------------------------------- object writer

_SCALAR_FORMATS = {
    "int8": "<b", "uint8": "<B", "int16": "<h", "uint16": "<H", "int32": "<i",
    "uint32": "<I", "int64": "<q", "uint64": "<Q", "float32": "<f", "float64": "<d",
    "enum": "<H",
}
_LIST_CODES = {
    "void": 0, "bool": 1, "int8": 2, "uint8": 2, "int16": 3, "uint16": 3, "enum": 3,
    "int32": 4, "uint32": 4, "float32": 4, "int64": 5, "uint64": 5, "float64": 5,
}


class ArenaWriter:
    """Writes plain values (as :class:`~.schema_codec.SchemaCodec` takes them) into an
    :class:`Arena` the way libcapnp copies objects: a struct's data section, then its pointers
    in pointer-section order, each object completely (preorder) before the next.

    Slower than the generated single-segment encoders; it exists for byte-identical output.
    ``content`` is the codec for :class:`~cara.schema.model.PointerValue` contents (their
    types refer to another schema, e.g. the nodes inside a request).
    """

    def __init__(self, codec: SchemaCodec, arena: Arena,
                 content: SchemaCodec | None = None) -> None:
        self.codec = codec
        self.arena = arena
        self.content = content if content is not None else codec

    # ---------------------------------------------------------------------------- structs

    def write_struct(self, ref: Ref, plan: StructPlan, value: Mapping[Any, Any]) -> None:
        dw, pc = plan.data_words, plan.pointer_count
        seg, pos = self.arena.init_struct(ref, dw, pc)
        if dw + pc:
            self.fill_struct(seg, pos, pos + dw * 8, plan, value)

    def fill_struct(self, seg: int, dpos: int, ppos: int, plan: StructPlan,
                    value: Mapping[Any, Any]) -> None:
        """Write ``value`` into an allocated struct: data first, then each pointer."""
        pointers: dict[int, tuple[model.Type, Any]] = {}
        self._fill_data(seg, dpos, plan, value, pointers)
        for index in sorted(pointers):
            type_, item = pointers[index]
            self.write_pointer((seg, ppos + 8 * index), type_, item)

    def _fill_data(self, seg: int, dpos: int, plan: StructPlan, value: Mapping[Any, Any],
                   pointers: dict[int, tuple[model.Type, Any]]) -> None:
        buf = self.arena.segments[seg]
        active = None
        for fp in plan.fields:
            if fp.discriminant != model.NO_DISCRIMINANT and fp.key in value:
                active = fp
                break
        if active is not None and active.discriminant:
            struct.pack_into("<H", buf, dpos + plan.discriminant_offset, active.discriminant)
        for fp in plan.fields:
            if fp.discriminant != model.NO_DISCRIMINANT and fp is not active:
                continue
            if fp.key not in value:
                continue
            item = value[fp.key]
            kind = fp.kind
            if kind == "group":
                if item is not None:
                    self._fill_data(seg, dpos, self.codec.plan(fp.group_id), item, pointers)
            elif kind == "void":
                pass
            elif kind == "bool":
                if bool(item) != bool(fp.default):
                    buf[dpos + (fp.offset >> 3)] |= 1 << (fp.offset & 7)
            elif kind in _SCALAR_FORMATS:
                fmt = _SCALAR_FORMATS[kind]
                if kind in ("float32", "float64"):
                    if fp.default:
                        bits = "<I" if kind == "float32" else "<Q"
                        raw = struct.unpack(bits, struct.pack(fmt, item))[0]
                        raw ^= struct.unpack(bits, struct.pack(fmt, fp.default))[0]
                        struct.pack_into(bits, buf, dpos + fp.offset, raw)
                    else:
                        struct.pack_into(fmt, buf, dpos + fp.offset, item)
                else:
                    struct.pack_into(fmt, buf, dpos + fp.offset, item ^ (fp.default or 0))
            elif item is not None:
                assert fp.type is not None
                pointers[fp.pointer] = (fp.type, item)

    # --------------------------------------------------------------------------- pointers

    def write_pointer(self, ref: Ref, type_: model.Type, value: Any) -> None:
        """Write ``value`` of pointer type ``type_`` for the pointer at ``ref``."""
        if value is None:
            return
        arena = self.arena
        w = type_.which
        if w == "struct":
            assert type_.struct is not None
            self.write_struct(ref, self.codec.plan_for_type(type_), value)
        elif w in ("text", "data"):
            raw = value.encode() + b"\0" if w == "text" else bytes(value)
            self._write_bytes(ref, 2, len(raw), raw)
        elif w == "list":
            assert type_.list is not None
            self._write_list(ref, type_.list.elementType, value)
        elif w == "interface" or (w == "anyPointer" and isinstance(value, int)):
            arena.set_capability(ref, value)
        elif isinstance(value, AnyPointerReader):
            self.copy(ref, value.msg, value.seg, value.pos, value.nesting)
        elif isinstance(value, model.PointerValue):
            ArenaWriter(self.content, arena).write_pointer(ref, value.type, value.value)
        else:
            raise ValueTypeError("", f"cannot write {type(value).__name__} as {w}")

    def _write_list(self, ref: Ref, et: model.Type, items: list[Any]) -> None:
        arena = self.arena
        count = len(items)
        w = et.which
        if w == "struct":
            assert et.struct is not None
            plan = self.codec.plan_for_type(et)
            dw, pc = plan.data_words, plan.pointer_count
            seg, base = arena.init_struct_list(ref, count, dw, pc)
            for item in items:
                self.fill_struct(seg, base, base + dw * 8, plan, item)
                base += (dw + pc) * 8
            return
        code = _LIST_CODES.get(w)
        if code is None:  # a list of pointers
            seg, pos = arena.init_list(ref, 6, count)
            for i, item in enumerate(items):
                self.write_pointer((seg, pos + 8 * i), et, item)
            return
        if code == 0:
            raw = b""
        elif code == 1:
            raw = pack_bits(items)
        else:
            raw = struct.pack(f"<{count}{_SCALAR_FORMATS[w][1]}", *items)
        self._write_bytes(ref, code, count, raw)

    def _write_bytes(self, ref: Ref, size_code: int, count: int, raw: bytes) -> None:
        """A list of non-pointer elements (text and data too) whose content is ``raw``."""
        seg, pos = self.arena.init_list(ref, size_code, count)
        self.arena.segments[seg][pos:pos + len(raw)] = raw

    # ------------------------------------------------------------------------------ copying

    def copy(self, ref: Ref, msg: Message, seg: int, pos: int, nesting: int) -> None:
        """Deep-copy the object the pointer at ``pos`` in ``msg`` points to (preorder)."""
        copy_object(self.arena, ref, msg, seg, pos, nesting)
