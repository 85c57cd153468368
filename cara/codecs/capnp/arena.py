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

from .framing import frame_segments
from .reader import ELEMENT_BITS, AnyPointerReader, Message, list_at, resolve, struct_at

if TYPE_CHECKING:
    from .schema_codec import SchemaCodec, StructPlan

__all__ = ["Arena", "ArenaWriter", "Ref"]

FIRST_SEGMENT_WORDS = 1024

_PTR = struct.Struct("<iI")

#: ``(segment index, byte offset in that segment)``
Ref = tuple[int, int]


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
        if dw + pc == 0:
            _PTR.pack_into(self.arena.segments[ref[0]], ref[1], -4, 0)
            return
        ptr, obj = self.arena.place(ref, dw + pc)
        self.arena.point(ptr, obj, 0, dw | pc << 16)
        self.fill_struct(obj[0], obj[1], obj[1] + dw * 8, plan, value)

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
            ptr, obj = arena.place(ref, (len(raw) + 7) >> 3)
            arena.segments[obj[0]][obj[1]:obj[1] + len(raw)] = raw
            arena.point(ptr, obj, 1, len(raw) << 3 | 2)
        elif w == "list":
            assert type_.list is not None
            self._write_list(ref, type_.list.elementType, value)
        elif w == "interface" or (w == "anyPointer" and isinstance(value, int)):
            _PTR.pack_into(arena.segments[ref[0]], ref[1], 3, value)
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
            ptr, obj = arena.place(ref, 1 + count * (dw + pc))
            seg, pos = obj
            arena.point(ptr, obj, 1, count * (dw + pc) << 3 | 7)
            _PTR.pack_into(arena.segments[seg], pos, count << 2, dw | pc << 16)
            base = pos + 8
            for item in items:
                self.fill_struct(seg, base, base + dw * 8, plan, item)
                base += (dw + pc) * 8
            return
        code = _LIST_CODES.get(w)
        if code is None:  # a list of pointers
            ptr, obj = arena.place(ref, count)
            arena.point(ptr, obj, 1, count << 3 | 6)
            for i, item in enumerate(items):
                self.write_pointer((obj[0], obj[1] + 8 * i), et, item)
            return
        if code == 0:
            raw = b""
        elif code == 1:
            bits = sum(1 << i for i, b in enumerate(items) if b)
            raw = bits.to_bytes((count + 7) >> 3, "little")
        else:
            raw = struct.pack(f"<{count}{_SCALAR_FORMATS[w][1]}", *items)
        ptr, obj = arena.place(ref, (len(raw) + 7) >> 3)
        arena.segments[obj[0]][obj[1]:obj[1] + len(raw)] = raw
        arena.point(ptr, obj, 1, count << 3 | code)

    # ------------------------------------------------------------------------------ copying

    def copy(self, ref: Ref, msg: Message, seg: int, pos: int, nesting: int) -> None:
        """Deep-copy the object the pointer at ``pos`` in ``msg`` points to (preorder)."""
        if pos < 0:
            return
        arena = self.arena
        kind, _seg, _target, _lo, hi = resolve(msg, seg, pos)
        if kind < 0:
            return
        if kind == 3:
            _PTR.pack_into(arena.segments[ref[0]], ref[1], 3, hi)
            return
        buf = msg.buf
        if kind == 0:
            loc = struct_at(msg, seg, pos, nesting)
            assert loc is not None
            sseg, dpos, dbytes, ppos, nptrs, inner = loc
            dw = (dbytes + 7) >> 3
            if dw + nptrs == 0:
                _PTR.pack_into(arena.segments[ref[0]], ref[1], -4, 0)
                return
            ptr, obj = arena.place(ref, dw + nptrs)
            arena.point(ptr, obj, 0, dw | nptrs << 16)
            arena.segments[obj[0]][obj[1]:obj[1] + dbytes] = buf[dpos:dpos + dbytes]
            for i in range(nptrs):
                self.copy((obj[0], obj[1] + dw * 8 + 8 * i), msg, sseg, ppos + 8 * i, inner)
            return
        lloc = list_at(msg, seg, pos, nesting)
        assert lloc is not None
        lseg, lpos, count, step, dbytes, nptrs, size, inner = lloc
        if size == 7:
            words = count * step // 8
            ptr, obj = arena.place(ref, 1 + words)
            arena.point(ptr, obj, 1, words << 3 | 7)
            _PTR.pack_into(arena.segments[obj[0]], obj[1], count << 2,
                           dbytes // 8 | nptrs << 16)
            for i in range(count):
                src = lpos + i * step
                dst = obj[1] + 8 + i * step
                arena.segments[obj[0]][dst:dst + dbytes] = buf[src:src + dbytes]
                for j in range(nptrs):
                    self.copy((obj[0], dst + dbytes + 8 * j), msg, lseg,
                              src + dbytes + 8 * j, inner)
            return
        if size == 6:
            ptr, obj = arena.place(ref, count)
            arena.point(ptr, obj, 1, count << 3 | 6)
            for i in range(count):
                self.copy((obj[0], obj[1] + 8 * i), msg, lseg, lpos + 8 * i, inner)
            return
        nbytes = (count + 7) >> 3 if size == 1 else count * (ELEMENT_BITS[size] >> 3)
        ptr, obj = arena.place(ref, (nbytes + 7) >> 3)
        arena.segments[obj[0]][obj[1]:obj[1] + nbytes] = buf[lpos:lpos + nbytes]
        arena.point(ptr, obj, 1, count << 3 | size)
