"""Reading ``embed "file"`` struct values: a binary Cap'n Proto message turned into a dict.

``const x :SomeStruct = embed "message.bin";`` makes the compiler read a flat (unpacked) message
and use its root struct as the value. The schema layer cannot use the wire codecs (they sit in a
higher layer), so this is a small, self-contained reader: just enough of the encoding to walk
structs, lists, text and data, with limits on depth and total size because the file is input
like any other. The result uses the same Python form as struct literals (see
:class:`cara.schema.model.PointerValue`).
"""

from __future__ import annotations

import struct as _struct

from cara.schema import model

#: ``typing.TYPE_CHECKING`` without importing typing (a tenth of a cold ``cara compile``);
#: type checkers take any ``TYPE_CHECKING`` as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Protocol
else:  # the protocol classes are only ever read by type checkers
    Protocol = object

__all__ = ["read_struct_message"]

_MAX_DEPTH = 64
_MAX_WORDS = 8 * 1024 * 1024


class _Malformed(ValueError):
    """A pointer inside the message that cannot be followed."""


class NodeSource(Protocol):
    def struct_node(self, type_id: int) -> model.Node | None: ...


_SCALARS = {
    "bool": (1, None), "int8": (8, "<b"), "int16": (16, "<h"), "int32": (32, "<i"),
    "int64": (64, "<q"), "uint8": (8, "<B"), "uint16": (16, "<H"), "uint32": (32, "<I"),
    "uint64": (64, "<Q"), "float32": (32, "<f"), "float64": (64, "<d"), "enum": (16, "<H"),
}
_LIST_BITS = {0: 0, 1: 1, 2: 8, 3: 16, 4: 32, 5: 64}


def read_struct_message(data: bytes, type_: model.Type, source: NodeSource) -> dict[str, object]:
    """The root struct of the message ``data`` as a dict; ``ValueError`` if it is malformed."""
    return _Reader(data, source).root(type_)


class _Reader:
    def __init__(self, data: bytes, source: NodeSource) -> None:
        self.source = source
        if len(data) < 8:
            raise ValueError("message too short")
        count = _struct.unpack_from("<I", data, 0)[0] + 1
        if count > 512:
            raise ValueError("too many segments")
        header = 4 + 4 * count
        header += header % 8
        if len(data) < header:
            raise ValueError("truncated segment table")
        sizes = _struct.unpack_from(f"<{count}I", data, 4)
        self.segments: list[bytes] = []
        offset = header
        for size in sizes:
            end = offset + size * 8
            if end > len(data):
                raise ValueError("truncated segment")
            self.segments.append(data[offset:end])
            offset = end
        self.budget = _MAX_WORDS

    def _word(self, seg: int, index: int) -> int:
        segment = self.segments[seg]
        if index < 0 or (index + 1) * 8 > len(segment):
            raise _Malformed("pointer out of bounds")
        return int(_struct.unpack_from("<Q", segment, index * 8)[0])

    def _charge(self, words: int) -> None:
        self.budget -= max(words, 1)
        if self.budget < 0:
            raise ValueError("message is too large to embed")

    def root(self, type_: model.Type) -> dict[str, object]:
        value = self._pointer(0, 0, type_, 0)
        return value if isinstance(value, dict) else {}

    def _follow(self, seg: int, index: int) -> tuple[int, int, int] | None:
        """(segment, index of the pointer's target area start, the pointer word) or None."""
        word = self._word(seg, index)
        if word == 0:
            return None
        kind = word & 3
        if kind == 2:
            double = (word >> 2) & 1
            pad = (word >> 3) & 0x1FFFFFFF
            target_seg = word >> 32
            if target_seg >= len(self.segments):
                raise _Malformed("far pointer to a missing segment")
            if not double:
                landing = self._word(target_seg, pad)
                return self._resolve(target_seg, pad, landing)
            far = self._word(target_seg, pad)
            tag = self._word(target_seg, pad + 1)
            content_seg = far >> 32
            if content_seg >= len(self.segments) or far & 3 != 2:
                raise _Malformed("bad double-far pointer")
            start = (far >> 3) & 0x1FFFFFFF
            return content_seg, start, tag
        return self._resolve(seg, index, word)

    @staticmethod
    def _resolve(seg: int, index: int, word: int) -> tuple[int, int, int]:
        offset = (word >> 2) & 0x3FFFFFFF
        if offset & 0x20000000:
            offset -= 0x40000000
        return seg, index + 1 + offset, word

    def _pointer(self, seg: int, index: int, type_: model.Type, depth: int) -> object:
        """A pointer's target, or None. Like capnp's readers, a pointer that is out of bounds or
        of the wrong kind reads as absent rather than failing the whole value."""
        try:
            return self._pointer_or_raise(seg, index, type_, depth)
        except _Malformed:
            return None

    def _pointer_or_raise(self, seg: int, index: int, type_: model.Type, depth: int) -> object:
        if depth > _MAX_DEPTH:
            raise _Malformed("message nesting is too deep")
        target = self._follow(seg, index)
        if target is None:
            return None
        tseg, start, word = target
        which = type_.which
        if which == "struct":
            if word & 3 != 0:
                raise _Malformed("expected a struct pointer")
            data_words = (word >> 32) & 0xFFFF
            ptr_words = word >> 48
            assert type_.struct is not None
            return self._struct(tseg, start, data_words, ptr_words, type_.struct.typeId, depth)
        if word & 3 != 1:
            raise _Malformed("expected a list pointer")
        size = (word >> 32) & 7
        count = word >> 35
        if which in ("text", "data"):
            if size != 2:
                raise _Malformed("text/data must be a byte list")
            self._charge((count + 7) // 8)
            segment = self.segments[tseg]
            raw = segment[start * 8:start * 8 + count]
            if len(raw) != count:
                raise _Malformed("list out of bounds")
            if which == "text":
                return raw[:-1].decode("utf-8", "surrogateescape") if raw else ""
            return bytes(raw)
        if which != "list" or type_.list is None:
            return None
        return self._list(tseg, start, size, count, type_.list.elementType, depth)

    def _list(self, seg: int, start: int, size: int, count: int, element: model.Type,
              depth: int) -> list[object]:
        result: list[object] = []
        if size == 7:
            tag = self._word(seg, start)
            n = (tag >> 2) & 0x3FFFFFFF
            data_words = (tag >> 32) & 0xFFFF
            ptr_words = tag >> 48
            step = data_words + ptr_words
            self._charge(n * max(step, 1))
            if n * step > count:
                raise _Malformed("inline composite list overruns its words")
            for i in range(n):
                base = start + 1 + i * step
                if element.which == "struct" and element.struct is not None:
                    result.append(self._struct(seg, base, data_words, ptr_words,
                                               element.struct.typeId, depth))
            return result
        self._charge(count)
        which = element.which
        if size == 6:
            for i in range(count):
                result.append(self._pointer(seg, start + i, element, depth + 1))
            return result
        bits = _LIST_BITS[size]
        segment = self.segments[seg]
        for i in range(count):
            bit = i * bits
            result.append(_scalar(segment, start * 8, bit, which, None))
        return result

    def _struct(self, seg: int, start: int, data_words: int, ptr_words: int, type_id: int,
                depth: int) -> dict[str, object]:
        self._charge(data_words + ptr_words)
        node = self.source.struct_node(type_id)
        if node is None or node.struct is None:
            return {}
        segment = self.segments[seg]
        data = segment[start * 8:(start + data_words) * 8]
        return self._fields(node, seg, data, start + data_words, ptr_words, depth)

    def _fields(self, node: model.Node, seg: int, data: bytes, ptr_start: int, ptr_words: int,
                depth: int) -> dict[str, object]:
        assert node.struct is not None
        discriminant = None
        if node.struct.discriminantCount:
            discriminant = _scalar(data, 0, node.struct.discriminantOffset * 16, "uint16", None)
        out: dict[str, object] = {}
        for f in node.struct.fields:
            if f.discriminantValue != model.NO_DISCRIMINANT and f.discriminantValue != \
                    discriminant:
                continue
            if f.which == "group" and f.group is not None:
                group = self.source.struct_node(f.group.typeId)
                if group is not None:
                    out[f.name] = self._fields(group, seg, data, ptr_start, ptr_words, depth)
                continue
            slot = f.slot
            if slot is None:
                continue
            which = slot.type.which
            if which == "void":
                out[f.name] = None
            elif which in _SCALARS:
                bits = _SCALARS[which][0]
                out[f.name] = _scalar(data, 0, slot.offset * bits, which, slot.defaultValue)
            elif which in ("text", "data", "list", "struct"):
                if slot.offset < ptr_words:
                    value = self._pointer(seg, ptr_start + slot.offset, slot.type, depth + 1)
                    if value is not None:
                        out[f.name] = value
        return out


def _scalar(data: bytes, base: int, bit: int, which: str, default: model.Value | None) -> object:
    bits, fmt = _SCALARS.get(which, (0, None))
    if which == "void" or bits == 0:
        return None
    byte = base + bit // 8
    if which == "bool":
        raw = (data[byte] >> (bit % 8)) & 1 if byte < len(data) else 0
        if default is not None and default.bool:
            raw ^= 1
        return bool(raw)
    width = bits // 8
    chunk = data[byte:byte + width]
    if len(chunk) < width:
        chunk = b"\0" * width
    assert fmt is not None
    if default is not None:
        default_bytes = _default_bytes(default, which, fmt)
        chunk = bytes(a ^ b for a, b in zip(chunk, default_bytes, strict=False))
    return _struct.unpack(fmt, chunk)[0]


def _default_bytes(default: model.Value, which: str, fmt: str) -> bytes:
    value = getattr(default, which if which != "enum" else "enum", 0) or 0
    try:
        return _struct.pack(fmt, value)
    except (_struct.error, OverflowError):
        return b"\0" * _struct.calcsize(fmt)
